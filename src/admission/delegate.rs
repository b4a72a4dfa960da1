//! Delegation (a Guard's `delegate` rules): named writers may change named fields within
//! bounds. This module picks the rules that name the requester and sorts the request's drifts
//! into granted, out of bounds and the rest (judged as usual). Pure: HPA bounds come from the
//! in-memory [`HpaBounds`] table.

use std::fmt::Write;

use crate::api::DelegateRule;
use crate::desired::{HpaBounds, Managed};
use crate::drift::{FieldDrift, IgnorePath};

use super::message::{MAX_FIELDS, show_value};
use super::review::Request;

/// The delegated pointers of an object whose rules name the requester.
pub(super) struct Mine<'m> {
    /// Pointers, for the drift walk.
    pub pointers: Vec<&'m IgnorePath>,
    /// The Guard rule (from 0) of each pointer.
    rules: Vec<usize>,
}

/// The delegated pointers of `managed` that the requester may change; None (without
/// allocating) when the object has no delegation or no rule names the requester.
pub(super) fn for_requester<'m>(request: &Request<'_>, managed: &Managed<'m>) -> Option<Mine<'m>> {
    let delegation = managed.object.delegation.as_deref()?;
    let user = &request.user_info;
    let field_manager = request.field_manager();
    let names = |rule: usize| {
        managed.guard.delegate_rule(rule).is_some_and(|r| {
            r.to.names(&user.username, user.groups.iter().map(|g| g.as_ref()), field_manager)
        })
    };
    let mut mine: Option<Mine<'m>> = None;
    for (pointer, &rule) in delegation.pointers.iter().zip(&delegation.rules) {
        if names(rule) {
            let m = mine.get_or_insert_with(|| Mine {
                pointers: Vec::new(),
                rules: Vec::new(),
            });
            m.pointers.push(pointer);
            m.rules.push(rule);
        }
    }
    mine
}

/// A delegated drift outside its rule's bounds.
pub(super) struct Outside {
    pub drift: FieldDrift,
    /// Why, naming the bound and the rule.
    pub reason: String,
}

/// The request's delegated drifts, sorted.
pub(super) struct Split {
    /// Within their rule's bounds: allowed.
    pub granted: Vec<FieldDrift>,
    /// The rule (from 0) of each granted drift.
    pub granted_rules: Vec<usize>,
    /// Outside the bounds.
    pub outside: Vec<Outside>,
}

/// Take the delegated drifts out of `drifts` (leaving the rest to the usual judgement).
pub(super) fn split(drifts: &mut Vec<FieldDrift>, mine: &Mine<'_>, managed: &Managed<'_>, hpa: &HpaBounds) -> Split {
    let mut out = Split {
        granted: Vec::new(),
        granted_rules: Vec::new(),
        outside: Vec::new(),
    };
    let mut rest = Vec::with_capacity(drifts.len());
    for drift in drifts.drain(..) {
        let Some(rule_no) = drift.delegated.and_then(|i| mine.rules.get(i).copied()) else {
            rest.push(drift);
            continue;
        };
        let Some(rule) = managed.guard.delegate_rule(rule_no) else {
            rest.push(drift);
            continue;
        };
        match check_bounds(rule, rule_no, drift.attempted.as_ref(), managed, hpa) {
            Ok(()) => {
                out.granted.push(drift);
                out.granted_rules.push(rule_no);
            }
            Err(why) => out.outside.push(Outside {
                drift,
                reason: why.to_string(),
            }),
        }
    }
    *drifts = rest;
    out
}

/// Why a delegate's value is not within its rule's bounds: names the bound and the rule.
#[derive(Debug, thiserror::Error)]
enum OutOfBounds {
    /// The bounds could not be resolved (`fromHPA` with no HPA targeting the object).
    #[error("{error} ({rule})")]
    Unresolved {
        /// Why.
        error: crate::desired::DesiredError,
        /// The rule, as messages name it.
        rule: String,
    },
    /// The value is not a number.
    #[error("{value} is not a number within the bounds of {rule}")]
    NotANumber {
        /// The value, as messages show it.
        value: String,
        /// The rule.
        rule: String,
    },
    /// Below the minimum or above the maximum.
    #[error("{number} is {side} the {which} {bound} ({from}) of {rule}")]
    Outside {
        /// The value.
        number: f64,
        /// `below` or `above`.
        side: &'static str,
        /// `minimum` or `maximum`.
        which: &'static str,
        /// The bound.
        bound: i64,
        /// Where the bound comes from (the rule or the HPA).
        from: String,
        /// The rule.
        rule: String,
    },
}

/// Is `value` within a rule's bounds?
fn check_bounds(
    rule: &DelegateRule,
    rule_no: usize,
    value: Option<&serde_json::Value>,
    managed: &Managed<'_>,
    hpa: &HpaBounds,
) -> Result<(), OutOfBounds> {
    let Some(bounds) = &rule.bounds else {
        return Ok(());
    };
    let o = managed.object;
    let rule_name = || describe_rule(rule, rule_no);
    let resolved = hpa
        .resolve(bounds, &o.group, &o.kind, o.namespace.as_deref(), &o.name)
        .map_err(|error| OutOfBounds::Unresolved {
            error,
            rule: rule_name(),
        })?;
    let Some(number) = value.and_then(serde_json::Value::as_f64) else {
        return Err(OutOfBounds::NotANumber {
            value: show_value(value, false),
            rule: rule_name(),
        });
    };
    if let Some((bound, which)) = resolved.outside(number) {
        return Err(OutOfBounds::Outside {
            number,
            side: if which == "minimum" { "below" } else { "above" },
            which,
            bound,
            from: resolved.source,
            rule: rule_name(),
        });
    }
    Ok(())
}

/// `delegate rule 1 (/spec/replicas to serviceAccounts kube-system/horizontal-pod-autoscaler)`.
pub(crate) fn describe_rule(rule: &DelegateRule, rule_no: usize) -> String {
    let mut who = Vec::new();
    let to = &rule.to;
    for (label, list) in [
        ("users", &to.users),
        ("groups", &to.groups),
        ("serviceAccounts", &to.service_accounts),
        ("fieldManagers", &to.field_managers),
    ] {
        if !list.is_empty() {
            who.push(format!("{label} {}", list.join(",")));
        }
    }
    format!(
        "delegate rule {} ({} to {})",
        rule_no + 1,
        rule.json_pointers.join(","),
        who.join("; ")
    )
}

/// The audit message of an allowed delegated change.
pub(super) fn granted_message(managed: &Managed<'_>, split: &Split, username: &str) -> String {
    let mut msg = format!(
        "{username} changed delegated fields of {}:",
        managed.object.display_name()
    );
    for (drift, &rule_no) in split.granted.iter().zip(&split.granted_rules).take(MAX_FIELDS) {
        let rule = managed
            .guard
            .delegate_rule(rule_no)
            .map(|r| describe_rule(r, rule_no))
            .unwrap_or_default();
        let sensitive = managed.object.is_sensitive(&drift.path);
        let _ = write!(
            msg,
            " {} to {} by {rule};",
            drift.path,
            show_value(drift.attempted.as_ref(), sensitive)
        );
    }
    if split.granted.len() > MAX_FIELDS {
        let _ = write!(msg, " and {} more", split.granted.len() - MAX_FIELDS);
    }
    msg.pop();
    msg
}

/// The denial of delegated changes outside their bounds.
pub(super) fn outside_denied(managed: &Managed<'_>, outside: &[Outside]) -> String {
    let mut msg = format!(
        "{} is managed by Git (guard {}); this request sets delegated field{} outside the bounds:",
        managed.object.display_name(),
        managed.guard.id,
        if outside.len() == 1 { "" } else { "s" }
    );
    for o in outside.iter().take(MAX_FIELDS) {
        let _ = write!(msg, "\n  - {}: {}", o.drift.path, o.reason);
    }
    if outside.len() > MAX_FIELDS {
        let _ = write!(msg, "\n  and {} more", outside.len() - MAX_FIELDS);
    }
    msg
}

/// One warning per out-of-bounds field (audit mode).
pub(super) fn outside_warnings(outside: &[Outside]) -> Vec<String> {
    outside
        .iter()
        .take(MAX_FIELDS)
        .map(|o| {
            super::message::clip(
                &format!("driftguard: {} {}", o.drift.path, o.reason),
                super::message::MAX_WARNING,
            )
        })
        .collect()
}
