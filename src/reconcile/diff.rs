//! `driftguard diff`: what a reconcile would change, for a person. Pure: a [`Plan`] and the
//! live snapshot it was made from -> report lines.

use super::{ApplyReason, LiveSnapshot, Plan};
use crate::drift::display::show_value;

/// The differences between Git and the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// Lines to print.
    pub lines: Vec<String>,
    /// Objects that would be written or deleted.
    pub differences: usize,
}

/// Describe `plan` (made from `live`): objects missing or drifted (each declared field with
/// the cluster's and Git's values; Secret data hidden), objects waiting, and prunes.
pub fn report(plan: &Plan<'_>, live: &LiveSnapshot) -> Report {
    let mut lines = Vec::new();
    for step in &plan.apply {
        let object = step.object;
        let origin = &object.origin;
        match &step.reason {
            ApplyReason::Create => lines.push(format!("{}: missing from the cluster (Git: {origin})", step.key)),
            ApplyReason::Drift(paths) => {
                lines.push(format!(
                    "{}: {} declared field{} differ{} from Git ({origin})",
                    step.key,
                    paths.len(),
                    if paths.len() == 1 { "" } else { "s" },
                    if paths.len() == 1 { "s" } else { "" },
                ));
                let live_object = live.get(&step.key);
                for path in paths {
                    let sensitive = object.is_sensitive(path);
                    let cluster = live_object.and_then(|l| path.resolve(l));
                    let git = path.resolve(&object.object);
                    lines.push(format!(
                        "  {path}: cluster {}, Git {}",
                        show_value(cluster, sensitive),
                        show_value(git, sensitive)
                    ));
                }
            }
            ApplyReason::Ownership => lines.push(format!(
                "{}: lacks driftguard's ownership label and annotation (Git: {origin})",
                step.key
            )),
            ApplyReason::LiveUnknown => lines.push(format!("{}: could not be read from the cluster", step.key)),
        }
    }
    for (key, why) in &plan.waiting {
        lines.push(format!("{key}: waiting: {why}"));
    }
    for step in &plan.prune {
        lines.push(format!("{}: would be pruned ({})", step.key, step.reason));
    }
    Report {
        differences: plan.apply.len() + plan.prune.len(),
        lines,
    }
}
