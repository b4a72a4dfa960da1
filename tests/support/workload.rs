//! A realistic workload for benchmarks and the tests that check them: a Git repository of many
//! applications (each a Deployment, a ConfigMap and a Service, as in examples/app) and the
//! AdmissionReviews kube-apiserver sends for edits of them, each with the decision driftguard
//! must reach.
//!
//! The reviews are the captured fixtures (tests/fixtures/*.json, ~23 KB for a Deployment UPDATE
//! with its oldObject and managedFields) re-addressed to a generated application, so their
//! bodies have the size and shape of real ones.

use std::sync::Arc;

use driftguard::api::{GuardSpec, Mode};
use driftguard::desired::{DesiredSet, GuardId, GuardPolicy};
use driftguard::render::render_plain;
use driftguard::source::{Revision, SourceFile};
use serde_json::Value;

/// Namespaces the applications are spread over.
pub const NAMESPACES: usize = 20;

/// Where application `i` lives and what it is called.
pub fn app(i: usize) -> (String, String) {
    (format!("team-{}", i % NAMESPACES), format!("app-{i}"))
}

/// The repository files of `apps` applications: per application, examples/app's Deployment,
/// ConfigMap and Service renamed to `app-<i>` in namespace `team-<i % 20>` (3 objects each).
pub fn repo_files(apps: usize) -> Vec<SourceFile> {
    let read = |name: &str| std::fs::read_to_string(super::root().join("examples/app").join(name)).unwrap();
    let (deployment, config, service) = (read("deployment.yaml"), read("config.yaml"), read("service.yaml"));
    let mut files = Vec::with_capacity(apps);
    for i in 0..apps {
        let (namespace, name) = app(i);
        // The first `  name:` line is the object's own (metadata comes first in these files).
        let rename = |text: &str, old: &str, new: &str| {
            text.replacen(
                &format!("  name: {old}\n"),
                &format!("  name: {new}\n  namespace: {namespace}\n"),
                1,
            )
        };
        let content = [
            rename(&deployment, "web", &name),
            rename(
                &rename(&config, "web-config", &format!("{name}-config")),
                "web-credentials",
                &format!("{name}-credentials"),
            ),
            rename(&service, "web", &name),
        ]
        .join("\n---\n");
        files.push(SourceFile {
            path: format!("apps/{namespace}/{name}.yaml"),
            content: content.into_bytes(),
        });
    }
    files
}

/// The desired set of [`repo_files`] under Guard `platform/apps` in `mode`.
pub fn desired_set(apps: usize, mode: Mode) -> Arc<DesiredSet> {
    let spec: GuardSpec = serde_json::from_value(serde_json::json!({
        "sourceRef": { "name": "platform" },
        "path": "apps",
        "mode": mode,
    }))
    .unwrap();
    let id = GuardId {
        namespace: "platform".into(),
        name: "apps".into(),
    };
    let policy = Arc::new(GuardPolicy::new(id, &spec, "https://git.example.com/platform.git").unwrap());
    let revision = Revision {
        commit: "4b825dc642cb6eb9a060e54bf8d69288fbee4904".into(),
        reference: "main@sha1:4b825dc642cb".into(),
    };
    let manifests = render_plain(&repo_files(apps)).unwrap();
    Arc::new(DesiredSet::build(policy, revision, manifests).unwrap())
}

/// Admission over `set` alone (driftguard's own service account exempt), recording to `audit`.
pub fn admission(
    set: Arc<DesiredSet>,
    audit: Arc<dyn driftguard::audit::AuditSink>,
) -> driftguard::admission::Admission {
    use driftguard::admission::{Admission, AdmissionSettings, service_account_username};
    let store = Arc::new(driftguard::desired::DesiredStore::new());
    store.publish(vec![set], true);
    Admission::new(
        store,
        AdmissionSettings {
            own_username: service_account_username("driftguard/driftguard"),
            hpa: Default::default(),
        },
        audit,
    )
}

/// What a request of the mix is, and what driftguard must answer on `/validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `kubectl set image` on a managed Deployment: ~23 KB UPDATE with oldObject; denied.
    UpdateDrift,
    /// `kubectl rollout restart` of a managed Deployment: ~23 KB UPDATE of an undeclared
    /// annotation; allowed.
    UpdateAllowed,
    /// `kubectl scale` of a managed Deployment away from Git's replicas; denied.
    Scale,
    /// `kubectl delete` of a managed Deployment; denied.
    Delete,
    /// An UPDATE of a Deployment no Guard manages (~23 KB); allowed at once.
    Unmanaged,
}

impl Kind {
    /// Whether `/validate` allows it.
    pub fn allowed(self) -> bool {
        matches!(self, Kind::UpdateAllowed | Kind::Unmanaged)
    }
}

/// The mix, per 20 requests: 8 drifting UPDATEs, 4 allowed UPDATEs, 3 scales, 1 DELETE and 4
/// UPDATEs of unmanaged objects — mostly managed edits, as a webhook whose objectSelector
/// filters out unmanaged objects sees (the unmanaged ones stand for copied labels and scales
/// of unmanaged workloads).
pub const MIX: [Kind; 20] = [
    Kind::UpdateDrift,
    Kind::Unmanaged,
    Kind::UpdateAllowed,
    Kind::UpdateDrift,
    Kind::Scale,
    Kind::UpdateDrift,
    Kind::Unmanaged,
    Kind::UpdateAllowed,
    Kind::UpdateDrift,
    Kind::Delete,
    Kind::UpdateDrift,
    Kind::Scale,
    Kind::Unmanaged,
    Kind::UpdateAllowed,
    Kind::UpdateDrift,
    Kind::UpdateDrift,
    Kind::Scale,
    Kind::Unmanaged,
    Kind::UpdateAllowed,
    Kind::UpdateDrift,
];

/// One request of the mix: its kind and the review body.
#[derive(Debug, Clone)]
pub struct Request {
    /// What it is (and so what the answer must be).
    pub kind: Kind,
    /// The AdmissionReview JSON.
    pub body: Vec<u8>,
}

fn fixture(name: &str) -> Value {
    serde_json::from_slice(&super::fixture(name)).unwrap()
}

/// Points a captured review at application `name` in `namespace`, with a fresh uid.
fn readdress(review: &Value, namespace: &str, name: &str, uid: usize) -> Vec<u8> {
    let mut review = review.clone();
    let request = &mut review["request"];
    request["uid"] = format!("00000000-0000-4000-8000-{uid:012}").into();
    request["name"] = name.into();
    request["namespace"] = namespace.into();
    for side in ["object", "oldObject"] {
        if request[side]["metadata"].is_object() {
            request[side]["metadata"]["name"] = name.into();
            request[side]["metadata"]["namespace"] = namespace.into();
        }
    }
    serde_json::to_vec(&review).unwrap()
}

/// `count` requests of the [`MIX`] over `apps` applications (round robin), deterministic.
pub fn requests(apps: usize, count: usize) -> Vec<Request> {
    let drift = fixture("edit-image-20kb.json");
    let restart = fixture("rollout-restart-20kb.json");
    let scale = fixture("scale-deployment.json");
    let delete = fixture("delete-by-user.json");
    (0..count)
        .map(|n| {
            let kind = MIX[n % MIX.len()];
            let (namespace, name) = app(n % apps);
            let body = match kind {
                Kind::UpdateDrift => readdress(&drift, &namespace, &name, n),
                Kind::UpdateAllowed => readdress(&restart, &namespace, &name, n),
                Kind::Scale => readdress(&scale, &namespace, &name, n),
                Kind::Delete => readdress(&delete, &namespace, &name, n),
                Kind::Unmanaged => readdress(&drift, &namespace, &format!("unmanaged-{n}"), n),
            };
            Request { kind, body }
        })
        .collect()
}
