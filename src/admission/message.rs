//! Text for the person at kubectl: denial messages and warnings.

use std::fmt::Write;

use crate::desired::Managed;
use crate::drift::FieldDrift;
pub use crate::drift::display::{clip, fit, show_full_value, show_value};
use crate::render::Origin;

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

/// Where Git declares the first of `drifts` (its line in plain YAML), else the object.
fn origin_of(managed: &Managed<'_>, drifts: &[FieldDrift]) -> Origin {
    match drifts.first() {
        Some(drift) => managed.object.origin_of(&drift.path),
        None => managed.object.origin.clone(),
    }
}

/// The link to where Git declares the first of `drifts` (else the object) at the enforced
/// commit, when the Guard's source has links.
fn link_of(managed: &Managed<'_>, drifts: &[FieldDrift]) -> Option<String> {
    managed.link_of(drifts.first().map(|d| &d.path))
}

/// The message's last line: the link, on a line of its own so nothing sticks to it.
fn push_link(msg: &mut String, managed: &Managed<'_>, drifts: &[FieldDrift]) {
    if let Some(link) = link_of(managed, drifts) {
        let _ = write!(msg, "\nOpen it in Git: {link}");
    }
}

fn where_in_git(managed: &Managed<'_>, drifts: &[FieldDrift]) -> String {
    format!(
        "{} in {} ({})",
        origin_of(managed, drifts),
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
        where_in_git(managed, drifts)
    );
    push_link(&mut msg, managed, drifts);
    msg
}

/// The denial message for deleting a managed object.
pub fn delete_denied(managed: &Managed<'_>) -> String {
    let mut msg = format!(
        "{} is managed by Git (guard {}) and cannot be deleted by hand. Remove it from Git at {} and driftguard prunes it.",
        managed.object.display_name(),
        managed.guard.id,
        where_in_git(managed, &[])
    );
    push_link(&mut msg, managed, &[]);
    msg
}

/// Warnings for reverted fields (revert mode), each within [`MAX_WARNING`].
pub fn reverted_warnings(
    managed: &Managed<'_>,
    drifts: &[FieldDrift],
    is_sensitive: impl Fn(&FieldDrift) -> bool,
) -> Vec<String> {
    field_warnings(managed, drifts, is_sensitive, |[path, git, attempted]| {
        format!("driftguard reverted {path} to Git's {git} (requested {attempted})")
    })
}

/// Warnings for drift allowed in audit mode, each within [`MAX_WARNING`].
pub fn audited_warnings(
    managed: &Managed<'_>,
    drifts: &[FieldDrift],
    is_sensitive: impl Fn(&FieldDrift) -> bool,
) -> Vec<String> {
    field_warnings(managed, drifts, is_sensitive, |[path, git, attempted]| {
        format!("driftguard: {path} drifts from Git (Git {git}, requested {attempted})")
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
        change_in_git_warning(managed, &[]),
    ]
    .into_iter()
    .chain(link_warning(managed, &[]))
    .collect()
}

/// One warning per field (at most [`MAX_FIELDS`]), each within [`MAX_WARNING`]: `line` gets
/// the field's path, Git's value and the attempted value, shortened in the middle when the
/// sentence would be too long, so all three stay visible.
fn field_warnings(
    managed: &Managed<'_>,
    drifts: &[FieldDrift],
    is_sensitive: impl Fn(&FieldDrift) -> bool,
    line: impl Fn(&[&String; 3]) -> String,
) -> Vec<String> {
    let mut warnings: Vec<String> = drifts
        .iter()
        .take(MAX_FIELDS)
        .map(|drift| {
            let sensitive = is_sensitive(drift);
            let parts = [
                drift.path.to_string(),
                show_full_value(drift.git.as_ref(), sensitive),
                show_full_value(drift.attempted.as_ref(), sensitive),
            ];
            fit(&parts, 1, MAX_WARNING, |p| match p {
                [path, git, attempted] => line(&[path, git, attempted]),
                _ => String::new(),
            })
        })
        .collect();
    if drifts.len() > MAX_FIELDS {
        warnings.push(format!("driftguard: and {} more fields", drifts.len() - MAX_FIELDS));
    }
    warnings.push(change_in_git_warning(managed, drifts));
    warnings.extend(link_warning(managed, drifts));
    warnings
}

fn change_in_git_warning(managed: &Managed<'_>, drifts: &[FieldDrift]) -> String {
    clip(
        &format!("driftguard: change it in Git: {}", origin_of(managed, drifts)),
        MAX_WARNING,
    )
}

/// The link as a warning of its own, only when it fits in [`MAX_WARNING`] (a clipped link
/// leads nowhere).
fn link_warning(managed: &Managed<'_>, drifts: &[FieldDrift]) -> Option<String> {
    link_of(managed, drifts)
        .map(|link| format!("driftguard: {link}"))
        .filter(|warning| warning.chars().count() <= MAX_WARNING)
}
