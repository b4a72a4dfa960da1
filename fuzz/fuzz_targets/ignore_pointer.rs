//! A Guard's ignore rule pointer: parsing any text never panics, a parsed pointer keeps its
//! text, and detecting drift with it on a real object never panics.

#![no_main]

use driftguard::drift::{IgnorePath, detect};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pointer) = IgnorePath::parse(text) else {
        return;
    };
    assert_eq!(pointer.as_str(), text);
    let desired = json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [
        {"name": "web", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]}]}}}});
    let new = json!({"spec": {"replicas": 5, "template": {"spec": {"containers": [
        {"name": "web", "image": "nginx:2", "env": [{"name": "A", "value": "2"}]}]}}}});
    let all = detect(&desired, None, &new, &[]);
    let ignored = detect(&desired, None, &new, &[pointer]);
    assert!(ignored.len() <= all.len(), "an ignore rule added drift");
});
