//! How field values are shown to people (messages, warnings, diffs): compact JSON, clipped,
//! sensitive values hidden.

use serde_json::Value;

/// Longest value shown inline.
const MAX_VALUE: usize = 60;
/// Shown instead of a sensitive value.
pub const HIDDEN: &str = "(hidden)";

/// Render a field value compactly for a message.
pub fn show_value(value: Option<&Value>, sensitive: bool) -> String {
    match value {
        None => "(absent)".to_owned(),
        Some(_) if sensitive => HIDDEN.to_owned(),
        Some(v) => clip(&v.to_string(), MAX_VALUE),
    }
}

/// Shorten `text` to at most `max` characters, marking the cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(3)).collect();
    out.push_str("...");
    out
}
