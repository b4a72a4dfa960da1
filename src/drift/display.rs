//! How field values are shown to people (messages, warnings, diffs): compact JSON, clipped,
//! sensitive values hidden.

use serde_json::Value;

/// Longest value shown inline.
const MAX_VALUE: usize = 60;
/// Shown instead of a sensitive value.
pub const HIDDEN: &str = "(hidden)";

/// Render a field value compactly for a message, long values shortened in the middle.
pub fn show_value(value: Option<&Value>, sensitive: bool) -> String {
    shorten_middle(&show_full_value(value, sensitive), MAX_VALUE)
}

/// Render a field value compactly, whole (sensitive values hidden).
pub fn show_full_value(value: Option<&Value>, sensitive: bool) -> String {
    match value {
        None => "(absent)".to_owned(),
        Some(_) if sensitive => HIDDEN.to_owned(),
        Some(v) => v.to_string(),
    }
}

/// Shorten `text` to at most `max` characters by replacing its middle with `…`, keeping both
/// ends (an image's registry and its tag).
pub fn shorten_middle(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_owned();
    }
    if max < 3 {
        return text.chars().take(max).collect();
    }
    let keep = max - 1;
    let (head, tail) = (keep.div_ceil(2), keep / 2);
    let mut out: String = text.chars().take(head).collect();
    out.push('…');
    out.extend(text.chars().skip(count - tail));
    out
}

/// Shortest a part is shortened to by [`fit`].
const MIN_PART: usize = 9;

/// `render(parts)` within `max` characters, its sentence kept whole: the longest parts are
/// shortened in the middle to a common length (never below a few characters), the first
/// `keep` parts (a field's path) only when shortening the others is not enough; only then is
/// the end cut. `render` must include every part once, verbatim.
pub fn fit(parts: &[String], keep: usize, max: usize, render: impl Fn(&[String]) -> String) -> String {
    let full = render(parts);
    if full.chars().count() <= max {
        return full;
    }
    let blanks = vec![String::new(); parts.len()];
    let budget = max.saturating_sub(render(&blanks).chars().count());
    let lengths: Vec<usize> = parts.iter().map(|p| p.chars().count()).collect();
    // The largest common length the shortened parts can have, if any fits.
    let cap_for = |kept: usize| {
        let fixed: usize = lengths.iter().take(kept).sum();
        let longest = lengths.iter().skip(kept).copied().max().unwrap_or(0);
        (MIN_PART..=longest)
            .rev()
            .find(|cap| fixed + lengths.iter().skip(kept).map(|n| (*n).min(*cap)).sum::<usize>() <= budget)
    };
    let (kept, cap) = match cap_for(keep) {
        Some(cap) => (keep, cap),
        None => (0, cap_for(0).unwrap_or(MIN_PART)),
    };
    let shortened: Vec<String> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| if i < kept { p.clone() } else { shorten_middle(p, cap) })
        .collect();
    clip(&render(&shortened), max)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn middle_is_cut_ends_kept() {
        assert_eq!(shorten_middle("abcdefghij", 10), "abcdefghij");
        assert_eq!(shorten_middle("abcdefghij", 7), "abc…hij");
        assert_eq!(shorten_middle("abcdefghij", 6), "abc…ij");
        assert_eq!(shorten_middle("abcdefghij", 2), "ab");
    }

    #[test]
    fn fit_shortens_the_longest_parts_alike() {
        let render = |p: &[String]| format!("field {} git {} asked {}", p[0], p[1], p[2]);
        let parts = ["spec.x".to_owned(), "a".repeat(50), "b".repeat(80)];
        let text = fit(&parts, 0, 60, render);
        assert_eq!(text.chars().count(), 60, "{text}");
        // 18 fixed, spec.x 6: 36 left, 18 each.
        let (a, b) = (|n| "a".repeat(n), |n| "b".repeat(n));
        assert_eq!(
            text,
            format!("field spec.x git {}…{} asked {}…{}", a(9), a(8), b(9), b(8))
        );
        let short = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        assert_eq!(fit(&short, 1, 60, render), "field a git b asked c");
        // A kept part stays whole while the others can give way.
        let path = [
            "spec.template.spec.containers".to_owned(),
            "a".repeat(50),
            "b".repeat(80),
        ];
        let text = fit(&path, 1, 70, render);
        assert_eq!(text.chars().count(), 69, "{text}");
        assert!(
            text.starts_with("field spec.template.spec.containers git aaaaa…aaaaa asked "),
            "{text}"
        );
        // When they cannot, it is shortened too.
        assert_eq!(
            fit(&path, 1, 45, render),
            "field spec…ners git aaaa…aaaa asked bbbb…bbbb"
        );
        // Not even the shortest parts fit: the end is cut.
        assert!(fit(&parts, 1, 30, render).ends_with("..."));
    }
}
