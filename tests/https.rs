//! The admission server end to end: real TLS on loopback, certificates generated at run time
//! into temporary directories, clients that trust only the generated CA.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

mod support;

use support::https::*;

use driftguard::admission::{Admit, Reply, Webhook};
use driftguard::certs::{CertificateAuthority, IssuedCert, parse_cert_chain};
use driftguard::server::{ServerError, ServerOptions, bind};
use driftguard::telemetry::Metrics;
use http_body_util::BodyExt as _;
use hyper::body::Bytes;
use hyper::client::conn::{http1, http2};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

const HOUR: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------------------------
// Test admission: answers a fixed review shape; can be held until released.

/// Blocks `admit` until opened, and says when a request reached it.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
    entered: Notify,
    /// Hold only reviews with exactly this body (`None`: every review).
    only: Option<&'static [u8]>,
}

impl Gate {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

#[derive(Default)]
struct TestAdmit {
    ready: AtomicBool,
    gate: Option<Arc<Gate>>,
}

impl TestAdmit {
    fn ready() -> Arc<Self> {
        Arc::new(Self {
            ready: AtomicBool::new(true),
            gate: None,
        })
    }
}

impl Admit for TestAdmit {
    fn admit(&self, webhook: Webhook, body: &[u8]) -> Reply {
        if let Some(gate) = self.gate.as_ref().filter(|g| g.only.is_none_or(|only| only == body)) {
            gate.entered.notify_one();
            let mut open = gate.open.lock().unwrap();
            while !*open {
                open = gate.opened.wait(open).unwrap();
            }
        }
        Reply {
            status: 200,
            body: format!(r#"{{"webhook":"{}","received":{}}}"#, webhook.as_str(), body.len()).into_bytes(),
            operation: "UPDATE",
            decision: "allowed",
        }
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates in a kubelet-style Secret volume.

fn hosts() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}

fn leaf_der(issued: &IssuedCert) -> CertificateDer<'static> {
    parse_cert_chain(issued.cert_pem.as_bytes(), "test").unwrap().remove(0)
}

/// What the kubelet does for a mounted Secret: files live in a timestamped directory,
/// `..data` points at it, `tls.crt -> ..data/tls.crt`; an update writes a new directory, and
/// renames a fresh `..data` symlink over the old one, then removes the old directory.
struct SecretVolume {
    dir: PathBuf,
    current: Option<String>,
    generation: u32,
}

impl SecretVolume {
    fn new(dir: &Path, issued: &IssuedCert) -> Self {
        let mut volume = Self {
            dir: dir.to_path_buf(),
            current: None,
            generation: 0,
        };
        volume.publish(issued);
        std::os::unix::fs::symlink("..data/tls.crt", volume.cert()).unwrap();
        std::os::unix::fs::symlink("..data/tls.key", volume.key()).unwrap();
        volume
    }

    fn publish(&mut self, issued: &IssuedCert) {
        self.generation += 1;
        let stamp = format!("..2026_01_01_00_00_{:02}.{}", self.generation, 4000 + self.generation);
        let data = self.dir.join(&stamp);
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("tls.crt"), &issued.cert_pem).unwrap();
        std::fs::write(data.join("tls.key"), &issued.key_pem).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&stamp, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if let Some(old) = self.current.replace(stamp) {
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }
}

// ---------------------------------------------------------------------------------------------
// Server under test.

struct Running {
    /// Where the server records certificate rotations.
    audit: Arc<driftguard::audit::MemorySink>,
    https: SocketAddr,
    metrics: SocketAddr,
    registry: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    skip_drain: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Running {
    /// What the first SIGTERM does.
    fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).unwrap();
        }
    }

    /// What a second SIGTERM does.
    fn skip_drain(&mut self) {
        if let Some(skip) = self.skip_drain.take() {
            skip.send(()).unwrap();
        }
    }

    async fn stop(mut self) {
        self.begin_shutdown();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("run() returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

async fn start(admit: Arc<dyn Admit>, volume: &SecretVolume, tweak: impl FnOnce(&mut ServerOptions)) -> Running {
    let mut opts = ServerOptions::new(volume.cert(), volume.key());
    opts.listen = "127.0.0.1:0".parse().unwrap();
    opts.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    opts.reload_interval = Duration::from_millis(50);
    // Tests of the drain set their own; the others stop at once.
    opts.drain_delay = Duration::ZERO;
    tweak(&mut opts);
    let registry = Arc::new(Metrics::new());
    let mut server = bind(opts, admit, registry.clone()).await.unwrap();
    let audit = Arc::new(driftguard::audit::MemorySink::new());
    server.record_rotations(audit.clone());
    let https = server.https_addr();
    let metrics = server.metrics_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let (skip_drain, skipped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(
        async move {
            let _ = stopped.await;
        },
        async move {
            // A dropped sender is not a second signal.
            if skipped.await.is_err() {
                std::future::pending::<()>().await;
            }
        },
    ));
    Running {
        audit,
        https,
        metrics,
        registry,
        stop: Some(stop),
        skip_drain: Some(skip_drain),
        task,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    ca: CertificateAuthority,
    issued: IssuedCert,
    volume: SecretVolume,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::generate("driftguard test CA").unwrap();
    let issued = ca.issue_serving(&hosts(), HOUR).unwrap();
    let volume = SecretVolume::new(dir.path(), &issued);
    Fixture {
        _dir: dir,
        ca,
        issued,
        volume,
    }
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_clients_that_trust_only_the_generated_ca() {
    let f = fixture();
    let server = start(TestAdmit::ready(), &f.volume, |_| {}).await;

    let tls = tls_connect(server.https, f.ca.cert_der()).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(presented_leaf(&tls), leaf_der(&f.issued));
    let mut sender = http1_over(tls).await;
    let answer = send(&mut sender, "POST", "/validate", full(r#"{"kind":"AdmissionReview"}"#))
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type, "application/json");
    assert_eq!(answer.body, r#"{"webhook":"validate","received":26}"#);

    let other = CertificateAuthority::generate("some other CA").unwrap();
    let error = tls_connect(server.https, other.cert_der()).await.unwrap_err();
    let tls_error = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("not a TLS error: {error}"));
    assert!(
        matches!(tls_error, rustls::Error::InvalidCertificate(_)),
        "{tls_error:?}"
    );

    // The kept-alive connection and new ones still work after the failed handshake.
    let answer = send(&mut sender, "POST", "/mutate", full("{}")).await.unwrap();
    assert_eq!(answer.body, r#"{"webhook":"mutate","received":2}"#);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiates_h2_and_accepts_tls12_and_tls13() {
    let f = fixture();
    let server = start(TestAdmit::ready(), &f.volume, |_| {}).await;

    let config = client_config(f.ca.cert_der(), &[b"h2", b"http/1.1"], rustls::DEFAULT_VERSIONS);
    let tls = tls_connect_with(server.https, config).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let (mut sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(connection);
    let request = Request::builder()
        .method("POST")
        .uri("https://localhost/mutate")
        .body(full("{}"))
        .unwrap();
    let answer = answer(sender.send_request(request).await.unwrap()).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, r#"{"webhook":"mutate","received":2}"#);

    let config = client_config(f.ca.cert_der(), &[b"http/1.1"], &[&rustls::version::TLS12]);
    let tls = tls_connect_with(server.https, config).await.unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let answer = send(&mut http1_over(tls).await, "GET", "/healthz", empty())
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotates_on_a_kubelet_symlink_swap_without_dropping_open_connections() {
    let mut f = fixture();
    let server = start(TestAdmit::ready(), &f.volume, |_| {}).await;

    let tls = tls_connect(server.https, f.ca.cert_der()).await.unwrap();
    assert_eq!(presented_leaf(&tls), leaf_der(&f.issued));
    let mut kept_alive = http1_over(tls).await;
    let answer = send(&mut kept_alive, "POST", "/validate", full("{}")).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);

    let new_ca = CertificateAuthority::generate("rotated test CA").unwrap();
    let new_issued = new_ca.issue_serving(&hosts(), HOUR).unwrap();
    f.volume.publish(&new_issued);

    let presented = eventually("a handshake with the rotated certificate", || async {
        tls_connect(server.https, new_ca.cert_der())
            .await
            .ok()
            .map(|tls| presented_leaf(&tls))
    })
    .await;
    assert_eq!(presented, leaf_der(&new_issued));
    // New handshakes no longer get the old certificate...
    assert!(tls_connect(server.https, f.ca.cert_der()).await.is_err());
    // ...while the connection opened before the swap keeps working.
    let answer = send(&mut kept_alive, "POST", "/validate", full("{}")).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);

    // A second rotation (same CA, new serial) is picked up as well.
    let third = new_ca.issue_serving(&hosts(), HOUR).unwrap();
    f.volume.publish(&third);
    eventually("a handshake with the second rotation", || async {
        let tls = tls_connect(server.https, new_ca.cert_der()).await.ok()?;
        (presented_leaf(&tls) == leaf_der(&third)).then_some(())
    })
    .await;
    // Each rotation is an audit record naming the new certificate.
    let rotations: Vec<String> = server
        .audit
        .events()
        .into_iter()
        .filter(|e| e.event == driftguard::audit::EventKind::CertificateRotated)
        .map(|e| e.message)
        .collect();
    assert_eq!(rotations.len(), 2, "{rotations:?}");
    assert!(
        rotations
            .iter()
            .all(|m| m.contains("serial") && m.contains("valid until")),
        "{rotations:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_certificate_written_in_place_keeps_the_old_one_in_service() {
    let f = fixture();
    let server = start(TestAdmit::ready(), &f.volume, |_| {}).await;
    let mut kept_alive = connect(server.https, f.ca.cert_der()).await;

    // Written through the symlinks, in place, as a careless `cp` or editor would.
    std::fs::write(f.volume.cert(), b"-----BEGIN CERTIFICATE-----\nnot base64 !!\n").unwrap();
    eventually("the broken file to be seen and rejected", || async {
        scrape(server.metrics)
            .await
            .contains(r#"driftguard_certificate_reloads_total{result="rejected"} 1"#)
            .then_some(())
    })
    .await;

    let tls = tls_connect(server.https, f.ca.cert_der()).await.unwrap();
    assert_eq!(presented_leaf(&tls), leaf_der(&f.issued));
    let answer = send(&mut http1_over(tls).await, "POST", "/validate", full("{}"))
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    let answer = send(&mut kept_alive, "POST", "/validate", full("{}")).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_a_json_413_and_the_server_keeps_serving() {
    let f = fixture();
    // A 1 MiB limit keeps the lingering drain of the rejected rest well inside its 5 s bound
    // even on a loaded 2-core machine (10 MiB through debug-build TLS sometimes was not).
    const LIMIT: usize = 1024 * 1024;
    let server = start(TestAdmit::ready(), &f.volume, |o| o.max_body_bytes = LIMIT).await;
    let oversized = LIMIT + LIMIT / 4;

    // With a Content-Length, rejected before reading...
    let mut sender = connect(server.https, f.ca.cert_der()).await;
    let answer = send(&mut sender, "POST", "/validate", full(vec![b' '; oversized]))
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    let message = answer.error_message();
    assert!(message.contains("1048576 bytes"), "{message}");
    // The rest of the body was drained rather than reset, so the connection stays usable.
    let answer = send(&mut sender, "POST", "/validate", full("{}")).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);

    // ...and chunked, rejected once the limit is crossed.
    let mut sender = connect(server.https, f.ca.cert_der()).await;
    let chunks = (0..10).map(|_| Bytes::from(vec![b' '; LIMIT / 8])).collect();
    let answer = send(&mut sender, "POST", "/mutate", Chunked(chunks).boxed())
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(answer.error_message().contains("1048576 bytes"));

    // A body just under the limit is fine, and the server is still serving.
    let mut sender = connect(server.https, f.ca.cert_der()).await;
    let answer = send(&mut sender, "POST", "/validate", full(vec![b' '; LIMIT]))
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, r#"{"webhook":"validate","received":1048576}"#);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_metrics_and_json_errors() {
    let f = fixture();
    let admit = Arc::new(TestAdmit::default());
    let server = start(admit.clone(), &f.volume, |_| {}).await;
    let mut sender = connect(server.https, f.ca.cert_der()).await;

    let health = send(&mut sender, "GET", "/healthz", empty()).await.unwrap();
    assert_eq!((health.status, health.body.as_str()), (StatusCode::OK, "ok"));
    let ready = send(&mut sender, "GET", "/readyz", empty()).await.unwrap();
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    admit.ready.store(true, Ordering::SeqCst);
    let ready = send(&mut sender, "GET", "/readyz", empty()).await.unwrap();
    assert_eq!(ready.status, StatusCode::OK);

    let wrong_method = send(&mut sender, "GET", "/validate", empty()).await.unwrap();
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(wrong_method.error_message().contains("GET"));
    let unknown = send(&mut sender, "POST", "/nope", full("{}")).await.unwrap();
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.error_message().contains("/nope"));

    let answer = send(&mut sender, "POST", "/validate", full("{}")).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    // Families without samples are left out of the exposition; the desired-state loader sets
    // this one per Guard.
    server.registry.set_desired_objects("team-a/web", 3);
    let text = scrape(server.metrics).await;
    for expected in [
        r#"driftguard_admission_requests_total{webhook="validate",operation="UPDATE",decision="allowed"} 1"#,
        "driftguard_admission_duration_seconds_count 1",
        r#"driftguard_desired_objects{guard="team-a/web"} 3"#,
        "driftguard_certificate_expiry_timestamp_seconds ",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    // Metrics are not on the webhook port.
    let on_https = send(&mut sender, "GET", "/metrics", empty()).await.unwrap();
    assert_eq!(on_https.status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_garbage_handshakes_do_not_hold_or_break_the_server() {
    let f = fixture();
    let server = start(TestAdmit::ready(), &f.volume, |opts| {
        opts.tls_handshake_timeout = Duration::from_millis(200);
    })
    .await;

    // A client that connects and says nothing is disconnected after the handshake timeout.
    let mut silent = TcpStream::connect(server.https).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(DEADLINE, silent.read(&mut buf))
        .await
        .expect("the server closes a silent connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // Plain HTTP on the TLS port fails the handshake and nothing else.
    let mut plain = TcpStream::connect(server.https).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let _ = tokio::time::timeout(DEADLINE, plain.read(&mut buf)).await.unwrap();

    let answer = send(
        &mut connect(server.https, f.ca.cert_der()).await,
        "GET",
        "/healthz",
        empty(),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_lets_the_in_flight_request_finish() {
    let f = fixture();
    let gate = Arc::new(Gate::default());
    let admit = Arc::new(TestAdmit {
        ready: AtomicBool::new(true),
        gate: Some(gate.clone()),
    });
    // A grace far longer than the test deadline: run() must return because the connections
    // finish, not because the grace ran out. A short drain that ends on its own comes first.
    let mut server = start(admit, &f.volume, |opts| {
        opts.shutdown_grace = Duration::from_secs(60);
        opts.drain_delay = Duration::from_millis(200);
    })
    .await;

    // An idle kept-alive connection...
    let mut idle = connect(server.https, f.ca.cert_der()).await;
    let answer = send(&mut idle, "GET", "/healthz", empty()).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    // ...and a request held inside admit.
    let mut busy = connect(server.https, f.ca.cert_der()).await;
    let in_flight = tokio::spawn(async move { send(&mut busy, "POST", "/validate", full("{}")).await });
    tokio::time::timeout(DEADLINE, gate.entered.notified())
        .await
        .expect("the request reaches admit");

    server.begin_shutdown();
    let https = server.https;
    eventually("the listener to close", || async {
        TcpStream::connect(https).await.is_err().then_some(())
    })
    .await;
    assert!(!in_flight.is_finished());

    gate.open();
    let answer = tokio::time::timeout(DEADLINE, in_flight)
        .await
        .expect("the in-flight request completes")
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, r#"{"webhook":"validate","received":2}"#);

    tokio::time::timeout(DEADLINE, server.task)
        .await
        .expect("run() returns once connections are done")
        .unwrap()
        .unwrap();
    assert!(send(&mut idle, "GET", "/healthz", empty()).await.is_err());
}

/// A review on `sender`, with the answer's `Connection` header.
async fn review_seeing_connection(
    sender: &mut http1::SendRequest<Body>,
    body: &'static [u8],
) -> (Option<String>, Answer) {
    sender.ready().await.unwrap();
    let request = Request::builder()
        .method("POST")
        .uri("/validate")
        .header("host", "localhost")
        .body(full(body))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let connection = response
        .headers()
        .get("connection")
        .map(|v| v.to_str().unwrap().to_owned());
    (connection, answer(response).await.unwrap())
}

/// The drain (what Kubernetes needs between SIGTERM and the endpoints dropping the pod):
/// `/readyz` turns 503 at once with a JSON reason, while reviews are still answered, on kept-alive
/// connections and on new ones; HTTP/1.1 answers now say `Connection: close` so clients move
/// to another replica. When the drain ends (here: a second signal; the delay itself is the
/// longest allowed) the listener closes, HTTP/2 connections get GOAWAY, and a review in flight
/// still finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_drain_reports_not_ready_and_keeps_serving_until_the_close() {
    const HOLD: &[u8] = b"hold";
    let f = fixture();
    let gate = Arc::new(Gate {
        only: Some(HOLD),
        ..Gate::default()
    });
    let admit = Arc::new(TestAdmit {
        ready: AtomicBool::new(true),
        gate: Some(gate.clone()),
    });
    let mut server = start(admit, &f.volume, |opts| {
        opts.drain_delay = driftguard::server::MAX_DRAIN_DELAY;
        opts.shutdown_grace = Duration::from_secs(60);
    })
    .await;
    let (https, ca) = (server.https, f.ca.cert_der().clone());
    let readyz = || async {
        let mut fresh = connect(https, &ca).await;
        send(&mut fresh, "GET", "/readyz", empty()).await.unwrap()
    };
    assert_eq!(readyz().await.status, StatusCode::OK);

    // Kept-alive connections of both protocols, opened before shutdown.
    let mut kept = connect(server.https, f.ca.cert_der()).await;
    let (connection, reply) = review_seeing_connection(&mut kept, b"{}").await;
    assert_eq!((reply.status, connection), (StatusCode::OK, None));
    let h2_config = client_config(f.ca.cert_der(), &[b"h2"], rustls::DEFAULT_VERSIONS);
    let tls = tls_connect_with(server.https, h2_config).await.unwrap();
    let (mut h2, h2_connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    let h2_connection = tokio::spawn(h2_connection);
    let mut h2_review = async move || {
        let request = Request::builder()
            .method("POST")
            .uri("https://localhost/mutate")
            .body(full("{}"))
            .unwrap();
        answer(h2.send_request(request).await.unwrap()).await.unwrap()
    };
    assert_eq!(h2_review().await.status, StatusCode::OK);

    server.begin_shutdown();
    let not_ready = eventually("/readyz to report the drain", || async {
        let reply = readyz().await;
        (reply.status == StatusCode::SERVICE_UNAVAILABLE).then_some(reply)
    })
    .await;
    assert!(
        not_ready.error_message().contains("shutting down"),
        "{}",
        not_ready.body
    );
    // Everything else is still served. The kept-alive HTTP/1.1 connection gets its answer and
    // is told to go.
    let (connection, reply) = review_seeing_connection(&mut kept, b"{}").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, r#"{"webhook":"validate","received":2}"#)
    );
    assert_eq!(connection.as_deref(), Some("close"));
    eventually("the told HTTP/1.1 connection to close", || async {
        kept.is_closed().then_some(())
    })
    .await;
    // HTTP/2 stays open until the close.
    let reply = h2_review().await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, r#"{"webhook":"mutate","received":2}"#)
    );
    // New connections are still accepted.
    let mut fresh = connect(server.https, f.ca.cert_der()).await;
    let (connection, reply) = review_seeing_connection(&mut fresh, b"{}").await;
    assert_eq!((reply.status, connection.as_deref()), (StatusCode::OK, Some("close")));
    assert_eq!(readyz().await.status, StatusCode::SERVICE_UNAVAILABLE);
    // A review that will still be running when the drain ends.
    let mut busy = connect(server.https, f.ca.cert_der()).await;
    let in_flight = tokio::spawn(async move { review_seeing_connection(&mut busy, HOLD).await });
    tokio::time::timeout(DEADLINE, gate.entered.notified())
        .await
        .expect("the held review reaches admit");
    assert!(
        !h2_connection.is_finished() && !server.task.is_finished(),
        "still draining"
    );

    // The close: no new connections, the idle HTTP/2 connection ends (GOAWAY).
    server.skip_drain();
    eventually("the listener to close", || async {
        TcpStream::connect(https).await.is_err().then_some(())
    })
    .await;
    tokio::time::timeout(DEADLINE, h2_connection)
        .await
        .expect("the idle HTTP/2 connection ends")
        .unwrap()
        .unwrap();
    assert!(!in_flight.is_finished());

    // The review in flight finishes.
    gate.open();
    let (connection, reply) = tokio::time::timeout(DEADLINE, in_flight)
        .await
        .expect("the in-flight review completes")
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, r#"{"webhook":"validate","received":4}"#);
    assert_eq!(connection.as_deref(), Some("close"));
    tokio::time::timeout(DEADLINE, server.task)
        .await
        .expect("run() returns once connections are done")
        .unwrap()
        .unwrap();
}

/// Overload: with every slot taken, further reviews are refused at once with a JSON 503 (the
/// API server then applies its failurePolicy) instead of queueing past its timeout; the held
/// review still completes, and the refusals are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overload_is_refused_at_once_with_503_and_the_held_review_completes() {
    const REFUSED: usize = 16;
    let f = fixture();
    let gate = Arc::new(Gate::default());
    let admit = Arc::new(TestAdmit {
        ready: AtomicBool::new(true),
        gate: Some(gate.clone()),
    });
    let server = start(admit, &f.volume, |opts| {
        opts.max_in_flight = 1;
        opts.in_flight_wait = Duration::from_millis(50);
    })
    .await;
    let mut busy = connect(server.https, f.ca.cert_der()).await;
    let held = tokio::spawn(async move { send(&mut busy, "POST", "/validate?timeout=3s", full("{}")).await });
    tokio::time::timeout(DEADLINE, gate.entered.notified())
        .await
        .expect("the first review reaches admit");

    let mut refused = Vec::new();
    for _ in 0..REFUSED {
        let (addr, ca) = (server.https, f.ca.cert_der().clone());
        refused.push(tokio::spawn(async move {
            let mut sender = connect(addr, &ca).await;
            let sent = tokio::time::Instant::now();
            let answer = send(&mut sender, "POST", "/validate?timeout=3s", full("{}"))
                .await
                .unwrap();
            (answer, sent.elapsed())
        }));
    }
    let mut slowest = Duration::ZERO;
    for task in refused {
        let (answer, took) = tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.body);
        assert!(answer.body.contains("\"error\""), "{}", answer.body);
        slowest = slowest.max(took);
    }
    // The bound is the 50 ms slot wait; a whole second leaves room for a loaded CI machine
    // while staying far below the API server's 3 s.
    assert!(slowest < Duration::from_secs(1), "a refusal took {slowest:?}");

    gate.open();
    let answer = tokio::time::timeout(DEADLINE, held).await.unwrap().unwrap().unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    let text = server.registry.encode().unwrap();
    assert!(
        text.contains(&format!(r#"decision="overloaded"}} {REFUSED}"#)),
        "{text}"
    );
    server.stop().await;
}

/// A review whose body stalls is cut off at the deadline the API server's `?timeout=` implies
/// (here 1 s, so 0.8 s), long before the 30 s body limit, with a JSON 408, and its slot is
/// freed for the next review.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_cut_off_within_the_api_servers_timeout() {
    let f = fixture();
    let server = start(TestAdmit::ready(), &f.volume, |opts| {
        opts.max_in_flight = 1;
    })
    .await;
    let mut tls = tls_connect(server.https, f.ca.cert_der()).await.unwrap();
    let sent = tokio::time::Instant::now();
    tls.write_all(
        b"POST /validate?timeout=1s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"apiVersion\"",
    )
    .await
    .unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&response).contains("}") {
        let n = tokio::time::timeout(DEADLINE, tls.read(&mut buf))
            .await
            .expect("an answer before the test deadline")
            .unwrap();
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
    }
    let took = sent.elapsed();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("not received within"), "{text}");
    assert!(
        took < Duration::from_secs(3),
        "the deadline is the API server's, not 30 s: {took:?}"
    );
    // The slot is free again.
    let mut sender = connect(server.https, f.ca.cert_der()).await;
    let answer = send(&mut sender, "POST", "/validate", full("{}")).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn bind_names_the_missing_or_invalid_certificate_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ServerOptions::new(dir.path().join("missing.crt"), dir.path().join("missing.key"));
    opts.listen = "127.0.0.1:0".parse().unwrap();
    opts.metrics_listen = None;
    let error = bind(opts.clone(), TestAdmit::ready(), Arc::new(Metrics::new()))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("missing.crt"), "{error}");

    std::fs::write(dir.path().join("missing.crt"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("missing.key"), "not a key").unwrap();
    let error = bind(opts, TestAdmit::ready(), Arc::new(Metrics::new()))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ServerError::Certificate(_)) && error.to_string().contains("missing.crt"),
        "{error}"
    );
}

/// Caller authentication: with a client CA, reviews are answered only over connections whose
/// client presented a certificate from it (401 JSON otherwise, counted); a certificate from
/// another CA fails the handshake; probes stay open to callers without one (the kubelet
/// presents none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_only_its_callers_get_reviews_answered() {
    let f = fixture();
    let callers = CertificateAuthority::generate("kube-apiserver webhook clients").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, callers.cert_pem()).unwrap();
    let server = start(TestAdmit::ready(), &f.volume, |opts| {
        opts.client_ca_file = Some(ca_file.clone());
    })
    .await;

    // No certificate: the probes answer, both webhooks refuse with a reason.
    let mut anonymous = connect(server.https, f.ca.cert_der()).await;
    let ready = send(&mut anonymous, "GET", "/readyz", empty()).await.unwrap();
    assert_eq!(ready.status, StatusCode::OK);
    for path in ["/validate", "/mutate"] {
        let refused = send(&mut anonymous, "POST", path, full("{}")).await.unwrap();
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(
            refused.error_message().contains("client certificate"),
            "{}",
            refused.body
        );
    }

    // kube-apiserver's certificate from the client CA: answered.
    let apiserver = callers.issue_client("kube-apiserver", HOUR).unwrap();
    let tls = tls_connect_with(server.https, client_config_as(f.ca.cert_der(), &apiserver))
        .await
        .unwrap();
    let mut trusted = http1_over(tls).await;
    let answer = send(&mut trusted, "POST", "/validate", full("{}")).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body, r#"{"webhook":"validate","received":2}"#);

    // A client certificate from another CA: refused in the handshake (with TLS 1.3 the client
    // learns it at its first read), so no review is answered.
    let stranger = f.ca.issue_client("kube-apiserver", HOUR).unwrap();
    let refused = async {
        let tls = tls_connect_with(server.https, client_config_as(f.ca.cert_der(), &stranger)).await?;
        let (mut sender, connection) = http1::handshake(TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        send(&mut sender, "POST", "/validate", full("{}"))
            .await
            .map_err(std::io::Error::other)
    }
    .await;
    assert!(refused.is_err(), "an untrusted client certificate got an answer");

    let text = server.registry.encode().unwrap();
    let unauthenticated: f64 = text
        .lines()
        .filter(|l| l.starts_with("driftguard_admission_requests_total") && l.contains(r#"decision="unauthenticated""#))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(unauthenticated, 2.0, "{text}");
    server.stop().await;
}
