//! Any bytes as an AdmissionReview body, on both webhooks, against the example app's desired
//! state: decoding and deciding never panic, and every answer is a well-formed reply (a 200
//! AdmissionReview echoing the uid, or a 4xx/5xx JSON error).

#![no_main]

mod common;

use std::sync::OnceLock;

use driftguard::admission::{Admission, Admit, Webhook};
use libfuzzer_sys::fuzz_target;

/// Deny and revert mode: the two that build denials and patches.
fn stacks() -> &'static [Admission; 2] {
    static STACKS: OnceLock<[Admission; 2]> = OnceLock::new();
    STACKS.get_or_init(|| [common::example_admission("deny"), common::example_admission("revert")])
}

fuzz_target!(|body: &[u8]| {
    for (admission, webhook) in stacks()
        .iter()
        .flat_map(|a| [(a, Webhook::Validate), (a, Webhook::Mutate)])
    {
        let reply = admission.admit(webhook, body);
        let parsed: serde_json::Value = serde_json::from_slice(&reply.body).expect("replies are JSON");
        match reply.status {
            200 => {
                assert_eq!(parsed["kind"], "AdmissionReview");
                assert!(parsed["response"]["uid"].is_string());
            }
            400 | 500 => assert!(parsed["error"].is_string()),
            other => panic!("unexpected status {other}"),
        }
    }
});
