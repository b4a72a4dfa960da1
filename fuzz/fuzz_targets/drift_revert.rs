//! The drift rule's promise (DESIGN.md section 3; `drift::revert_patch`): for any desired
//! object D and request object N, applying the revert patch to N leaves no drift from D, and
//! nothing panics. The input is two JSON documents separated by a NUL byte; D is normalized
//! as the desired state is.

#![no_main]

use driftguard::drift::{detect, normalize_desired, revert_patch};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let (Ok(mut desired), Ok(new)) = (
        serde_json::from_slice::<Value>(&data[..split]),
        serde_json::from_slice::<Value>(&data[split + 1..]),
    ) else {
        return;
    };
    if !desired.is_object() || !new.is_object() {
        return;
    }
    normalize_desired(&mut desired);
    let drifts = detect(&desired, None, &new, &[]);
    let patch = revert_patch(&new, &desired, &drifts);
    let mut reverted = new.clone();
    json_patch::patch(&mut reverted, &patch).expect("the revert patch applies to the object it was made for");
    let left = detect(&desired, None, &reverted, &[]);
    assert!(
        left.is_empty(),
        "drift left after the revert: {left:?}\npatch: {patch:?}"
    );
});
