//! Any text as driftguard's config file: parsing yields a ConfigFile or an error naming the
//! file, and validation (standalone and with `--cluster`) yields settings or an error, never a
//! panic, and the same answer twice.

#![no_main]

use std::path::Path;

use driftguard::config::{ConfigFile, Overrides};
use libfuzzer_sys::fuzz_target;

const ORIGIN: &str = "fuzz/config.yaml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = match ConfigFile::parse(text, ORIGIN) {
        Ok(file) => file,
        Err(error) => {
            assert!(error.to_string().contains(ORIGIN), "{error}");
            return;
        }
    };
    let base = Path::new("/nonexistent/driftguard-fuzz");
    for cluster in [false, true] {
        let overrides = Overrides {
            cluster,
            ..Overrides::default()
        };
        let first = file
            .clone()
            .validate(base, &overrides)
            .map(|_| ())
            .map_err(|e| e.to_string());
        let again = file
            .clone()
            .validate(base, &overrides)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(first, again, "validation is not deterministic");
        if let Err(message) = first {
            assert!(!message.trim().is_empty(), "an empty validation error");
        }
    }
});
