//! A push receiver delivery: the signature header (first line) and the body (the rest). Parsing
//! never panics, and only the signature made with the secret over that body is accepted.

#![no_main]

use driftguard::receiver::{HookKind, sign, verify};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzzing-secret";

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (header, body) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let Ok(value) = HeaderValue::from_bytes(header) else {
        return;
    };
    let expected = format!("sha256={}", sign(SECRET, body));
    for (kind, name) in [
        (HookKind::GitHub, "x-hub-signature-256"),
        (HookKind::Generic, "x-signature-256"),
    ] {
        let mut headers = HeaderMap::new();
        headers.insert(name, value.clone());
        let accepted = verify(kind, &headers, body, SECRET).is_ok();
        assert_eq!(accepted, header.eq_ignore_ascii_case(expected.as_bytes()), "{kind:?}");
    }
    let mut gitlab = HeaderMap::new();
    gitlab.insert("x-gitlab-token", value);
    assert_eq!(
        verify(HookKind::GitLab, &gitlab, body, SECRET).is_ok(),
        header == SECRET
    );
});
