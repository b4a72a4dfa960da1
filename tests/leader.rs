//! Leader election between replicas on a Lease in the real kube-apiserver
//! (tests/support/cluster.rs): one leader at a time, a stopped leader hands over at once, a
//! crashed leader is replaced within the lease duration. (That the chart's RBAC allows the
//! elector's requests is tests/install.rs's part.)

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use driftguard::reconcile::leader::{ElectionConfig, LeaderElector};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use support::cluster::{Cluster, NAMESPACE};
use tokio::sync::{oneshot, watch};

const LEASE: Duration = Duration::from_secs(2);
const DEADLINE: Duration = Duration::from_secs(15);

struct Replica {
    leading: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

fn replica(client: &Client, identity: &str) -> Replica {
    let (tx, leading) = watch::channel(false);
    let (stop, stopped) = oneshot::channel::<()>();
    let elector = LeaderElector::new(
        client.clone(),
        ElectionConfig::new(NAMESPACE, "driftguard-leader", identity, LEASE),
    );
    let task = tokio::spawn(elector.run(tx, async move {
        let _ = stopped.await;
    }));
    Replica {
        leading,
        stop: Some(stop),
        task,
    }
}

async fn until_leading(replica: &mut Replica) -> Duration {
    let started = Instant::now();
    tokio::time::timeout(DEADLINE, replica.leading.wait_for(|l| *l))
        .await
        .expect("became leader in time")
        .unwrap();
    started.elapsed()
}

/// Records any moment at which both replicas claim leadership.
fn watch_for_overlap(a: watch::Receiver<bool>, b: watch::Receiver<bool>, a_alive: Arc<AtomicBool>) -> Arc<AtomicBool> {
    let overlap = Arc::new(AtomicBool::new(false));
    let seen = overlap.clone();
    tokio::spawn(async move {
        loop {
            if a_alive.load(Ordering::SeqCst) && *a.borrow() && *b.borrow() {
                seen.store(true, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    overlap
}

/// Wait until the lease's holder renews it once more.
async fn next_renewal(leases: &Api<Lease>) {
    let before = leases.get("driftguard-leader").await.unwrap().spec.unwrap().renew_time;
    tokio::time::timeout(DEADLINE, async {
        while leases.get("driftguard-leader").await.unwrap().spec.unwrap().renew_time == before {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the leader renews");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_with_handover_and_takeover() {
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    cluster.ok(&["create", "namespace", NAMESPACE]);
    let client = cluster.client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);

    // A leads; B follows without ever overlapping.
    let mut a = replica(&client, "replica-a");
    until_leading(&mut a).await;
    let mut b = replica(&client, "replica-b");
    let a_alive = Arc::new(AtomicBool::new(true));
    let overlap = watch_for_overlap(a.leading.clone(), b.leading.clone(), a_alive.clone());
    // A renews while B follows.
    next_renewal(&leases).await;
    next_renewal(&leases).await;
    assert!(*a.leading.borrow() && !*b.leading.borrow());
    assert_eq!(
        leases
            .get("driftguard-leader")
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity
            .as_deref(),
        Some("replica-a")
    );

    // A stops gracefully: it releases the lease and B takes over without waiting it out.
    a.stop.take().unwrap().send(()).unwrap();
    a.task.await.unwrap();
    let handover = until_leading(&mut b).await;
    assert!(handover < LEASE, "released lease taken over in {handover:?}");
    assert!(!overlap.load(Ordering::SeqCst), "two leaders at once");

    // B crashes (no release): a new replica C takes over within the lease duration plus a retry.
    let mut c = replica(&client, "replica-c");
    let b_alive = Arc::new(AtomicBool::new(true));
    let overlap = watch_for_overlap(b.leading.clone(), c.leading.clone(), b_alive.clone());
    next_renewal(&leases).await;
    assert!(!*c.leading.borrow(), "C must wait while B's lease is live");
    b_alive.store(false, Ordering::SeqCst);
    b.task.abort();
    let crashed_at = Instant::now();
    until_leading(&mut c).await;
    let takeover = crashed_at.elapsed();
    assert!(takeover <= LEASE + LEASE, "takeover after a crash took {takeover:?}");
    assert!(!overlap.load(Ordering::SeqCst), "two live leaders at once");
    let spec = leases.get("driftguard-leader").await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-c"));
    assert!(spec.lease_transitions.unwrap_or(0) >= 2, "{spec:?}");
    eprintln!("handover after release: {handover:?}; takeover after crash: {takeover:?}");
    c.stop.take().unwrap().send(()).unwrap();
    c.task.await.unwrap();
    drop(cluster);
}
