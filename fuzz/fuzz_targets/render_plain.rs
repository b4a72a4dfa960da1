//! Any bytes as a file of a plain-manifest repository: rendering either yields manifests or a
//! RenderError that names the file, and never panics.

#![no_main]

use driftguard::render::render_plain;
use driftguard::source::SourceFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let file = SourceFile {
        path: "apps/fuzz.yaml".to_owned(),
        content: data.to_vec(),
    };
    if let Err(error) = render_plain(&[file]) {
        assert!(error.to_string().contains("apps/fuzz.yaml"), "{error}");
    }
});
