//! `driftguard serve --cluster`: admission on every replica from the revision the leader
//! applied, and, on the Lease holder, the GitSource and Guard controllers plus self-heal.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::{ServeError, Started, join_receiver, on_signals, start, start_receiver, stopped};
use crate::audit::cluster::{AuditCluster, anchor_channel};
use crate::audit::signing::SignerSlot;
use crate::audit::{AuditSink, ChainSink};
use crate::certs::managed::ManagedCerts;
use crate::certs::rotation::RotationPolicy;
use crate::config::{ClusterSettings, ManagedTls, Settings, TlsSource};
use crate::desired::{DesiredCache, DesiredStore};
use crate::receiver::KubeTargets;
use crate::reconcile::admission_events::EventingSink;
use crate::reconcile::apply::Applier;
use crate::reconcile::controller::Context;
use crate::reconcile::events::Events;
use crate::reconcile::leader::{ElectionConfig, LeaderElector};
use crate::reconcile::replica::{Follow, follow_applied};
use crate::reconcile::run::{run_guards, run_sources};
use crate::reconcile::selfheal::{HealDeps, SelfHeal};
use crate::reconcile::source::SourceContext;
use crate::server;
use crate::source::Fetcher;
use crate::telemetry::{CountingSink, Metrics};

/// How long shutdown waits for the loops (the elector releases the Lease on its way out).
const LOOPS_GRACE: Duration = Duration::from_secs(10);
/// How often the leader checks the audit signing key Secret and public key ConfigMap even when
/// nothing changed.
const KEY_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// A client from the kubeconfig given, else the usual inference (KUBECONFIG, ~/.kube/config,
/// in-cluster service account), and the URL it talks to (for error messages).
pub async fn connect(kubeconfig: Option<&std::path::Path>) -> Result<(kube::Client, String), ServeError> {
    let config = connect_config(kubeconfig).await?;
    let url = config.cluster_url.to_string();
    let client =
        kube::Client::try_from(config).map_err(|e| ServeError::Cluster(format!("cannot build a client: {e}")))?;
    Ok((client, url))
}

/// The client configuration [`connect`] uses (kept to build impersonating clients).
async fn connect_config(kubeconfig: Option<&std::path::Path>) -> Result<kube::Config, ServeError> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| ServeError::Cluster(format!("cannot read kubeconfig {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| ServeError::Cluster(format!("kubeconfig {}: {e}", path.display())))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            ServeError::Cluster(format!(
                "no cluster configuration found ({e}); pass --kubeconfig, set KUBECONFIG, or run in a pod"
            ))
        })?,
    };
    Ok(config)
}

/// The self-managed certificates of `managed`, in driftguard's namespace (the Lease's).
fn managed_certs(
    managed: &ManagedTls,
    cluster: &ClusterSettings,
    client: kube::Client,
    audit: Arc<dyn AuditSink>,
    metrics: Arc<Metrics>,
) -> ManagedCerts {
    ManagedCerts {
        client,
        namespace: cluster.lease_namespace.clone(),
        secret_name: managed.secret_name.clone(),
        webhook_configuration: managed.webhook_configuration.clone(),
        policy: RotationPolicy {
            hosts: RotationPolicy::service_hosts(&managed.service_name, &cluster.lease_namespace),
            ca_validity: managed.ca_validity,
            serving_validity: managed.serving_validity,
            renew_before: managed.renew_before,
            ca_overlap: managed.ca_overlap,
        },
        check_interval: managed.check_interval,
        api_timeout: cluster.api_timeout,
        audit,
        metrics,
    }
}

/// Waits until the Secret holds a certificate to serve (written by whichever replica leads),
/// saying every so often what it waits for. False: shutdown came first.
async fn first_certificate(serving: &server::ServingCert, certs: &ManagedCerts, stop: watch::Receiver<bool>) -> bool {
    const REMIND: Duration = Duration::from_secs(15);
    let mut stop = std::pin::pin!(stopped(stop));
    loop {
        tokio::select! {
            () = serving.wait_loaded() => return true,
            () = &mut stop => return false,
            () = tokio::time::sleep(REMIND) => tracing::info!(
                secret = %format!("{}/{}", certs.namespace, certs.secret_name),
                "waiting for the leader to write the serving certificate; not serving until then"
            ),
        }
    }
}

/// Run until SIGTERM/Ctrl-C.
pub(super) async fn run(settings: Settings, cluster: ClusterSettings) -> Result<(), ServeError> {
    let config = connect_config(cluster.kubeconfig.as_deref()).await?;
    let url = config.cluster_url.to_string();
    let client = kube::Client::try_from(config.clone())
        .map_err(|e| ServeError::Cluster(format!("cannot build a client: {e}")))?;
    let version = client
        .apiserver_version()
        .await
        .map_err(|e| ServeError::Cluster(format!("cannot reach the API server at {url}: {e}")))?;
    tracing::info!(kubernetes = %version.git_version, identity = %cluster.identity, "enforcing against the cluster");
    // Before anything else touches libgit2: the fetcher makes it hermetic process-wide.
    let fetcher = Fetcher::new(&settings.git_cache_dir);
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(DesiredStore::new());
    let cache = DesiredCache::new(settings.desired_cache_bytes);
    let events = Events::new(client.clone(), Some(cluster.identity.clone()));
    // Denied and reverted edits also show as Events on the object, off the request path.
    // Signed digests: the key comes from the Secret the leader creates; each digest is also
    // anchored in this replica's ConfigMap.
    let audit_cluster = Arc::new(AuditCluster {
        client: client.clone(),
        namespace: cluster.lease_namespace.clone(),
        secret_name: settings.audit_signing.key_secret.clone(),
        keys_config_map: settings.audit_signing.keys_config_map.clone(),
        anchors_prefix: settings.audit_signing.anchors_prefix.clone(),
        replica: cluster.identity.clone(),
        api_timeout: cluster.api_timeout,
    });
    let signer = Arc::new(SignerSlot::default());
    let (on_digest, anchors) = anchor_channel();
    let chain = ChainSink::builder(settings.audit.clone())
        .dropped_counter(metrics.audit_dropped_counter())
        .file_metrics(metrics.audit_file_metrics())
        .replica(cluster.identity.clone())
        .signer(signer.clone())
        .on_digest(on_digest)
        .start()
        .map_err(ServeError::Audit)?;
    let chain = Arc::new(chain);
    let counted: Arc<dyn AuditSink> = Arc::new(CountingSink::new(chain.clone(), metrics.clone()));
    let audit: Arc<dyn AuditSink> = Arc::new(EventingSink::start(counted, events.clone()));
    let (signal, stop, skip_drain) = on_signals();
    let (leading_tx, leading) = watch::channel(false);
    // The Lease first: in self-managed mode the leader writes the certificate this replica
    // waits for before it can serve.
    let elector = LeaderElector::new(
        client.clone(),
        ElectionConfig::new(
            &cluster.lease_namespace,
            &cluster.lease_name,
            &cluster.identity,
            cluster.lease_duration,
        ),
    )
    .with_metrics(metrics.clone());
    let mut loops = vec![tokio::spawn(elector.run(leading_tx, stopped(stop.clone())))];
    let key_wake = Arc::new(Notify::new());
    loops.push(tokio::spawn(audit_cluster.clone().follow_key(
        signer,
        key_wake.clone(),
        stopped(stop.clone()),
    )));
    loops.push(tokio::spawn(audit_cluster.clone().maintain_key(
        leading.clone(),
        key_wake,
        KEY_CHECK_INTERVAL,
        stopped(stop.clone()),
    )));
    let anchoring = audit_cluster.clone();
    let anchors_seen = anchors.clone();
    let anchors_stop = stopped(stop.clone());
    loops.push(tokio::spawn(async move {
        anchoring.publish_anchors(anchors_seen, anchors_stop).await;
    }));
    let managed = match &settings.server.tls {
        TlsSource::Managed(managed) => {
            let serving = server::ServingCert::new(metrics.clone());
            let certs = Arc::new(managed_certs(
                managed,
                &cluster,
                client.clone(),
                audit.clone(),
                metrics.clone(),
            ));
            let wake = Arc::new(Notify::new());
            loops.push(tokio::spawn(certs.clone().follow(
                serving.clone(),
                wake.clone(),
                stopped(stop.clone()),
            )));
            loops.push(tokio::spawn(certs.clone().maintain(
                leading.clone(),
                wake,
                stopped(stop.clone()),
            )));
            if !first_certificate(&serving, &certs, stop.clone()).await {
                signal.abort();
                return Ok(());
            }
            Some(serving)
        }
        _ => None,
    };
    // HPA bounds for delegate rules with `fromHPA`, read by admission from memory.
    let hpa = crate::desired::HpaBounds::default();
    loops.push(tokio::spawn(super::hpa::follow(
        client.clone(),
        hpa.clone(),
        stopped(stop.clone()),
    )));
    let Started { bound, .. } = start(
        &settings,
        store.clone(),
        metrics.clone(),
        audit.clone(),
        managed,
        hpa.clone(),
    )
    .await?;

    // The enforcer judges delegated fields by the same HPA table.
    let applier = Applier::new(client.clone(), cluster.api_timeout)
        .await
        .map_err(|e| ServeError::Cluster(e.to_string()))?
        .with_hpa(hpa);
    let heal = SelfHeal::new(
        HealDeps {
            client: client.clone(),
            applier: applier.clone(),
            events: events.clone(),
            audit: audit.clone(),
            metrics: metrics.clone(),
            leading: leading.clone(),
        },
        cluster.self_heal,
    );
    let sources = SourceContext {
        client: client.clone(),
        fetcher: fetcher.clone(),
        metrics: metrics.clone(),
        audit: audit.clone(),
    };
    let mut ctx = Context::new(client.clone(), applier, cache.clone()).with_self_heal(heal);
    ctx.events = events;
    ctx.metrics = metrics.clone();
    ctx.fetcher = fetcher.clone();
    ctx.audit = audit.clone();
    ctx.tenancy = cluster.tenancy.clone();
    ctx.impersonator = crate::reconcile::tenancy::Impersonator::new(Some(config), client.clone());
    // One reviewer for the leader's reconciles and this replica's admission index.
    let access = ctx.access.clone();
    // Push receiver: any replica verifies hooks and annotates the GitSource; the leader's
    // GitSource controller fetches.
    let hooks = match settings.server.hooks_listen {
        Some(addr) => {
            let targets = Arc::new(KubeTargets::start(client.clone(), cluster.api_timeout));
            Some(start_receiver(addr, targets, metrics.clone(), stopped(stop.clone())).await?)
        }
        None => None,
    };
    loops.extend([
        tokio::spawn(run_sources(sources, leading.clone(), stopped(stop.clone()))),
        tokio::spawn(run_guards(ctx, leading, stopped(stop.clone()))),
        tokio::spawn(follow_applied(
            Follow {
                client,
                store,
                cache,
                fetcher,
                metrics,
                tenancy: cluster.tenancy.clone(),
                access,
            },
            stopped(stop.clone()),
        )),
    ]);
    // The loops stop at the first signal (the elector hands the Lease over at once) while the
    // webhook drains: admission needs no leader, only the desired state it already holds.
    let result = bound.run_until(stopped(stop), stopped(skip_drain)).await;
    signal.abort();
    join_receiver(hooks).await;
    let joined = tokio::time::timeout(LOOPS_GRACE, futures_util::future::join_all(loops)).await;
    if joined.is_err() {
        tracing::warn!("enforcement loops did not stop within {LOOPS_GRACE:?}");
    }
    // Every decision made before shutdown is on disk (and fsynced), and signed, before the
    // process exits; the final digest is anchored too.
    tokio::task::block_in_place(|| chain.digest_now());
    let last = anchors.borrow().clone();
    if let Some(anchor) = last
        && let Err(error) = audit_cluster.publish_anchor(&anchor).await
    {
        tracing::warn!(%error, "cannot anchor the final audit digest in the cluster");
    }
    Ok(result?)
}
