//! A GitSource `ref.semver` range (first line) against tags (the other lines): range checking
//! and tag selection never panic, and a selected tag is always one of the tags given.

#![no_main]

use driftguard::source::semver::{highest_match, validate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.lines();
    let range = lines.next().unwrap_or_default();
    let tags: Vec<&str> = lines.collect();
    let valid = validate(range).is_ok();
    match highest_match(range, tags.iter().copied()) {
        Ok(Some(tag)) => {
            assert!(
                valid,
                "a tag was selected with a range that does not validate: {range:?}"
            );
            assert!(tags.contains(&tag.as_str()), "{tag:?} is not one of {tags:?}");
        }
        Ok(None) => assert!(valid, "a range that does not validate was accepted: {range:?}"),
        Err(_) => assert!(!valid, "a valid range failed to select: {range:?}"),
    }
});
