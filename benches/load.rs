//! Load benchmark: the real HTTPS webhook against a no-op floor, in one process run
//! (issue 9, DESIGN.md section 10).
//!
//! Run (release build; ~2 min with the defaults):
//!
//! ```text
//! cargo bench --bench load
//! LOAD_SECONDS=10 LOAD_CONNECTIONS=8 LOAD_RATES=250,1000,4000 LOAD_WARMUP=1 cargo bench --bench load
//! ```
//!
//! What runs, all on 127.0.0.1 and each on its own tokio runtime (2 named worker threads):
//! - `driftguard` ("dg-server" threads): `driftguard::server::bind` (rustls, HTTP stack, limits
//!   as in production) over `Admission` with the desired state of `workload::desired_set(1000,
//!   Deny)` (1,000 apps, 4,000 objects). Audit events go to a sink that drops them: audit
//!   writing is NOT measured.
//! - `noop` ("noop-server" threads): the same `bind`, over an `Admit` that only decodes the
//!   AdmissionReview (`admission::review::decode`) and answers `allowed: true` with the uid
//!   (`review::encode`): the floor of TLS + HTTP + JSON on this machine.
//! - the load generator ("client" threads): C kept-alive TLS 1.3 HTTP/1.1 connections per
//!   target, one request in flight each (like kube-apiserver's webhook client), POSTing
//!   `workload::requests(1000, N)` round robin to `/validate`.
//!
//! Phases, each a warm-up (not recorded) then a measured window, targets interleaved per phase:
//! - `open-R`: open loop at R req/s offered in total (split evenly, staggered, over the
//!   connections). Latency is measured from the request's *scheduled* send time whenever the
//!   connection was still busy with the previous request at that time, so queueing behind a
//!   slow answer is counted (coordinated omission corrected); when the connection was idle, it
//!   is measured from the actual send, so the client timer's ~1 ms granularity is not charged
//!   to the server. Nothing is sent after the window ends: when the server cannot keep up,
//!   `achieved` falls below `offered`.
//! - `updates-1000`: open loop at 1,000 req/s of the mix's drifting ~23 KB UPDATEs of managed
//!   Deployments only (all denied): the latency budget of DESIGN.md section 10 as worded.
//! - `saturation`: closed loop, every connection sends back to back; latency from the send.
//! - `sat-unmanaged`: the same with only the mix's unmanaged UPDATEs (~23 KB each), for the
//!   budget "an unmanaged object is answered in <= 50 µs of CPU".
//!
//! Figures per row:
//! - `offered` / `achieved`: req/s asked for / answered within the window.
//! - `p50` ... `max`: end-to-end latency seen by the client over loopback (client TLS and HTTP
//!   included), from an HdrHistogram in µs, of requests whose send (or scheduled send) fell in
//!   the window.
//! - `srv CPU/req`: user+system CPU of the target's server threads (those named after its
//!   runtime, blocking-pool threads included) over the window, divided by the answers in the
//!   window: TLS, HTTP, routing, decoding and deciding per request. Read from
//!   `se.sum_exec_runtime` of /proc/self/task/*/sched (ns) where the kernel has it, else from
//!   utime+stime of /proc/self/task/*/stat (10 ms ticks: use windows of 10 s or more). At low
//!   rates it includes the per-wake-up cost (epoll, futex, parking) that batching hides at
//!   saturation, so it is higher there.
//! - `errors`: transport failures, 5 s timeouts and 503s (load shed by the in-flight limit);
//!   `wrong`: any other answer that is not HTTP 200 with the request's uid and the expected
//!   `allowed` (driftguard: `Kind::allowed()`; noop: true). Any wrong answer, warm-ups
//!   included, fails the bench (exit 1) after printing the first ones; a wrong no-op answer
//!   would mean the harness itself is broken, so it fails too.
//! - then the ratio driftguard/noop of every figure, per phase.
//!
//! Every row is also printed as one `LOAD-JSON {...}` line for BENCHMARKS.md. Client and
//! servers share the machine's cores: at saturation the client's own TLS work competes with
//! the server's.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[path = "../tests/support/mod.rs"]
mod support;

use driftguard::admission::review::{self, Response};
use driftguard::admission::{Admit, Reply, Webhook, error_reply};
use driftguard::api::Mode;
use driftguard::audit::{AuditEvent, AuditSink};
use driftguard::certs::{DEFAULT_DEV_HOSTS, ensure_dev_certs, parse_cert_chain};
use driftguard::server::{ServerError, ServerOptions, bind};
use driftguard::telemetry::Metrics;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use serde::Deserialize;
use serde_json::json;
use support::workload::{self, Kind};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_rustls::TlsConnector;

/// Applications in the desired state and the request mix.
const APPS: usize = 1000;
/// Distinct requests generated (round robin over them).
const REQUESTS: usize = 2000;
/// Every request, and every connection attempt, gives up after this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Worker threads of each runtime.
const WORKERS: usize = 2;
/// Wrong answers kept for printing.
const KEEP_WRONG: usize = 5;
/// Linux reports utime/stime in USER_HZ ticks, 100 per second.
const CLOCK_TICKS_PER_SECOND: u64 = 100;

/// Drops audit events: audit writing is excluded from this benchmark.
struct Discard;
impl AuditSink for Discard {
    fn record(&self, _event: AuditEvent) {}
}

/// The floor: decode the review as driftguard does, answer allowed with its uid.
struct Noop;
impl Admit for Noop {
    fn admit(&self, _webhook: Webhook, body: &[u8]) -> Reply {
        let request = match review::decode(body) {
            Ok(request) => request,
            Err(error) => return error_reply(400, "unknown", "invalid", &error.to_string()),
        };
        let response = Response {
            uid: &request.uid,
            allowed: true,
            status: None,
            patch_type: None,
            patch: None,
            warnings: Vec::new(),
            audit_annotations: BTreeMap::new(),
        };
        match review::encode(response) {
            Ok(body) => Reply {
                status: 200,
                body,
                operation: request.operation.as_str(),
                decision: "allowed",
            },
            Err(error) => error_reply(500, "unknown", "error", &error.to_string()),
        }
    }
    fn is_ready(&self) -> bool {
        true
    }
}

struct Config {
    window: Duration,
    warmup: Duration,
    connections: usize,
    rates: Vec<u64>,
}

fn env_parse<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value
            .trim()
            .parse()
            .map_err(|_| format!("{name}={value:?} is not a valid value")),
        _ => Ok(default),
    }
}

impl Config {
    /// `quick`: short windows by default (when run as a test rather than by `cargo bench`).
    fn from_env(quick: bool) -> Result<Self, String> {
        let seconds: f64 = env_parse("LOAD_SECONDS", if quick { 0.5 } else { 10.0 })?;
        let warmup: f64 = env_parse("LOAD_WARMUP", if quick { 0.2 } else { 1.0 })?;
        let connections: usize = env_parse("LOAD_CONNECTIONS", 8)?;
        let rates = env_parse("LOAD_RATES", "250,1000,4000".to_owned())?
            .split(',')
            .filter(|r| !r.trim().is_empty())
            .map(|r| {
                r.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("LOAD_RATES: {r:?} is not a rate"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let valid = seconds > 0.0 && seconds <= 3600.0 && (0.0..=600.0).contains(&warmup);
        if !valid {
            return Err("LOAD_SECONDS must be in (0, 3600] and LOAD_WARMUP in [0, 600]".into());
        }
        if connections == 0 || connections > 1024 || rates.contains(&0) {
            return Err("LOAD_CONNECTIONS must be 1..=1024 and every rate > 0".into());
        }
        Ok(Config {
            window: Duration::from_secs_f64(seconds),
            warmup: Duration::from_secs_f64(warmup),
            connections,
            rates,
        })
    }
}

/// One request of the load, ready to send.
struct Prepared {
    kind: Kind,
    uid: String,
    body: Bytes,
}

fn prepare(requests: &[workload::Request]) -> Vec<Prepared> {
    requests
        .iter()
        .map(|r| {
            let review: serde_json::Value = serde_json::from_slice(&r.body).expect("the workload is JSON");
            Prepared {
                kind: r.kind,
                uid: review["request"]["uid"].as_str().expect("a uid").to_owned(),
                body: Bytes::from(r.body.clone()),
            }
        })
        .collect()
}

/// A server on its own runtime.
struct Server {
    name: &'static str,
    thread: &'static str,
    addr: SocketAddr,
    runtime: Runtime,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

fn start_server(
    name: &'static str,
    thread: &'static str,
    admit: Arc<dyn Admit>,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Server, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .thread_name(thread)
        .enable_all()
        .build()
        .map_err(|e| format!("{name} runtime: {e}"))?;
    let mut opts = ServerOptions::new(cert.to_path_buf(), key.to_path_buf());
    opts.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    opts.metrics_listen = None;
    let bound = runtime
        .block_on(bind(opts, admit, Arc::new(Metrics::new())))
        .map_err(|e| format!("{name}: {e}"))?;
    let addr = bound.https_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = runtime.spawn(bound.run(async move {
        let _ = stopped.await;
    }));
    Ok(Server {
        name,
        thread,
        addr,
        runtime,
        stop,
        task,
    })
}

impl Server {
    fn shut_down(self) -> Result<(), String> {
        let Server {
            name,
            runtime,
            stop,
            task,
            ..
        } = self;
        let _ = stop.send(());
        let result = runtime.block_on(async { timeout(Duration::from_secs(30), task).await });
        runtime.shutdown_timeout(Duration::from_secs(5));
        match result {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(format!("{name} stopped with an error: {e}")),
            Ok(Err(e)) => Err(format!("{name} server task failed: {e}")),
            Err(_) => Err(format!("{name} did not shut down within 30 s")),
        }
    }
}

/// Where per-thread CPU time is read from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CpuSource {
    /// `se.sum_exec_runtime` of /proc/self/task/*/sched (ns resolution; utime+stime unsplit).
    Sched,
    /// utime+stime of /proc/self/task/*/stat (USER_HZ ticks: 10 ms per thread and reading).
    Stat,
}

impl CpuSource {
    /// The precise source when this kernel has it (CONFIG_SCHED_DEBUG), else ticks.
    fn detect() -> Self {
        let has_sched =
            std::fs::read_to_string("/proc/thread-self/sched").is_ok_and(|text| sched_runtime_us(&text).is_some());
        if has_sched { CpuSource::Sched } else { CpuSource::Stat }
    }

    fn describe(self) -> &'static str {
        match self {
            CpuSource::Sched => "se.sum_exec_runtime of /proc/self/task/*/sched (user+system, ns resolution)",
            CpuSource::Stat => "utime+stime of /proc/self/task/*/stat (10 ms ticks per thread)",
        }
    }

    /// CPU time (µs) of this process's threads whose name starts with `prefix`.
    fn thread_cpu_us(self, prefix: &str) -> u64 {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return 0;
        };
        let mut total = 0;
        for task in tasks.flatten() {
            // Threads that exit between the listing and the read are skipped.
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            if !stat[open + 1..close].starts_with(prefix) {
                continue;
            }
            if self == CpuSource::Sched
                && let Some(us) = std::fs::read_to_string(task.path().join("sched"))
                    .ok()
                    .and_then(|text| sched_runtime_us(&text))
            {
                total += us;
                continue;
            }
            // After "(comm) ": state is field 3, utime 14, stime 15 (1-based, proc(5)).
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
            total += (field(14) + field(15)) * 1_000_000 / CLOCK_TICKS_PER_SECOND;
        }
        total
    }
}

/// `se.sum_exec_runtime` (milliseconds with 6 decimals) of a sched file, in µs.
fn sched_runtime_us(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("se.sum_exec_runtime"))?;
    let ms: f64 = line.split(':').nth(1)?.trim().parse().ok()?;
    Some((ms * 1000.0) as u64)
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr, tls: Arc<ClientConfig>) -> Result<Sender, String> {
    let attempt = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        // Go's net/http (kube-apiserver) sets TCP_NODELAY too.
        tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let stream = TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    };
    timeout(REQUEST_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err("connection timed out".into()))
}

async fn call(sender: &mut Sender, body: Bytes) -> Result<(StatusCode, Bytes), String> {
    let exchange = async {
        sender.ready().await.map_err(|e| format!("connection not ready: {e}"))?;
        let request = Request::post("/validate")
            .header(header::HOST, "localhost")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| format!("send: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((status, body))
    };
    timeout(REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}")))
}

#[derive(Deserialize)]
struct ReviewOut {
    response: Option<ResponseOut>,
}

#[derive(Deserialize)]
struct ResponseOut {
    #[serde(default)]
    uid: String,
    allowed: Option<bool>,
}

/// None when the answer is right, else why not.
fn check(status: StatusCode, body: &[u8], request: &Prepared, all_allowed: bool) -> Option<String> {
    let expected = all_allowed || request.kind.allowed();
    let shown = || String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    if status != StatusCode::OK {
        return Some(format!("HTTP {status}: {}", shown()));
    }
    match serde_json::from_slice::<ReviewOut>(body) {
        Ok(ReviewOut {
            response: Some(response),
        }) if response.uid == request.uid && response.allowed == Some(expected) => None,
        Ok(_) => Some(format!(
            "expected uid {} allowed {expected}, got: {}",
            request.uid,
            shown()
        )),
        Err(e) => Some(format!("not an AdmissionReview ({e}): {}", shown())),
    }
}

/// Whom a phase loads.
struct Target {
    name: &'static str,
    thread: &'static str,
    addr: SocketAddr,
    /// The no-op floor allows everything.
    all_allowed: bool,
}

#[derive(Clone, Copy)]
enum Pace {
    /// Open loop at this total rate.
    Open(u64),
    /// Closed loop.
    Closed,
}

struct Window {
    /// Pacing starts here (warm-up).
    start: Instant,
    /// Recording starts here.
    measure: Instant,
    /// Nothing is sent from here on.
    end: Instant,
}

/// What one connection saw in one phase.
struct Tally {
    histogram: Histogram<u64>,
    answered: u64,
    errors: u64,
    wrong: u64,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

struct Shared {
    tls: Arc<ClientConfig>,
    requests: Vec<Prepared>,
    next: AtomicUsize,
    wrong: Mutex<Vec<String>>,
}

/// Drives one connection through one phase; returns it (if still usable) with its tally.
async fn drive(
    mut conn: Option<Sender>,
    index: usize,
    connections: usize,
    pace: Pace,
    window: Arc<Window>,
    target: Arc<Target>,
    shared: Arc<Shared>,
) -> (Option<Sender>, Tally) {
    let mut tally = Tally {
        histogram: new_histogram(),
        answered: 0,
        errors: 0,
        wrong: 0,
    };
    let interval = match pace {
        Pace::Open(rate) => Some(Duration::from_secs_f64(connections as f64 / rate as f64)),
        Pace::Closed => None,
    };
    // Connections are staggered evenly over one interval.
    let offset = interval.map(|i| i.mul_f64(index as f64 / connections as f64));
    let mut free_at = Instant::now();
    let mut k: u32 = 0;
    // Only the first failure of a connection is printed; the rest are counted.
    let mut reported = false;
    loop {
        let scheduled = match (interval, offset) {
            (Some(interval), Some(offset)) => {
                let at = window.start + offset + interval * k;
                k = k.saturating_add(1);
                Some(at)
            }
            _ => None,
        };
        if let Some(at) = scheduled {
            if at >= window.end {
                break;
            }
            sleep_until(at).await;
        }
        if Instant::now() >= window.end {
            break;
        }
        let sender = match conn.as_mut().filter(|s| !s.is_closed()) {
            Some(sender) => sender,
            None => match connect(target.addr, shared.tls.clone()).await {
                Ok(sender) => conn.insert(sender),
                Err(error) => {
                    conn = None;
                    if Instant::now() >= window.measure {
                        tally.errors += 1;
                    }
                    if !std::mem::replace(&mut reported, true) {
                        eprintln!("{}: cannot connect: {error}", target.name);
                    }
                    sleep(Duration::from_millis(50)).await;
                    free_at = Instant::now();
                    continue;
                }
            },
        };
        let sent = Instant::now();
        // Busy at the scheduled time: the wait behind the previous answer counts.
        let reference = match scheduled {
            Some(at) if free_at > at => at,
            _ => sent,
        };
        let n = shared.next.fetch_add(1, Ordering::Relaxed) % shared.requests.len();
        let request = &shared.requests[n];
        let result = call(sender, request.body.clone()).await;
        let done = Instant::now();
        free_at = done;
        let recorded = reference >= window.measure && reference < window.end;
        let counted = done >= window.measure && done < window.end;
        match result {
            Ok((status, _)) if status == StatusCode::SERVICE_UNAVAILABLE => {
                // Load shed by the in-flight limit (by design, not a wrong decision).
                if recorded || counted {
                    tally.errors += 1;
                }
                if !std::mem::replace(&mut reported, true) {
                    eprintln!("{}: answered 503 (in-flight limit)", target.name);
                }
            }
            Ok((status, body)) => {
                if recorded {
                    let micros = done.duration_since(reference).as_micros() as u64;
                    tally.histogram.saturating_record(micros.max(1));
                }
                if let Some(why) = check(status, &body, request, target.all_allowed) {
                    // Wrong answers count wherever they fall, warm-up included.
                    tally.wrong += 1;
                    let mut kept = shared.wrong.lock().unwrap_or_else(|e| e.into_inner());
                    if kept.len() < KEEP_WRONG {
                        kept.push(format!("{} request #{n} ({:?}): {why}", target.name, request.kind));
                    }
                } else if counted {
                    tally.answered += 1;
                }
            }
            Err(error) => {
                if recorded || counted {
                    tally.errors += 1;
                }
                if !std::mem::replace(&mut reported, true) {
                    eprintln!("{}: request failed: {error}", target.name);
                }
                // An HTTP/1.1 connection with a lost exchange is unusable.
                conn = None;
            }
        }
    }
    (conn, tally)
}

/// One row of the results.
struct Row {
    target: &'static str,
    phase: String,
    offered: Option<u64>,
    achieved: f64,
    /// p50, p90, p99, p99.9, max in µs (None when nothing was recorded).
    latency: Option<[u64; 5]>,
    server_cpu_us: Option<f64>,
    client_cpu_us: Option<f64>,
    answered: u64,
    errors: u64,
    wrong: u64,
}

const QUANTILES: [(&str, f64); 5] = [
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("max", 1.0),
];

async fn run_phase(
    cpu: CpuSource,
    phase: &str,
    pace: Pace,
    config: &Config,
    target: Arc<Target>,
    conns: &mut [Option<Sender>],
    shared: Arc<Shared>,
) -> Row {
    // Re-open connections the server closed while they were idle, before the clock starts.
    for conn in conns.iter_mut() {
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            *conn = connect(target.addr, shared.tls.clone()).await.ok();
        }
    }
    let start = Instant::now() + Duration::from_millis(20);
    let window = Arc::new(Window {
        start,
        measure: start + config.warmup,
        end: start + config.warmup + config.window,
    });
    let tasks: Vec<_> = conns
        .iter_mut()
        .enumerate()
        .map(|(index, conn)| {
            tokio::spawn(drive(
                conn.take(),
                index,
                config.connections,
                pace,
                window.clone(),
                target.clone(),
                shared.clone(),
            ))
        })
        .collect();
    sleep_until(window.measure).await;
    let (server_before, client_before) = (cpu.thread_cpu_us(target.thread), cpu.thread_cpu_us("client"));
    sleep_until(window.end).await;
    let (server_after, client_after) = (cpu.thread_cpu_us(target.thread), cpu.thread_cpu_us("client"));
    let mut histogram = new_histogram();
    let (mut answered, mut errors, mut wrong) = (0, 0, 0);
    for (slot, task) in conns.iter_mut().zip(tasks) {
        match task.await {
            Ok((conn, tally)) => {
                *slot = conn;
                let _ = histogram.add(&tally.histogram);
                answered += tally.answered;
                errors += tally.errors;
                wrong += tally.wrong;
            }
            Err(e) => {
                eprintln!("{}: a client task failed: {e}", target.name);
                errors += 1;
            }
        }
    }
    let per_request =
        |before: u64, after: u64| (answered > 0).then(|| (after.saturating_sub(before)) as f64 / answered as f64);
    Row {
        target: target.name,
        phase: phase.to_owned(),
        offered: match pace {
            Pace::Open(rate) => Some(rate),
            Pace::Closed => None,
        },
        achieved: answered as f64 / config.window.as_secs_f64(),
        latency: (!histogram.is_empty()).then(|| QUANTILES.map(|(_, q)| histogram.value_at_quantile(q))),
        server_cpu_us: per_request(server_before, server_after),
        client_cpu_us: per_request(client_before, client_after),
        answered,
        errors,
        wrong,
    }
}

fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.2} ms", us as f64 / 1e3)
    } else {
        format!("{:.2} s", us as f64 / 1e6)
    }
}

fn fmt_opt(v: Option<f64>, unit: &str) -> String {
    v.map(|v| format!("{v:.1}{unit}")).unwrap_or_else(|| "-".into())
}

fn print_rows(rows: &[Row]) {
    println!(
        "{:<11} {:<14} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>13} {:>7} {:>6}",
        "target", "phase", "offered", "achieved", "p50", "p90", "p99", "p99.9", "max", "srv CPU/req", "errors", "wrong"
    );
    for row in rows {
        let lat = |i: usize| row.latency.map(|l| fmt_us(l[i])).unwrap_or_else(|| "-".into());
        println!(
            "{:<11} {:<14} {:>8} {:>9.0} {:>9} {:>9} {:>9} {:>9} {:>9} {:>13} {:>7} {:>6}",
            row.target,
            row.phase,
            row.offered.map(|o| o.to_string()).unwrap_or_else(|| "max".into()),
            row.achieved,
            lat(0),
            lat(1),
            lat(2),
            lat(3),
            lat(4),
            fmt_opt(row.server_cpu_us, " µs"),
            row.errors,
            row.wrong
        );
    }
}

fn row_json(row: &Row, config: &Config) -> serde_json::Value {
    let mut value = json!({
        "target": row.target,
        "phase": row.phase,
        "offered_rps": row.offered,
        "achieved_rps": (row.achieved * 10.0).round() / 10.0,
        "server_cpu_us_per_req": row.server_cpu_us.map(|v| (v * 10.0).round() / 10.0),
        "client_cpu_us_per_req": row.client_cpu_us.map(|v| (v * 10.0).round() / 10.0),
        "answered": row.answered,
        "errors": row.errors,
        "wrong": row.wrong,
        "connections": config.connections,
        "seconds": config.window.as_secs_f64(),
    });
    for (i, (name, _)) in QUANTILES.iter().enumerate() {
        value[format!("{}_us", name.replace('.', "_"))] = json!(row.latency.map(|l| l[i]));
    }
    value
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn print_ratios(rows: &[Row]) {
    println!();
    println!("ratio driftguard / noop (latency and CPU: lower is better for driftguard at 1.0)");
    println!(
        "{:<14} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>12}",
        "phase", "achieved", "p50", "p90", "p99", "p99.9", "max", "srv CPU/req"
    );
    let mut json_lines = Vec::new();
    for dg in rows.iter().filter(|r| r.target == "driftguard") {
        let Some(noop) = rows.iter().find(|r| r.target == "noop" && r.phase == dg.phase) else {
            continue;
        };
        let lat = |r: &Row, i: usize| r.latency.map(|l| l[i] as f64);
        let figures: Vec<Option<f64>> = std::iter::once(ratio(Some(dg.achieved), Some(noop.achieved)))
            .chain((0..5).map(|i| ratio(lat(dg, i), lat(noop, i))))
            .chain(std::iter::once(ratio(dg.server_cpu_us, noop.server_cpu_us)))
            .collect();
        let show = |v: &Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
        println!(
            "{:<14} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>12}",
            dg.phase,
            show(&figures[0]),
            show(&figures[1]),
            show(&figures[2]),
            show(&figures[3]),
            show(&figures[4]),
            show(&figures[5]),
            show(&figures[6])
        );
        let round = |v: &Option<f64>| v.map(|v| (v * 1000.0).round() / 1000.0);
        json_lines.push(json!({
            "ratio": "driftguard/noop",
            "phase": dg.phase,
            "achieved_rps": round(&figures[0]),
            "p50_us": round(&figures[1]),
            "p90_us": round(&figures[2]),
            "p99_us": round(&figures[3]),
            "p99_9_us": round(&figures[4]),
            "max_us": round(&figures[5]),
            "server_cpu_us_per_req": round(&figures[6]),
        }));
    }
    println!();
    for line in json_lines {
        println!("LOAD-JSON {line}");
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then a short smoke run
    // (still checking every answer). A test harness listing targets gets nothing.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return ExitCode::SUCCESS;
    }
    let quick = !args.iter().any(|a| a == "--bench");
    match run(quick) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("load bench failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(quick: bool) -> Result<bool, String> {
    let config = Config::from_env(quick)?;
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = cpu_model();
    let cpu = CpuSource::detect();

    let requests = workload::requests(APPS, REQUESTS);
    let mix = prepare(&requests);
    let only = |kind: Kind| -> Vec<Prepared> {
        prepare(&requests.iter().filter(|r| r.kind == kind).cloned().collect::<Vec<_>>())
    };
    let unmanaged = only(Kind::Unmanaged);
    let updates = only(Kind::UpdateDrift);
    drop(requests);
    let set = workload::desired_set(APPS, Mode::Deny);
    let objects = set.objects.len();
    let admission = workload::admission(set, Arc::new(Discard));

    println!("driftguard load benchmark (benches/load.rs)");
    if quick {
        println!("(smoke run with short windows: `cargo bench --bench load` for figures)");
    }
    println!("date: {date}");
    println!("machine: {cores} cores, {model}");
    println!(
        "load: {} kept-alive TLS 1.3 HTTP/1.1 connections per target, one request in flight each; \
         warm-up {:?} then {:?} measured per phase; timeout {REQUEST_TIMEOUT:?} per request",
        config.connections, config.warmup, config.window
    );
    println!(
        "servers: driftguard::server::bind, {WORKERS} worker threads each; driftguard over {objects} desired \
         objects ({APPS} apps, mode Deny); audit writing EXCLUDED (events dropped)"
    );
    println!("server CPU: {}", cpu.describe());
    println!("mix: {REQUESTS} distinct reviews POSTed round robin to /validate:");
    let mut by_kind: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for r in &mix {
        let e = by_kind.entry(format!("{:?}", r.kind)).or_insert((0, usize::MAX, 0));
        e.0 += 1;
        e.1 = e.1.min(r.body.len());
        e.2 = e.2.max(r.body.len());
    }
    for (kind, (count, min, max)) in &by_kind {
        println!(
            "  {kind:<14} {:>3}% of requests, {min}..{max} bytes",
            count * 100 / mix.len()
        );
    }
    let header = json!({
        "run": "load",
        "date": date,
        "cores": cores,
        "cpu": model,
        "connections": config.connections,
        "seconds": config.window.as_secs_f64(),
        "warmup_seconds": config.warmup.as_secs_f64(),
        "desired_objects": objects,
        "audit": "excluded",
        "cpu_source": match cpu { CpuSource::Sched => "sched", CpuSource::Stat => "stat" },
        "mix": by_kind
            .iter()
            .map(|(kind, (count, min, max))| (kind.clone(), json!({"count": count, "min_bytes": min, "max_bytes": max})))
            .collect::<serde_json::Map<_, _>>(),
    });
    println!("LOAD-JSON {header}");
    println!();

    let certs_dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let hosts: Vec<String> = DEFAULT_DEV_HOSTS.iter().map(|h| h.to_string()).collect();
    let certs = ensure_dev_certs(certs_dir.path(), &hosts).map_err(|e| format!("dev certificates: {e}"))?;
    let ca_pem = std::fs::read(&certs.ca_cert).map_err(|e| format!("{}: {e}", certs.ca_cert.display()))?;
    let ca = parse_cert_chain(&ca_pem, "ca.crt")
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or("ca.crt holds no certificate")?;
    let tls = support::https::client_config(&ca, &[b"http/1.1"], rustls::DEFAULT_VERSIONS);

    let dg = start_server("driftguard", "dg-server", Arc::new(admission), &certs.cert, &certs.key)?;
    let noop = match start_server("noop", "noop-server", Arc::new(Noop), &certs.cert, &certs.key) {
        Ok(noop) => noop,
        Err(e) => {
            let _ = dg.shut_down();
            return Err(e);
        }
    };
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .thread_name("client")
        .enable_all()
        .build()
        .map_err(|e| format!("client runtime: {e}"))?;

    let targets = [
        Arc::new(Target {
            name: dg.name,
            thread: dg.thread,
            addr: dg.addr,
            all_allowed: false,
        }),
        Arc::new(Target {
            name: noop.name,
            thread: noop.thread,
            addr: noop.addr,
            all_allowed: true,
        }),
    ];
    let shared = |requests: Vec<Prepared>| {
        Arc::new(Shared {
            tls: tls.clone(),
            requests,
            next: AtomicUsize::new(0),
            wrong: Mutex::new(Vec::new()),
        })
    };
    let (shared_mix, shared_unmanaged, shared_updates) = (shared(mix), shared(unmanaged), shared(updates));

    let mut phases: Vec<(String, Pace, &Arc<Shared>)> = config
        .rates
        .iter()
        .map(|&rate| (format!("open-{rate}"), Pace::Open(rate), &shared_mix))
        .collect();
    // DESIGN.md section 10's latency budget, as it is worded: 20 KB UPDATEs at 1,000 req/s.
    phases.push(("updates-1000".into(), Pace::Open(1000), &shared_updates));
    phases.push(("saturation".into(), Pace::Closed, &shared_mix));
    phases.push(("sat-unmanaged".into(), Pace::Closed, &shared_unmanaged));

    let rows = client.block_on(async {
        let mut conns: Vec<Vec<Option<Sender>>> = Vec::new();
        for target in &targets {
            let mut list = Vec::new();
            for _ in 0..config.connections {
                list.push(connect(target.addr, tls.clone()).await.ok());
            }
            conns.push(list);
        }
        let mut rows = Vec::new();
        for (phase, pace, shared) in &phases {
            for (target, list) in targets.iter().zip(conns.iter_mut()) {
                eprintln!("running {} {phase} ...", target.name);
                rows.push(run_phase(cpu, phase, *pace, &config, target.clone(), list, Arc::clone(shared)).await);
            }
        }
        drop(conns); // closes every client connection before the servers stop
        rows
    });
    client.shutdown_timeout(Duration::from_secs(5));
    let stopped = [dg.shut_down(), noop.shut_down()];

    println!();
    print_rows(&rows);
    println!();
    for row in &rows {
        println!("LOAD-JSON {}", row_json(row, &config));
    }
    print_ratios(&rows);

    let mut ok = true;
    for result in stopped {
        if let Err(e) = result {
            eprintln!("{e}");
            ok = false;
        }
    }
    let wrong: u64 = rows.iter().map(|r| r.wrong).sum();
    if wrong > 0 {
        ok = false;
        eprintln!("\n{wrong} WRONG ANSWERS; the first ones:");
        for shared in [&shared_mix, &shared_unmanaged] {
            for line in shared.wrong.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                eprintln!("  {line}");
            }
        }
    }
    Ok(ok)
}
