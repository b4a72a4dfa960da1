//! Graceful shutdown under load (issue 10): zero failed admission requests across a rolling
//! restart of two real `driftguard serve` processes behind one client.
//!
//! The client behaves like kube-apiserver calling a webhook Service whose endpoints follow
//! readiness: a prober per instance polls `/readyz` over HTTPS on a fresh connection (the
//! kubelet's probe plus the endpoints controller, with a period far below the drain delay) and
//! keeps the set of ready endpoints; workers send real AdmissionReviews from examples/reviews
//! without pause over kept-alive TLS connections (HTTP/1.1 and HTTP/2) to ready endpoints, never
//! retrying. Every request must come back 200 with its own uid and the expected decision.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use driftguard::certs::CertificateAuthority;
use hyper::client::conn::{http1, http2};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use serde_json::Value;
use support::https::{Body, answer, client_config, eventually, full, http1_over, send, tls_connect_with};
use support::process::{collect, serving_addr, sigterm, spawn_serve, wait_exit};
use support::{example_repo, root};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The servers' drain delay: far above the probe period, so the client has long dropped an
/// instance from its endpoints when it stops accepting, even on a loaded machine.
const DRAIN_DELAY: &str = "3s";
/// How often each instance is probed (a kubelet's periodSeconds, scaled down).
const PROBE_PERIOD: Duration = Duration::from_millis(50);
/// A probe that takes longer counts as not ready (the kubelet's timeoutSeconds).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// What a worker allows one review (kube-apiserver's webhook timeout, generous here).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Generous bound on start-up, readiness and exit of one instance.
const PROCESS_DEADLINE: Duration = Duration::from_secs(30);
/// Concurrent workers; the even ones speak HTTP/1.1, the odd ones HTTP/2.
const WORKERS: usize = 4;

// ---------------------------------------------------------------------------------------------
// The instances.

/// What the prober saw, consecutive repeats folded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Probe {
    Ready,
    /// 503 with this JSON error.
    NotReady(String),
    /// No TCP connection: the instance stopped accepting.
    Refused,
    /// Anything else (TLS failure, timeout, other status).
    Failed(String),
}

/// One instance as the client knows it: an endpoint.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    /// Reviews it answered correctly.
    served: AtomicUsize,
    /// uids of the reviews it denied, to compare with its audit log.
    denied: Mutex<BTreeSet<String>>,
    probes: Mutex<Vec<Probe>>,
}

impl Target {
    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    fn probes(&self) -> Vec<Probe> {
        self.probes.lock().unwrap().clone()
    }
}

/// A running `driftguard serve`; killed if the test fails before it stops it.
struct Instance {
    target: Arc<Target>,
    child: Child,
    logs: Option<std::thread::JoinHandle<Vec<String>>>,
    audit: Option<std::thread::JoinHandle<Vec<String>>>,
    prober: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How an instance ended.
struct Stopped {
    target: Arc<Target>,
    exit: std::process::ExitStatus,
    logs: Vec<String>,
    audit: Vec<String>,
}

/// Config of one instance in its own directory (its own Git cache, like a pod).
fn write_config(dir: &Path, tls: &Path, repo: &Path) -> PathBuf {
    let config = dir.join("driftguard.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
server:
  listen: 127.0.0.1:0
  metricsListen: null
  drainDelay: {DRAIN_DELAY}
  shutdownGrace: 10s
  tls: {{ certFile: {cert:?}, keyFile: {key:?} }}
gitCacheDir: git-cache
sources:
  - name: apps
    url: {repo:?}
    ref: {{ branch: main }}
guards:
  - name: example-app
    sourceRef: {{ name: apps }}
    path: examples/app
    mode: deny
"#,
            cert = tls.join("tls.crt").display().to_string(),
            key = tls.join("tls.key").display().to_string(),
            repo = repo.display().to_string(),
        ),
    )
    .unwrap();
    config
}

/// The client: probers keep `endpoints` (the ready targets) current; workers read it.
struct Client {
    config: Arc<ClientConfig>,
    endpoints: watch::Sender<Vec<Arc<Target>>>,
}

impl Client {
    /// Starts `driftguard serve` in `dir` and begins probing it.
    fn start(&self, name: &'static str, dir: &Path, tls: &Path, repo: &Path) -> Instance {
        std::fs::create_dir_all(dir).unwrap();
        let config = write_config(dir, tls, repo);
        let (child, stderr, audit) = spawn_serve(dir, &["--config".as_ref(), config.as_os_str()]);
        let addr = serving_addr(&stderr);
        let target = Arc::new(Target {
            name,
            addr,
            served: AtomicUsize::new(0),
            denied: Mutex::new(BTreeSet::new()),
            probes: Mutex::new(Vec::new()),
        });
        let (stop, stopped) = watch::channel(false);
        let prober = tokio::spawn(probe(
            target.clone(),
            self.config.clone(),
            self.endpoints.clone(),
            stopped,
        ));
        Instance {
            target,
            child,
            logs: Some(collect(stderr)),
            audit: Some(collect(audit)),
            prober: Some((stop, prober)),
        }
    }

    /// Resolves once the prober has put `target` in the endpoints.
    async fn until_ready(&self, target: &Target) {
        let mut endpoints = self.endpoints.subscribe();
        let ready = endpoints.wait_for(|set| set.iter().any(|t| t.addr == target.addr));
        tokio::time::timeout(PROCESS_DEADLINE, ready)
            .await
            .unwrap_or_else(|_| panic!("{} never became ready: {:?}", target.name, target.probes()))
            .unwrap();
    }
}

/// SIGTERM, then everything until the exit: the probes see the drain and the closed listener.
async fn terminate(mut instance: Instance) -> Stopped {
    sigterm(&instance.child);
    let exit = tokio::task::block_in_place(|| wait_exit(&mut instance.child, PROCESS_DEADLINE));
    let target = instance.target.clone();
    eventually("the prober to find the listener closed", || async {
        target.probes().contains(&Probe::Refused).then_some(())
    })
    .await;
    let (stop, prober) = instance.prober.take().unwrap();
    stop.send(true).unwrap();
    prober.await.unwrap();
    let logs = instance.logs.take().unwrap().join().unwrap();
    let audit = instance.audit.take().unwrap().join().unwrap();
    Stopped {
        target,
        exit,
        logs,
        audit,
    }
}

// ---------------------------------------------------------------------------------------------
// The prober: kubelet + endpoints controller.

async fn probe_once(addr: SocketAddr, config: Arc<ClientConfig>) -> Probe {
    let attempt = async {
        let tls = match tls_connect_with(addr, config).await {
            Ok(tls) => tls,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Probe::Refused,
            Err(e) => return Probe::Failed(format!("connect: {e}")),
        };
        let mut sender = http1_over(tls).await;
        match send(&mut sender, "GET", "/readyz", full("")).await {
            Ok(a) if a.status == StatusCode::OK => Probe::Ready,
            Ok(a) if a.status == StatusCode::SERVICE_UNAVAILABLE => Probe::NotReady(a.error_message()),
            Ok(a) => Probe::Failed(format!("{}: {}", a.status, a.body)),
            Err(e) => Probe::Failed(e.to_string()),
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Probe::Failed("probe timed out".to_owned()))
}

async fn probe(
    target: Arc<Target>,
    config: Arc<ClientConfig>,
    endpoints: watch::Sender<Vec<Arc<Target>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(PROBE_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticker.tick() => {}
        }
        let seen = probe_once(target.addr, config.clone()).await;
        let ready = seen == Probe::Ready;
        let mut probes = target.probes.lock().unwrap();
        if probes.last() != Some(&seen) {
            probes.push(seen);
            endpoints.send_modify(|set| {
                set.retain(|t| t.addr != target.addr);
                if ready {
                    set.push(target.clone());
                }
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The workers: kube-apiserver's webhook calls.

/// An AdmissionReview from examples/reviews and the decision the example app's Guard makes.
struct Review {
    json: Value,
    allowed: bool,
}

fn reviews() -> Vec<Review> {
    [
        ("scale-deployment.json", false),
        ("rollout-restart.json", true),
        ("delete-by-user.json", false),
    ]
    .into_iter()
    .map(|(file, allowed)| {
        let text = std::fs::read(root().join("examples/reviews").join(file)).unwrap();
        Review {
            json: serde_json::from_slice(&text).unwrap(),
            allowed,
        }
    })
    .collect()
}

/// A kept-alive connection of a worker.
enum Conn {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

impl Conn {
    async fn open(addr: SocketAddr, h2: bool, ca: &CertificateDer<'static>) -> std::io::Result<Self> {
        let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let tls = tls_connect_with(addr, client_config(ca, alpn, rustls::DEFAULT_VERSIONS)).await?;
        if h2 {
            let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(connection);
            Ok(Conn::H2(sender))
        } else {
            Ok(Conn::H1(http1_over(tls).await))
        }
    }

    /// Whether the connection can take another request; a pool drops it otherwise (the server
    /// closed it, or said `Connection: close`).
    async fn usable(&mut self) -> bool {
        match self {
            Conn::H1(sender) => sender.ready().await.is_ok(),
            Conn::H2(sender) => sender.ready().await.is_ok(),
        }
    }

    async fn review(&mut self, body: Vec<u8>) -> Result<(StatusCode, String), String> {
        let response = match self {
            Conn::H1(sender) => {
                let request = Request::builder()
                    .method("POST")
                    .uri("/validate?timeout=20s")
                    .header("host", "localhost")
                    .header("content-type", "application/json")
                    .body(full(body))
                    .unwrap();
                sender.send_request(request).await
            }
            Conn::H2(sender) => {
                let request = Request::builder()
                    .method("POST")
                    .uri("https://localhost/validate?timeout=20s")
                    .header("content-type", "application/json")
                    .body(full(body))
                    .unwrap();
                sender.send_request(request).await
            }
        }
        .map_err(|e| format!("send: {e}"))?;
        let answer = answer(response).await.map_err(|e| format!("read: {e}"))?;
        Ok((answer.status, answer.body))
    }
}

#[derive(Default)]
struct Tally {
    sent: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, failure: String) {
        self.failures.lock().unwrap().push(failure);
    }
}

/// Sends reviews without pause to the ready endpoints, round robin, until `stop`.
async fn worker(
    id: usize,
    ca: CertificateDer<'static>,
    mut endpoints: watch::Receiver<Vec<Arc<Target>>>,
    reviews: Arc<Vec<Review>>,
    tally: Arc<Tally>,
    mut stop: watch::Receiver<bool>,
) {
    let h2 = id % 2 == 1;
    let mut pool: HashMap<SocketAddr, Conn> = HashMap::new();
    let mut n = 0usize;
    while !*stop.borrow() {
        let target = {
            let ready = endpoints.borrow_and_update();
            (!ready.is_empty()).then(|| ready[(id + n) % ready.len()].clone())
        };
        let Some(target) = target else {
            tokio::select! {
                _ = endpoints.changed() => {}
                _ = stop.changed() => {}
            }
            continue;
        };
        n += 1;
        let review = &reviews[n % reviews.len()];
        let uid = format!("worker-{id}-review-{n}");
        let mut json = review.json.clone();
        json["request"]["uid"] = Value::from(uid.as_str());
        let body = serde_json::to_vec(&json).unwrap();
        tally.sent.fetch_add(1, Ordering::SeqCst);

        let reusable = match pool.get_mut(&target.addr) {
            Some(conn) => conn.usable().await,
            None => false,
        };
        if !reusable {
            match Conn::open(target.addr, h2, &ca).await {
                Ok(conn) => {
                    pool.insert(target.addr, conn);
                }
                Err(e) => {
                    tally.fail(format!("{} {uid}: connect: {e}", target.name));
                    continue;
                }
            }
        }
        let conn = pool.get_mut(&target.addr).unwrap();
        let (status, body) = match tokio::time::timeout(REQUEST_TIMEOUT, conn.review(body)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                pool.remove(&target.addr);
                tally.fail(format!("{} {uid}: {e}", target.name));
                continue;
            }
            Err(_) => {
                pool.remove(&target.addr);
                tally.fail(format!("{} {uid}: no answer within {REQUEST_TIMEOUT:?}", target.name));
                continue;
            }
        };
        let decided: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let response = &decided["response"];
        if status != StatusCode::OK || response["uid"] != uid.as_str() || response["allowed"] != review.allowed {
            tally.fail(format!("{} {uid}: {status} {body}", target.name));
            continue;
        }
        if !review.allowed {
            target.denied.lock().unwrap().insert(uid);
        }
        target.served.fetch_add(1, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// The test.

/// The phases of a graceful stop, in order, in the instance's log.
fn assert_logged_shutdown(stopped: &Stopped) {
    let mut at = 0;
    for phase in [
        "received SIGTERM",
        "draining: /readyz answers 503",
        "drain delay over",
        "stopped accepting",
        "server stopped",
    ] {
        let found = stopped.logs[at..].iter().position(|l| l.contains(phase));
        let Some(found) = found else {
            panic!(
                "{}: no {phase:?} after line {at} of its log:\n{}",
                stopped.target.name,
                stopped.logs.join("\n")
            );
        };
        at += found + 1;
    }
}

/// What the client saw of a stopped instance: ready, then not ready because it is shutting
/// down, and only after that no listener.
fn assert_probed_drain_before_close(target: &Target) {
    let probes = target.probes();
    let ready = probes.iter().position(|p| *p == Probe::Ready);
    let draining = probes
        .iter()
        .position(|p| matches!(p, Probe::NotReady(reason) if reason.contains("shutting down")));
    let refused = probes.iter().position(|p| *p == Probe::Refused);
    assert!(
        matches!((ready, draining, refused), (Some(r), Some(d), Some(c)) if r < d && d < c),
        "{}: the client must see it ready, then draining, then closed: {probes:?}",
        target.name
    );
}

/// Denials are audited: the instance's audit log holds exactly the denials the client got
/// from it.
fn assert_audited_denials(stopped: &Stopped) {
    let audited: BTreeSet<String> = stopped
        .audit
        .iter()
        .filter(|line| line.contains("admission.denied"))
        .map(|line| {
            let event: Value = serde_json::from_str(line).unwrap();
            event["request_uid"].as_str().unwrap().to_owned()
        })
        .collect();
    let denied = stopped.target.denied.lock().unwrap().clone();
    assert!(!denied.is_empty(), "{} denied nothing", stopped.target.name);
    assert!(
        audited == denied,
        "{}: {} denials answered, {} audited; answered but not audited: {:?}; audited but not answered: {:?}",
        stopped.target.name,
        denied.len(),
        audited.len(),
        denied.difference(&audited).take(5).collect::<Vec<_>>(),
        audited.difference(&denied).take(5).collect::<Vec<_>>(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_load_fails_no_admission_request() {
    let (repo, _) = example_repo();
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let ca = CertificateAuthority::generate("driftguard shutdown test CA").unwrap();
    let issued = ca
        .issue_serving(
            &["localhost".to_owned(), "127.0.0.1".to_owned()],
            Duration::from_secs(3600),
        )
        .unwrap();
    std::fs::write(tls.join("tls.crt"), &issued.cert_pem).unwrap();
    std::fs::write(tls.join("tls.key"), &issued.key_pem).unwrap();
    let ca = ca.cert_der().clone();
    let client = Client {
        config: client_config(&ca, &[b"http/1.1"], rustls::DEFAULT_VERSIONS),
        endpoints: watch::channel(Vec::new()).0,
    };
    let start = |name: &'static str| client.start(name, &dir.path().join(name), &tls, repo.path());

    let a = start("a");
    let b = start("b");
    client.until_ready(&a.target).await;
    client.until_ready(&b.target).await;

    let tally = Arc::new(Tally::default());
    let reviews = Arc::new(reviews());
    let (stop_workers, workers_stop) = watch::channel(false);
    let workers: Vec<_> = (0..WORKERS)
        .map(|id| {
            tokio::spawn(worker(
                id,
                ca.clone(),
                client.endpoints.subscribe(),
                reviews.clone(),
                tally.clone(),
                workers_stop.clone(),
            ))
        })
        .collect();
    let serving = |target: Arc<Target>| async move {
        eventually(&format!("{} to answer reviews", target.name), || async {
            (target.served() > 0).then_some(())
        })
        .await;
    };
    serving(a.target.clone()).await;
    serving(b.target.clone()).await;

    // The rolling restart: one instance at a time goes, and its replacement is ready before
    // the next one goes.
    let mut stopped = Vec::new();
    let mut replacements = Vec::new();
    for (old, new_name) in [(a, "a2"), (b, "b2")] {
        stopped.push(terminate(old).await);
        let new = start(new_name);
        client.until_ready(&new.target).await;
        serving(new.target.clone()).await;
        replacements.push(new);
    }

    stop_workers.send(true).unwrap();
    for worker in workers {
        worker.await.unwrap();
    }
    for new in replacements {
        stopped.push(terminate(new).await);
    }

    let failures = tally.failures.lock().unwrap().clone();
    let sent = tally.sent.load(Ordering::SeqCst);
    let served: Vec<(&str, usize)> = stopped.iter().map(|s| (s.target.name, s.target.served())).collect();
    eprintln!("{sent} reviews sent, served by {served:?}; {} failed", failures.len());
    assert!(
        failures.is_empty(),
        "{} of {sent} reviews failed, e.g.:\n{}",
        failures.len(),
        failures.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
    assert_eq!(served.iter().map(|(_, n)| n).sum::<usize>(), sent);
    for stop in &stopped {
        assert!(stop.target.served() > 0, "{} served nothing", stop.target.name);
        assert!(
            stop.exit.success(),
            "{} exited with {:?} after SIGTERM; log:\n{}",
            stop.target.name,
            stop.exit,
            stop.logs.join("\n")
        );
        assert_logged_shutdown(stop);
        assert_probed_drain_before_close(&stop.target);
        assert_audited_denials(stop);
    }
}
