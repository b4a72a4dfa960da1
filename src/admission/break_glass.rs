//! Break-glass (DESIGN.md section 4), the pure part: does a request start an emergency
//! override, is the object already detached, and may this person do it?
//!
//! A member of the Guard's `breakGlass.groups` sets `driftguard.io/break-glass: "<reason or
//! ticket>"`; the edit is allowed and recorded, the mutating webhook stamps
//! `driftguard.io/break-glass-expires` (now + `maxDuration`), and until then the object is
//! detached: admission allows its edits and the enforcer leaves it alone. At expiry (or when
//! the annotation is removed) the enforcer restores Git. Anyone else setting the annotation is
//! denied.

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::review::UserInfo;
use crate::desired::BreakGlassPolicy;

/// The annotation that starts a break-glass; its value is the reason.
pub const BREAK_GLASS_ANNOTATION: &str = "driftguard.io/break-glass";
/// When the break-glass ends (RFC 3339), stamped by the mutating webhook.
pub const EXPIRES_ANNOTATION: &str = "driftguard.io/break-glass-expires";

/// What a request means for break-glass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakGlass {
    /// Nothing to do with it: the normal rules apply.
    None,
    /// The request sets the annotation on an object that is not detached.
    Start {
        /// The reason given.
        reason: String,
    },
    /// The object is detached until `until`; the request keeps the annotation.
    Active {
        /// The reason given when it started.
        reason: String,
        /// When it ends.
        until: OffsetDateTime,
    },
}

fn annotation<'v>(object: Option<&'v Value>, name: &str) -> Option<&'v str> {
    object?
        .pointer("/metadata/annotations")?
        .get(name)?
        .as_str()
        .filter(|v| !v.trim().is_empty())
}

/// The end of an object's break-glass, if it is detached at `now`.
pub fn active_until(object: &Value, now: OffsetDateTime) -> Option<OffsetDateTime> {
    annotation(Some(object), BREAK_GLASS_ANNOTATION)?;
    let until = OffsetDateTime::parse(annotation(Some(object), EXPIRES_ANNOTATION)?, &Rfc3339).ok()?;
    (until > now).then_some(until)
}

/// True when the object carries break-glass annotations whose time is up (the enforcer
/// restores Git and removes them).
pub fn expired(object: &Value, now: OffsetDateTime) -> bool {
    annotation(Some(object), BREAK_GLASS_ANNOTATION).is_some() && active_until(object, now).is_none()
}

/// Classify a request from its old and new object.
pub fn classify(old: Option<&Value>, new: Option<&Value>, now: OffsetDateTime) -> BreakGlass {
    let Some(reason) = annotation(new, BREAK_GLASS_ANNOTATION) else {
        return BreakGlass::None;
    };
    match old.and_then(|old| active_until(old, now).map(|until| (old, until))) {
        Some((old, until)) => BreakGlass::Active {
            reason: annotation(Some(old), BREAK_GLASS_ANNOTATION)
                .unwrap_or(reason)
                .to_owned(),
            until,
        },
        None => BreakGlass::Start {
            reason: reason.to_owned(),
        },
    }
}

/// Whether `user` may break glass under `policy`: `Err` is the denial message.
pub fn authorize(
    policy: Option<&BreakGlassPolicy>,
    user: &UserInfo<'_>,
    object: &str,
    guard: &str,
) -> Result<(), String> {
    let Some(policy) = policy.filter(|p| !p.groups.is_empty()) else {
        return Err(format!(
            "{object}: Guard {guard} allows no break-glass; remove the {BREAK_GLASS_ANNOTATION} annotation, or change Git"
        ));
    };
    if user
        .groups
        .iter()
        .any(|g| policy.groups.iter().any(|allowed| allowed == g))
    {
        return Ok(());
    }
    Err(format!(
        "{object}: only members of {} may set {BREAK_GLASS_ANNOTATION} (Guard {guard}); {} is not. Change Git, or ask one of them",
        policy.groups.join(", "),
        user.username
    ))
}

/// The expiry to stamp for a break-glass starting `now`.
pub fn expiry(policy: Option<&BreakGlassPolicy>, now: OffsetDateTime) -> String {
    let duration = policy.map_or(crate::desired::DEFAULT_BREAK_GLASS, |p| p.max_duration);
    let until = now + duration;
    until.format(&Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn object(reason: Option<&str>, expires: Option<&str>) -> Value {
        let mut annotations = serde_json::Map::new();
        if let Some(r) = reason {
            annotations.insert(BREAK_GLASS_ANNOTATION.into(), json!(r));
        }
        if let Some(e) = expires {
            annotations.insert(EXPIRES_ANNOTATION.into(), json!(e));
        }
        json!({"metadata": {"name": "web", "annotations": annotations}})
    }

    #[test]
    fn requests_start_continue_or_leave_break_glass() {
        let now = OffsetDateTime::parse("2026-11-26T12:00:00Z", &Rfc3339).unwrap();
        let plain = object(None, None);
        let starting = object(Some("INC-42"), None);
        let active = object(Some("INC-42"), Some("2026-11-26T13:00:00Z"));
        let over = object(Some("INC-42"), Some("2026-11-26T11:00:00Z"));
        assert_eq!(classify(Some(&plain), Some(&plain), now), BreakGlass::None);
        assert_eq!(
            classify(Some(&plain), Some(&starting), now),
            BreakGlass::Start {
                reason: "INC-42".into()
            }
        );
        assert!(matches!(
            classify(Some(&active), Some(&active), now),
            BreakGlass::Active { .. }
        ));
        assert_eq!(
            classify(Some(&over), Some(&over), now),
            BreakGlass::Start {
                reason: "INC-42".into()
            },
            "an expired break-glass must be started again (and authorized again)"
        );
        assert_eq!(
            classify(Some(&active), Some(&plain), now),
            BreakGlass::None,
            "removed: Git rules again"
        );
        assert!(expired(&over, now) && !expired(&active, now) && !expired(&plain, now));
        assert!(active_until(&active, now).is_some());
    }

    #[test]
    fn only_members_may_and_others_are_told_who_may() {
        let policy = BreakGlassPolicy {
            groups: vec!["sre".into()],
            max_duration: Duration::from_secs(3600),
        };
        let user = |groups: &[&'static str]| UserInfo {
            username: Cow::Borrowed("alice@example.com"),
            uid: None,
            groups: groups.iter().map(|g| Cow::Borrowed(*g)).collect(),
        };
        assert!(
            authorize(
                Some(&policy),
                &user(&["developers", "sre"]),
                "Deployment default/web",
                "default/app"
            )
            .is_ok()
        );
        let denied = authorize(
            Some(&policy),
            &user(&["developers"]),
            "Deployment default/web",
            "default/app",
        )
        .unwrap_err();
        assert!(
            denied.contains("only members of sre") && denied.contains("alice@example.com"),
            "{denied}"
        );
        let none = authorize(None, &user(&["sre"]), "Deployment default/web", "default/app").unwrap_err();
        assert!(none.contains("allows no break-glass"), "{none}");
        let now = OffsetDateTime::parse("2026-11-26T12:00:00Z", &Rfc3339).unwrap();
        assert_eq!(expiry(Some(&policy), now), "2026-11-26T13:00:00Z");
    }
}
