//! The benchmark workload decides as labelled: every request of the load mix gets the answer
//! its kind says, so a fast wrong answer cannot pass for performance (benches/load.rs uses the
//! same requests and checks every answer too).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use driftguard::admission::{Admit, Webhook};
use driftguard::api::Mode;
use driftguard::audit::MemorySink;
use serde_json::Value;
use support::workload::{self, Kind, MIX};

#[test]
fn every_request_of_the_mix_gets_the_decision_of_its_kind() {
    let apps = 60;
    let set = workload::desired_set(apps, Mode::Deny);
    assert_eq!(
        set.objects.len(),
        apps * 4,
        "a Deployment, a ConfigMap, a Secret and a Service per app"
    );
    let admission = workload::admission(set, Arc::new(MemorySink::new()));
    let requests = workload::requests(apps, 10 * MIX.len());
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (n, request) in requests.iter().enumerate() {
        let reply = admission.admit(Webhook::Validate, &request.body);
        assert_eq!(reply.status, 200, "request {n} ({:?})", request.kind);
        let review: Value = serde_json::from_slice(&reply.body).unwrap();
        let allowed = review["response"]["allowed"].as_bool().unwrap();
        assert_eq!(
            allowed,
            request.kind.allowed(),
            "request {n} ({:?}) decided {}: {}",
            request.kind,
            reply.decision,
            review["response"]["status"]["message"]
        );
        let expected_decision = match request.kind {
            Kind::Unmanaged => "unmanaged",
            kind if kind.allowed() => "allowed",
            _ => "denied",
        };
        assert_eq!(reply.decision, expected_decision, "request {n} ({:?})", request.kind);
        *seen.entry(format!("{:?}", request.kind)).or_default() += 1;
    }
    assert_eq!(seen.len(), 5, "every kind is in the mix: {seen:?}");
    // The UPDATEs are the size the budget talks about.
    let update = requests.iter().find(|r| r.kind == Kind::UpdateDrift).unwrap();
    assert!(update.body.len() > 20_000, "{} bytes", update.body.len());
}
