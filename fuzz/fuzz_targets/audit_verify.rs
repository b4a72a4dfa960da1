//! Any bytes as an audit log file: `driftguard audit verify` reports intact, broken or
//! unreadable, and never panics.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use driftguard::audit::verify::verify_files;
use libfuzzer_sys::fuzz_target;

fn file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| std::env::temp_dir().join(format!("driftguard-fuzz-audit-{}.log", std::process::id())))
}

fuzz_target!(|data: &[u8]| {
    if std::fs::write(file(), data).is_err() {
        return;
    }
    let _ = verify_files(std::slice::from_ref(file()), None);
});
