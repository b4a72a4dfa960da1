//! Semver ranges over tag names, as GitSource `ref.semver` takes them (PURE).
//!
//! The syntax is the one Flux users know (Masterminds/npm style):
//!
//! - comparators `=`, `!=`, `>`, `>=`, `<`, `<=`, and none (exact), e.g. `>=1.2.0`;
//!   a space after the operator is allowed (`>= 1.2.0`);
//! - AND: comparators separated by spaces or commas (`>=1.2.0 <2.0.0`, `>=1.2, <2`);
//! - OR: `||` between AND groups (`^1 || ^3`);
//! - tilde `~1.2.3` (`>=1.2.3 <1.3.0`), `~1.2`, `~1` (`>=1.0.0 <2.0.0`); `~>` is the same;
//! - caret `^1.2.3` (`>=1.2.3 <2.0.0`), `^0.2.3` (`<0.3.0`), `^0.0.3` (`<0.0.4`), `^1`;
//! - wildcards `*`, `1.x`, `1.*`, `1.2.X`, and partial versions (`1.2` means `1.2.x`);
//! - hyphen ranges `1.2 - 1.4.5` (`>=1.2.0 <=1.4.5`), `1.2 - 1.4` (`>=1.2.0 <1.5.0`).
//!
//! A leading `v` is accepted on versions in ranges and on tags. Tags must be complete semantic
//! versions (`v1.2.3`, `1.2.3-rc.1+build`); other tags are ignored. The highest matching
//! version wins (build metadata does not count for precedence). A pre-release version only
//! matches an AND group that itself names a pre-release (`>=2.1.0-rc.0`), so `^2` never picks
//! `v2.1.0-rc.1` by accident.

use std::cmp::Ordering;
use std::fmt;

use ::semver::{Prerelease, Version};

/// A range that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid semver range {range:?}: {reason}")]
pub struct SemverError {
    /// The range as given.
    pub range: String,
    /// What is wrong, naming the offending part.
    pub reason: String,
}

/// The highest tag whose version satisfies `range`, by tag name; `None` when no tag matches.
///
/// Tags that are not semantic versions (with an optional leading `v`) are skipped. When two
/// tags name the same version (`v1.0.0` and `1.0.0`), the first in byte order wins so the
/// choice is stable.
pub fn highest_match<'a>(range: &str, tags: impl Iterator<Item = &'a str>) -> Result<Option<String>, SemverError> {
    let range = Range::parse(range)?;
    let mut best: Option<(Version, &str)> = None;
    for tag in tags {
        let Some(version) = parse_tag(tag) else {
            continue;
        };
        if !range.matches(&version) {
            continue;
        }
        let better = match &best {
            None => true,
            Some((current, current_tag)) => match version.cmp_precedence(current) {
                Ordering::Greater => true,
                Ordering::Less => false,
                Ordering::Equal => tag < *current_tag,
            },
        };
        if better {
            best = Some((version, tag));
        }
    }
    Ok(best.map(|(_, tag)| tag.to_owned()))
}

/// Checks that `range` parses, without matching anything (for validating a spec early).
pub fn validate(range: &str) -> Result<(), SemverError> {
    Range::parse(range).map(|_| ())
}

/// The version a tag names: `v1.2.3`, `V1.2.3` or `1.2.3`, with optional pre-release and build.
pub fn parse_tag(tag: &str) -> Option<Version> {
    let text = tag.strip_prefix(['v', 'V']).unwrap_or(tag);
    Version::parse(text).ok()
}

/// A parsed range: OR of AND groups.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Range {
    groups: Vec<Group>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    comparators: Vec<Cmp>,
    /// Whether the group itself names a pre-release (then pre-release versions may match).
    names_prerelease: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Cmp {
    Any,
    Never,
    Eq(Version),
    NotEq(Version),
    Gt(Version),
    Ge(Version),
    Lt(Version),
    Le(Version),
    /// Not in `[low, high)`: `!=1.2` excludes every `1.2.x`.
    NotIn(Version, Version),
}

impl Cmp {
    fn matches(&self, v: &Version) -> bool {
        let cmp = |other: &Version| v.cmp_precedence(other);
        match self {
            Cmp::Any => true,
            Cmp::Never => false,
            Cmp::Eq(o) => cmp(o) == Ordering::Equal,
            Cmp::NotEq(o) => cmp(o) != Ordering::Equal,
            Cmp::Gt(o) => cmp(o) == Ordering::Greater,
            Cmp::Ge(o) => cmp(o) != Ordering::Less,
            Cmp::Lt(o) => cmp(o) == Ordering::Less,
            Cmp::Le(o) => cmp(o) != Ordering::Greater,
            Cmp::NotIn(low, high) => cmp(low) == Ordering::Less || cmp(high) != Ordering::Less,
        }
    }
}

impl Range {
    fn parse(text: &str) -> Result<Range, SemverError> {
        let error = |reason: String| SemverError {
            range: text.to_owned(),
            reason,
        };
        if text.trim().is_empty() {
            return Err(error("the range is empty; use \"*\" for any version".to_owned()));
        }
        let mut groups = Vec::new();
        for part in text.split("||") {
            if part.trim().is_empty() {
                return Err(error("an empty alternative around \"||\"".to_owned()));
            }
            groups.push(parse_group(part).map_err(error)?);
        }
        Ok(Range { groups })
    }

    fn matches(&self, version: &Version) -> bool {
        let pre = !version.pre.is_empty();
        self.groups
            .iter()
            .any(|g| (!pre || g.names_prerelease) && g.comparators.iter().all(|c| c.matches(version)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Exact,
    Eq,
    NotEq,
    Gt,
    Ge,
    Lt,
    Le,
    Tilde,
    Caret,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Exact => "",
            Op::Eq => "=",
            Op::NotEq => "!=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Tilde => "~",
            Op::Caret => "^",
        })
    }
}

/// Splits a leading operator off a token.
fn split_op(token: &str) -> (Op, &str) {
    // Longest operators first.
    for (prefix, op) in [
        (">=", Op::Ge),
        ("=>", Op::Ge),
        ("<=", Op::Le),
        ("=<", Op::Le),
        ("!=", Op::NotEq),
        ("~>", Op::Tilde),
        (">", Op::Gt),
        ("<", Op::Lt),
        ("=", Op::Eq),
        ("~", Op::Tilde),
        ("^", Op::Caret),
    ] {
        if let Some(rest) = token.strip_prefix(prefix) {
            return (op, rest);
        }
    }
    (Op::Exact, token)
}

fn parse_group(text: &str) -> Result<Group, String> {
    let tokens: Vec<&str> = text.split([' ', '\t', ',']).filter(|t| !t.is_empty()).collect();
    // Glue a lone operator to the version after it: `>= 1.2.0`.
    let mut glued: Vec<String> = Vec::new();
    let mut pending_op: Option<&str> = None;
    for token in tokens {
        if let Some(op) = pending_op.take() {
            glued.push(format!("{op}{token}"));
            continue;
        }
        let (op, rest) = split_op(token);
        if rest.is_empty() && op != Op::Exact {
            pending_op = Some(token);
        } else {
            glued.push(token.to_owned());
        }
    }
    if let Some(op) = pending_op {
        return Err(format!("operator {op:?} is not followed by a version"));
    }

    let mut comparators = Vec::new();
    let mut names_prerelease = false;
    let mut i = 0;
    while let Some(token) = glued.get(i) {
        if token == "-" {
            return Err("a hyphen range needs a version on both sides (\"1.2 - 1.4\")".to_owned());
        }
        if glued.get(i + 1).is_some_and(|t| t == "-") {
            let Some(upper) = glued.get(i + 2) else {
                return Err(format!("the hyphen range starting at {token:?} has no upper version"));
            };
            let low = parse_partial(token, "a hyphen range")?;
            let high = parse_partial(upper, "a hyphen range")?;
            names_prerelease |= !low.pre.is_empty() || !high.pre.is_empty();
            comparators.push(if low.major.is_none() {
                Cmp::Any
            } else {
                Cmp::Ge(low.lower())
            });
            comparators.push(match high.upper_exclusive() {
                Bound::Unbounded => Cmp::Any,
                Bound::Below(v) => Cmp::Lt(v),
                Bound::Exact => Cmp::Le(high.lower()),
            });
            i += 3;
            continue;
        }
        let (op, version) = split_op(token);
        if version.starts_with(['<', '>', '=', '!', '~', '^']) {
            return Err(format!("{token:?} has more than one operator"));
        }
        let partial = parse_partial(version, "a comparator")?;
        names_prerelease |= !partial.pre.is_empty();
        comparators.extend(desugar(op, &partial));
        i += 1;
    }
    if comparators.is_empty() {
        return Err("no comparator".to_owned());
    }
    Ok(Group {
        comparators,
        names_prerelease,
    })
}

/// A version in a range, possibly partial (`1`, `1.2`, `1.x`, `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Partial {
    major: Option<u64>,
    minor: Option<u64>,
    patch: Option<u64>,
    pre: Prerelease,
}

enum Bound {
    Unbounded,
    Below(Version),
    /// The version is complete: the bound is the version itself.
    Exact,
}

impl Partial {
    /// The lowest version the partial covers (missing parts are 0).
    fn lower(&self) -> Version {
        let mut v = Version::new(
            self.major.unwrap_or(0),
            self.minor.unwrap_or(0),
            self.patch.unwrap_or(0),
        );
        v.pre = self.pre.clone();
        v
    }

    fn is_complete(&self) -> bool {
        self.patch.is_some()
    }

    /// The first version above everything the partial covers, as `x.y.z-0` so that
    /// pre-releases of the next version stay outside.
    fn upper_exclusive(&self) -> Bound {
        match (self.major, self.minor, self.patch) {
            (None, _, _) => Bound::Unbounded,
            (Some(major), None, _) => Bound::Below(floor(major.saturating_add(1), 0, 0)),
            (Some(major), Some(minor), None) => Bound::Below(floor(major, minor.saturating_add(1), 0)),
            (Some(_), Some(_), Some(_)) => Bound::Exact,
        }
    }
}

/// `major.minor.patch-0`: the lowest version (pre-release) of that triple.
fn floor(major: u64, minor: u64, patch: u64) -> Version {
    let mut v = Version::new(major, minor, patch);
    v.pre = Prerelease::new("0").unwrap_or(Prerelease::EMPTY);
    v
}

fn parse_partial(text: &str, context: &str) -> Result<Partial, String> {
    let original = text;
    let text = text.strip_prefix(['v', 'V']).unwrap_or(text);
    let (core, pre) = match text.find(['-', '+']) {
        Some(at) => {
            let (core, rest) = text.split_at(at);
            let pre_text = rest
                .strip_prefix('-')
                .map(|r| r.split_once('+').map_or(r, |(p, _)| p))
                .unwrap_or("");
            if rest.starts_with('-') && pre_text.is_empty() {
                return Err(format!("{original:?} in {context}: the pre-release after '-' is empty"));
            }
            let pre = Prerelease::new(pre_text).map_err(|e| format!("{original:?} in {context}: {e}"))?;
            (core, pre)
        }
        None => (text, Prerelease::EMPTY),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty() || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "{original:?} in {context} is not a version (MAJOR[.MINOR[.PATCH]], with x or * as wildcards)"
        ));
    }
    let mut numbers = [None, None, None];
    let mut wildcard = false;
    for (slot, part) in numbers.iter_mut().zip(&parts) {
        if matches!(*part, "x" | "X" | "*") {
            wildcard = true;
            continue;
        }
        if wildcard {
            // `1.x.3` means `1.x`.
            continue;
        }
        if !part.bytes().all(|b| b.is_ascii_digit()) || (part.len() > 1 && part.starts_with('0')) {
            return Err(format!("{original:?} in {context}: {part:?} is not a version number"));
        }
        *slot = Some(
            part.parse::<u64>()
                .map_err(|_| format!("{original:?} in {context}: {part:?} is too large"))?,
        );
    }
    let [major, minor, patch] = numbers;
    let partial = Partial {
        major,
        minor,
        patch,
        pre,
    };
    if !partial.pre.is_empty() && !partial.is_complete() {
        return Err(format!(
            "{original:?} in {context}: a pre-release needs a complete version (1.2.3-rc.1)"
        ));
    }
    Ok(partial)
}

fn desugar(op: Op, p: &Partial) -> Vec<Cmp> {
    let Some(major) = p.major else {
        // `*`, `x`, `>=*`: anything; `<*`, `>*`, `!=*`: nothing.
        return vec![match op {
            Op::Gt | Op::Lt | Op::NotEq => Cmp::Never,
            _ => Cmp::Any,
        }];
    };
    let lower = p.lower();
    let upper = p.upper_exclusive();
    match op {
        Op::Exact | Op::Eq => match upper {
            Bound::Exact => vec![Cmp::Eq(lower)],
            Bound::Below(high) => vec![Cmp::Ge(lower), Cmp::Lt(high)],
            Bound::Unbounded => vec![Cmp::Any],
        },
        Op::NotEq => match upper {
            Bound::Exact => vec![Cmp::NotEq(lower)],
            Bound::Below(high) => vec![Cmp::NotIn(lower, high)],
            Bound::Unbounded => vec![Cmp::Never],
        },
        Op::Gt => match upper {
            Bound::Exact => vec![Cmp::Gt(lower)],
            Bound::Below(high) => vec![Cmp::Ge(high)],
            Bound::Unbounded => vec![Cmp::Never],
        },
        Op::Ge => vec![Cmp::Ge(lower)],
        Op::Lt => {
            if p.is_complete() {
                vec![Cmp::Lt(lower)]
            } else {
                vec![Cmp::Lt(floor(major, p.minor.unwrap_or(0), 0))]
            }
        }
        Op::Le => match upper {
            Bound::Exact => vec![Cmp::Le(lower)],
            Bound::Below(high) => vec![Cmp::Lt(high)],
            Bound::Unbounded => vec![Cmp::Any],
        },
        Op::Tilde => {
            let high = match p.minor {
                None => floor(major.saturating_add(1), 0, 0),
                Some(minor) => floor(major, minor.saturating_add(1), 0),
            };
            vec![Cmp::Ge(lower), Cmp::Lt(high)]
        }
        Op::Caret => {
            let high = match (major, p.minor, p.patch) {
                (0, Some(0), Some(patch)) => floor(0, 0, patch.saturating_add(1)),
                (0, Some(minor), _) => floor(0, minor.saturating_add(1), 0),
                (major, _, _) => floor(major.saturating_add(1), 0, 0),
            };
            vec![Cmp::Ge(lower), Cmp::Lt(high)]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAGS: &[&str] = &[
        "v0.0.3",
        "v0.2.5",
        "v0.3.0",
        "v1.0.0",
        "v1.1.0",
        "v1.2.0",
        "v1.3.0",
        "v1.4.0",
        "v1.4.2",
        "v1.5.0",
        "v1.6.0",
        "v1.7.0",
        "v1.8.0",
        "v1.9.0",
        "v2.0.0",
        "v2.0.1-beta.1",
        "v2.1.0-rc.1",
        "3.0.0",
        "latest",
        "v4",
        "release-5.0.0",
    ];

    fn pick(range: &str) -> Option<String> {
        highest_match(range, TAGS.iter().copied()).unwrap()
    }

    #[test]
    fn ranges_pick_the_highest_matching_tag() {
        for (range, want) in [
            ("*", Some("3.0.0")),
            ("x", Some("3.0.0")),
            ("^1", Some("v1.9.0")),
            ("^1.2.0", Some("v1.9.0")),
            ("^0.2.3", Some("v0.2.5")),
            ("^0.0.3", Some("v0.0.3")),
            ("^0.0", Some("v0.0.3")),
            ("^0", Some("v0.3.0")),
            (">=1.2.0 <1.5.0", Some("v1.4.2")),
            (">=1.2.0, <1.5.0", Some("v1.4.2")),
            (">= 1.2.0 < 1.5.0", Some("v1.4.2")),
            ("~2.0", Some("v2.0.0")),
            ("~1.4", Some("v1.4.2")),
            ("~1.4.1", Some("v1.4.2")),
            ("~1", Some("v1.9.0")),
            ("~>1.4.0", Some("v1.4.2")),
            ("1.x", Some("v1.9.0")),
            ("1.*", Some("v1.9.0")),
            ("1.4.x", Some("v1.4.2")),
            ("1.4", Some("v1.4.2")),
            ("1", Some("v1.9.0")),
            ("=1.4.0", Some("v1.4.0")),
            ("1.4.0", Some("v1.4.0")),
            ("v1.4.0", Some("v1.4.0")),
            ("=v1.3.0", Some("v1.3.0")),
            ("<1.4.2", Some("v1.4.0")),
            ("<1.4", Some("v1.3.0")),
            ("<=1.4", Some("v1.4.2")),
            ("<=1.4.0", Some("v1.4.0")),
            (">1.4", Some("3.0.0")),
            (">1.4 <2", Some("v1.9.0")),
            (">1.9.0 <3", Some("v2.0.0")),
            ("^1 !=1.9.0", Some("v1.8.0")),
            ("^1 != 1.9.0", Some("v1.8.0")),
            ("^1 !=1.9", Some("v1.8.0")),
            ("^1 || ^3", Some("3.0.0")),
            ("^0 || ^1", Some("v1.9.0")),
            (">=5.0.0 || <0.1", Some("v0.0.3")),
            ("1.2 - 1.4", Some("v1.4.2")),
            ("1.2 - 1.4.0", Some("v1.4.0")),
            ("1.0.0 - 1.2.0", Some("v1.2.0")),
            ("^5", None),
            (">3.0.0", None),
            ("<0.0.3", None),
            ("!=*", None),
        ] {
            assert_eq!(pick(range).as_deref(), want, "range {range:?}");
        }
    }

    #[test]
    fn prereleases_only_when_the_range_names_one() {
        for (range, want) in [
            ("^2", Some("v2.0.0")),
            ("~2.1", None),
            (">=2.0.0", Some("3.0.0")),
            (">=2.1.0-rc.0 <3.0.0", Some("v2.1.0-rc.1")),
            (">=2.1.0-0 <2.2.0", Some("v2.1.0-rc.1")),
            ("2.1.0-rc.1", Some("v2.1.0-rc.1")),
            ("~2.0.1-beta.0", Some("v2.0.1-beta.1")),
            ("^2.0.1-beta.0 <2.1.0-0", Some("v2.0.1-beta.1")),
            // Any pre-release in range once the group names one (Masterminds' `>=1.0.0-0`).
            (">=1.0.0-0", Some("3.0.0")),
            (">=2.0.0-0 <3.0.0", Some("v2.1.0-rc.1")),
            // The pre-release is named in the other alternative only.
            ("^2 <2.1.0 || =1.0.0-alpha", Some("v2.0.0")),
            // `<2.1` stops below every 2.1.0 pre-release.
            (">=2.0.1-0 <2.1", Some("v2.0.1-beta.1")),
        ] {
            assert_eq!(pick(range).as_deref(), want, "range {range:?}");
        }
    }

    #[test]
    fn release_beats_its_prerelease_and_build_metadata_does_not_count() {
        let tags = ["v1.0.0-rc.1", "v1.0.0", "v1.0.0+build.5", "1.0.0"];
        assert_eq!(
            highest_match(">=1.0.0-0", tags.iter().copied()).unwrap().as_deref(),
            Some("1.0.0"),
            "equal precedence: the first name in byte order wins"
        );
        assert_eq!(
            highest_match("^1", ["v1.0.0+b", "v0.9.0"].iter().copied())
                .unwrap()
                .as_deref(),
            Some("v1.0.0+b")
        );
    }

    #[test]
    fn non_semver_tags_are_ignored() {
        let tags = ["latest", "v1", "1.2", "v01.2.3", "release-2.0.0", "v1.0.0", "V1.1.0"];
        assert_eq!(
            highest_match("*", tags.iter().copied()).unwrap().as_deref(),
            Some("V1.1.0")
        );
        assert_eq!(highest_match("*", ["latest"].iter().copied()).unwrap(), None);
    }

    #[test]
    fn invalid_ranges_name_the_problem() {
        for (range, needle) in [
            ("", "empty"),
            ("   ", "empty"),
            ("^1 ||", "empty alternative"),
            ("|| ^1", "empty alternative"),
            (">=", "not followed by a version"),
            ("^1 <", "not followed by a version"),
            ("1.2.3.4", "not a version"),
            ("abc", "not a version"),
            ("1.a", "not a version number"),
            ("01.2.3", "not a version number"),
            ("1.2-rc.1", "complete version"),
            (">=<1.0.0", "more than one operator"),
            ("1.0 -", "no upper version"),
            ("- 1.0", "both sides"),
            ("1.2.3-", "1.2.3-"),
        ] {
            let err = highest_match(range, TAGS.iter().copied()).unwrap_err();
            assert_eq!(err.range, range);
            assert!(err.to_string().contains(needle), "{range:?}: {err}");
        }
    }

    #[test]
    fn validate_and_parse_tag() {
        assert!(validate("^1.2 || ~3").is_ok());
        assert!(validate("nope").is_err());
        assert_eq!(parse_tag("v1.2.3"), Some(Version::new(1, 2, 3)));
        assert_eq!(parse_tag("1.2.3"), Some(Version::new(1, 2, 3)));
        assert_eq!(parse_tag("v1.2"), None);
        assert_eq!(parse_tag("vv1.2.3"), None);
    }
}
