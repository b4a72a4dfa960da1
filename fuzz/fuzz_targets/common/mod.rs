//! What the fuzz targets share: the example app's desired state (examples/app, as the embedded
//! default serves it) and an admission stack over it that discards audit events.

use std::path::Path;
use std::sync::Arc;

use driftguard::admission::{Admission, AdmissionSettings, service_account_username};
use driftguard::api::GuardSpec;
use driftguard::audit::{AuditEvent, AuditSink};
use driftguard::desired::{DesiredSet, DesiredStore, GuardId, GuardPolicy};
use driftguard::render::render_plain;
use driftguard::source::{Revision, SourceFile};

/// Drops events: fuzzing checks decisions, not the audit writer.
struct Discard;

impl AuditSink for Discard {
    fn record(&self, _event: AuditEvent) {}
}

/// examples/app's files, repository-relative.
pub fn example_files() -> Vec<SourceFile> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/app");
    let mut files: Vec<SourceFile> = std::fs::read_dir(&dir)
        .expect("examples/app is readable")
        .map(|entry| entry.expect("a directory entry").path())
        .map(|path| SourceFile {
            path: format!(
                "examples/app/{}",
                path.file_name().unwrap_or_default().to_string_lossy()
            ),
            content: std::fs::read(&path).expect("an example file is readable"),
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// The example app's desired set under Guard `default/example-app` with `spec` (JSON).
pub fn example_set(spec: serde_json::Value) -> Arc<DesiredSet> {
    let spec: GuardSpec = serde_json::from_value(spec).expect("a valid Guard spec");
    let id = GuardId {
        namespace: "default".into(),
        name: "example-app".into(),
    };
    let policy = Arc::new(GuardPolicy::new(id, &spec, "https://git.example.com/platform.git").expect("policy"));
    let revision = Revision {
        commit: "4b825dc642cb6eb9a060e54bf8d69288fbee4904".into(),
        reference: "main@sha1:4b825dc642cb".into(),
    };
    let manifests = render_plain(&example_files()).expect("examples/app renders");
    Arc::new(DesiredSet::build(policy, revision, manifests).expect("examples/app builds"))
}

/// Admission over the example app in `mode` (deny, revert, audit, off).
pub fn example_admission(mode: &str) -> Admission {
    let set = example_set(serde_json::json!({
        "sourceRef": { "name": "driftguard-examples" },
        "path": "examples/app",
        "mode": mode,
    }));
    let store = Arc::new(DesiredStore::new());
    store.publish(vec![set], true);
    Admission::new(
        store,
        AdmissionSettings {
            own_username: service_account_username("driftguard/driftguard"),
            hpa: Default::default(),
        },
        Arc::new(Discard),
    )
}
