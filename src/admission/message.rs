//! Text for the person at kubectl: denial messages and warnings.

use std::fmt::Write;

use crate::desired::Managed;
use crate::drift::FieldDrift;
pub use crate::drift::display::{clip, show_value};

/// At most this many fields are listed; the rest are counted.
pub const MAX_FIELDS: usize = 5;
/// kubectl prints warnings on one line; keep them short.
pub const MAX_WARNING: usize = 120;

/// `main@70386ad18baa` rather than the full `main@sha1:<40 hex>`: enough to find the commit.
fn short_revision(managed: &Managed<'_>) -> String {
    let commit = managed.revision.commit.get(..12).unwrap_or(&managed.revision.commit);
    match managed.revision.reference.split_once('@') {
        Some((name, _)) if !name.is_empty() => format!("{name}@{commit}"),
        _ => commit.to_owned(),
    }
}

fn where_in_git(managed: &Managed<'_>) -> String {
    format!(
        "{} in {} ({})",
        managed.object.origin,
        managed.guard.source_url,
        short_revision(managed)
    )
}

/// The denial message for drifting fields.
pub fn drift_denied(
    managed: &Managed<'_>,
    drifts: &[FieldDrift],
    is_sensitive: impl Fn(&FieldDrift) -> bool,
) -> String {
    let mut msg = format!(
        "{} is managed by Git (guard {}); this request changes {} declared field{} away from Git:",
        managed.object.display_name(),
        managed.guard.id,
        drifts.len(),
        if drifts.len() == 1 { "" } else { "s" }
    );
    for drift in drifts.iter().take(MAX_FIELDS) {
        let sensitive = is_sensitive(drift);
        let _ = write!(
            msg,
            "\n  - {}: Git has {}, request has {}",
            drift.path,
            show_value(drift.git.as_ref(), sensitive),
            show_value(drift.attempted.as_ref(), sensitive)
        );
    }
    if drifts.len() > MAX_FIELDS {
        let _ = write!(msg, "\n  and {} more", drifts.len() - MAX_FIELDS);
    }
    let _ = write!(
        msg,
        "\nGit declares it at {}. Change it there and driftguard applies it; if another controller owns these fields, ask for an ignore rule on the Guard.",
        where_in_git(managed)
    );
    msg
}

/// The denial message for deleting a managed object.
pub fn delete_denied(managed: &Managed<'_>) -> String {
    format!(
        "{} is managed by Git (guard {}) and cannot be deleted by hand. Remove it from Git at {} and driftguard prunes it.",
        managed.object.display_name(),
        managed.guard.id,
        where_in_git(managed)
    )
}

/// Warnings for reverted fields (revert mode), each within [`MAX_WARNING`].
pub fn reverted_warnings(
    managed: &Managed<'_>,
    drifts: &[FieldDrift],
    is_sensitive: impl Fn(&FieldDrift) -> bool,
) -> Vec<String> {
    field_warnings(managed, drifts, is_sensitive, |drift, git, attempted| {
        format!(
            "driftguard reverted {} to Git's {git} (requested {attempted})",
            drift.path
        )
    })
}

/// Warnings for drift allowed in audit mode, each within [`MAX_WARNING`].
pub fn audited_warnings(
    managed: &Managed<'_>,
    drifts: &[FieldDrift],
    is_sensitive: impl Fn(&FieldDrift) -> bool,
) -> Vec<String> {
    field_warnings(managed, drifts, is_sensitive, |drift, git, attempted| {
        format!(
            "driftguard: {} drifts from Git (Git {git}, requested {attempted})",
            drift.path
        )
    })
}

/// The warning for a request made in `version` while Git declares another version of the same
/// API: only labels and annotations were compared.
pub fn other_version_warning(managed: &Managed<'_>, version: &str) -> String {
    let group = &managed.object.group;
    let api = |v: &str| {
        if group.is_empty() {
            v.to_owned()
        } else {
            format!("{group}/{v}")
        }
    };
    clip(
        &format!(
            "driftguard checked only labels/annotations in {}; Git declares {}, the enforcer restores the rest",
            api(version),
            api(&managed.object.version)
        ),
        MAX_WARNING,
    )
}

/// The warning for an audited delete.
pub fn delete_audited_warning(managed: &Managed<'_>) -> Vec<String> {
    vec![
        clip(
            &format!(
                "driftguard: {} is managed by Git; deleting it drifts from Git",
                managed.object.display_name()
            ),
            MAX_WARNING,
        ),
        change_in_git_warning(managed),
    ]
}

fn field_warnings(
    managed: &Managed<'_>,
    drifts: &[FieldDrift],
    is_sensitive: impl Fn(&FieldDrift) -> bool,
    line: impl Fn(&FieldDrift, String, String) -> String,
) -> Vec<String> {
    let mut warnings: Vec<String> = drifts
        .iter()
        .take(MAX_FIELDS)
        .map(|drift| {
            let sensitive = is_sensitive(drift);
            let text = line(
                drift,
                show_value(drift.git.as_ref(), sensitive),
                show_value(drift.attempted.as_ref(), sensitive),
            );
            clip(&text, MAX_WARNING)
        })
        .collect();
    if drifts.len() > MAX_FIELDS {
        warnings.push(format!("driftguard: and {} more fields", drifts.len() - MAX_FIELDS));
    }
    warnings.push(change_in_git_warning(managed));
    warnings
}

fn change_in_git_warning(managed: &Managed<'_>) -> String {
    clip(
        &format!("driftguard: change it in Git: {}", managed.object.origin),
        MAX_WARNING,
    )
}
