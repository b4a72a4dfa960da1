//! Signed audit digests in cluster mode, against the real kube-apiserver
//! (tests/support/cluster.rs): the leader
//! creates the signing key Secret once and publishes its public key (old keys kept across a
//! rotation); every replica follows the Secret, signs its digests and anchors them in its own
//! ConfigMap; `driftguard audit verify --from-cluster` checks three replicas' interleaved
//! stdout with the cluster's keys and anchors.
//!
//! The replicas here are writers (`Writers`) driven by the test, so the rotation happens at a
//! chosen moment; tests/e2e/audit.rs runs the same evidence through three `driftguard serve`
//! replicas of the installed chart.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use driftguard::audit::cluster::{
    ANCHORS_LABEL, AuditCluster, DEFAULT_ANCHORS_PREFIX, DEFAULT_KEY_SECRET, DEFAULT_KEYS_CONFIG_MAP, anchor_channel,
    read_evidence,
};
use driftguard::audit::signing::SignerSlot;
use driftguard::audit::verify::{VerifyOptions, verify_sources};
use driftguard::audit::{AuditConfig, AuditSink, ChainSink};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ListParams};
use support::cluster::Cluster;
use support::guards::eventually;
use tokio::sync::{Notify, watch};

const NAMESPACE: &str = "driftguard";

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const WAIT: Duration = Duration::from_secs(20);

fn audit_cluster(client: &kube::Client, replica: &str) -> Arc<AuditCluster> {
    Arc::new(AuditCluster {
        client: client.clone(),
        namespace: NAMESPACE.to_owned(),
        secret_name: DEFAULT_KEY_SECRET.to_owned(),
        keys_config_map: DEFAULT_KEYS_CONFIG_MAP.to_owned(),
        anchors_prefix: DEFAULT_ANCHORS_PREFIX.to_owned(),
        replica: replica.to_owned(),
        api_timeout: Duration::from_secs(10),
    })
}

/// One replica: its writer (stdout into the shared stream), its key slot following the Secret,
/// and its anchor publisher.
struct Writer {
    sink: Option<ChainSink>,
    slot: Arc<SignerSlot>,
    cluster: Arc<AuditCluster>,
    anchors: watch::Receiver<Option<driftguard::audit::digest::Anchor>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writer {
    fn start(client: &kube::Client, name: &str, out: Shared) -> Self {
        let cluster = audit_cluster(client, name);
        let slot = Arc::new(SignerSlot::default());
        let (on_digest, anchors) = anchor_channel();
        let sink = ChainSink::builder(AuditConfig::default())
            .console(Box::new(out))
            .replica(name)
            .signer(slot.clone())
            .on_digest(on_digest)
            .start()
            .unwrap();
        let (stop, stopped) = watch::channel(false);
        let until_stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let tasks = vec![
            tokio::spawn(cluster.clone().follow_key(
                slot.clone(),
                Arc::new(Notify::new()),
                until_stopped(stopped.clone()),
            )),
            tokio::spawn({
                let cluster = cluster.clone();
                let anchors = anchors.clone();
                let stopped = until_stopped(stopped);
                async move { cluster.publish_anchors(anchors, stopped).await }
            }),
        ];
        Writer {
            sink: Some(sink),
            slot,
            cluster,
            anchors,
            stop,
            tasks,
        }
    }

    fn record(&self, count: usize) {
        for i in 0..count {
            self.sink
                .as_ref()
                .unwrap()
                .record(support::denied_event(i, "spec.replicas is managed by Git"));
        }
    }

    fn key_id(&self) -> Option<String> {
        self.slot.get().map(|k| k.key_id().to_owned())
    }

    /// Shutdown as `serve` does it: the final digest, then its anchor.
    async fn stop(mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            task.await.unwrap();
        }
        let sink = self.sink.take().unwrap();
        tokio::task::spawn_blocking(move || sink.digest_now()).await.unwrap();
        let last = self.anchors.borrow().clone().unwrap();
        self.cluster.publish_anchor(&last).await.unwrap();
    }
}

async fn config_map_data(client: &kube::Client, name: &str) -> Option<BTreeMap<String, String>> {
    let map = Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE)
        .get_opt(name)
        .await
        .unwrap()?;
    map.data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_sign_anchor_and_verify_across_a_key_rotation() {
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    cluster.ok(&["create", "namespace", NAMESPACE]);
    let client = cluster.client().await;

    // The leader creates the key once; a second pass keeps it.
    let leader = audit_cluster(&client, "driftguard-0");
    let first = leader.ensure_key().await.unwrap();
    assert_eq!(leader.ensure_key().await.unwrap(), first, "the key is created once");
    let secret: Secret = Api::namespaced(client.clone(), NAMESPACE)
        .get(DEFAULT_KEY_SECRET)
        .await
        .unwrap();
    assert!(secret.data.unwrap().contains_key("ed25519.key"));
    let published = config_map_data(&client, DEFAULT_KEYS_CONFIG_MAP).await.unwrap();
    assert_eq!(published.get("current"), Some(&first));
    assert!(published[&format!("{first}.pem")].starts_with("-----BEGIN PUBLIC KEY-----"));

    let out = Shared::default();
    let names = ["driftguard-0", "driftguard-1", "driftguard-2"];
    let writers: Vec<Writer> = names.iter().map(|n| Writer::start(&client, n, out.clone())).collect();
    for writer in &writers {
        eventually("the replica to read the key", WAIT, || async {
            writer.key_id().as_ref() == Some(&first)
        })
        .await;
    }
    for writer in &writers {
        writer.record(3);
        let sink = writer.sink.as_ref().unwrap();
        tokio::task::block_in_place(|| sink.digest_now());
    }
    for name in names {
        let anchors = format!("{DEFAULT_ANCHORS_PREFIX}-{name}");
        eventually("the anchor ConfigMap", WAIT, || async {
            config_map_data(&client, &anchors).await.is_some_and(|d| d.len() == 1)
        })
        .await;
    }

    // Rotation: delete the Secret; the leader creates a new key, the replicas swap it in, and
    // the ConfigMap keeps the old public key.
    Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .delete(DEFAULT_KEY_SECRET, &DeleteParams::default())
        .await
        .unwrap();
    let second = leader.ensure_key().await.unwrap();
    assert_ne!(second, first);
    let published = config_map_data(&client, DEFAULT_KEYS_CONFIG_MAP).await.unwrap();
    assert!(published.contains_key(&format!("{first}.pem")) && published.contains_key(&format!("{second}.pem")));
    for writer in &writers {
        eventually("the replica to swap in the new key", WAIT, || async {
            writer.key_id().as_ref() == Some(&second)
        })
        .await;
        writer.record(2);
    }
    for writer in writers {
        writer.stop().await;
    }

    // What `audit verify --from-cluster` reads.
    let (keys, anchors) = read_evidence(&client, NAMESPACE, DEFAULT_KEYS_CONFIG_MAP)
        .await
        .unwrap();
    assert_eq!(keys.ids().count(), 2);
    assert_eq!(anchors.len(), 3);
    let listed = Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default().labels(ANCHORS_LABEL))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 3);
    let stream = out.0.lock().unwrap().clone();
    let report = verify_sources(
        &[("stdout".into(), stream.clone())],
        VerifyOptions {
            public_keys: Some(&keys),
            anchors: &anchors,
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert_eq!(report.chains.len(), 3);
    for chain in &report.chains {
        assert_eq!(
            (chain.records, chain.digests, chain.anchors, chain.unsigned_tail),
            (7, 2, 1, 0),
            "{chain:?}"
        );
        assert_eq!(chain.key_ids.len(), 2, "{chain:?}");
    }

    // The CLI against the same cluster: intact; then one replica's tail cut.
    let kubeconfig = cluster.kubeconfig().to_owned();
    let run = |input: Vec<u8>| {
        let args = [
            "audit".into(),
            "verify".into(),
            "--from-cluster".into(),
            NAMESPACE.into(),
            "--kubeconfig".into(),
            kubeconfig.clone().into_os_string(),
            "-".into(),
        ];
        async move {
            tokio::task::spawn_blocking(move || support::driftguard_with_stdin::<_, std::ffi::OsString>(args, &input))
                .await
                .unwrap()
        }
    };
    let (code, text) = run(stream.clone()).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("ok: 21 records in 3 chains"), "{text}");
    let text_stream = String::from_utf8(stream).unwrap();
    let cut: Vec<&str> = text_stream
        .lines()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            !(v["replica"] == "driftguard-1" && v["seq"].as_u64().unwrap() > 4)
        })
        .collect();
    let (code, text) = run(format!("{}\n", cut.join("\n")).into_bytes()).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("the log was cut short"), "{text}");
}
