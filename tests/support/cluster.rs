//! The real control plane (etcd, kube-apiserver, kube-controller-manager built by
//! `scripts/cluster` from their Go modules) for the end-to-end tier, the real kubectl and helm,
//! and driftguard installed from its own chart.
//!
//! How the API server reaches driftguard: the chart's webhook configurations name the chart's
//! ClusterIP Service. There is no kube-proxy and no kubelet here, so the cluster's Service IP
//! range is a loopback range (`scripts/cluster` sets `--service-cluster-ip-range` to a
//! 127.x.0.0/16 of its own) and [`ServiceProxy`] stands in for kube-proxy: it listens on the
//! Service's ClusterIP and port and forwards each TCP connection to a running driftguard
//! replica. Nothing else changes: kube-apiserver resolves the Service itself, dials its
//! ClusterIP, and verifies the serving certificate as `<service>.<namespace>.svc` against the
//! caBundle driftguard injected. TLS is end to end; the proxy sees only bytes.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::process::{between, recv_until, spawn_serve_with_env};

/// The version every control-plane binary reports.
pub const KUBERNETES_VERSION: &str = "v1.37.2";

/// One control plane on loopback, taken down when dropped (and, should the test process die,
/// by the watcher `scripts/cluster up` leaves behind for its owner PID).
pub struct Cluster {
    state: tempfile::TempDir,
    home: tempfile::TempDir,
    kubeconfig: PathBuf,
    bin: PathBuf,
}

fn script() -> PathBuf {
    super::root().join("scripts/cluster")
}

impl Cluster {
    /// `scripts/cluster up` into a directory of its own (binaries are built once and cached).
    pub fn start() -> Cluster {
        let state = tempfile::Builder::new()
            .prefix("driftguard-cluster-")
            .tempdir()
            .unwrap();
        let out = Command::new(script())
            .arg("up")
            .env("DRIFTGUARD_CLUSTER_DIR", state.path())
            .env("DRIFTGUARD_CLUSTER_OWNER", std::process::id().to_string())
            .output()
            .expect("scripts/cluster runs");
        assert!(
            out.status.success(),
            "scripts/cluster up failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let kubeconfig = stdout
            .lines()
            .find_map(|l| l.strip_prefix("export KUBECONFIG="))
            .unwrap_or_else(|| panic!("no export line in {stdout}"))
            .trim()
            .into();
        let bin = Command::new(script()).arg("bin").output().unwrap();
        let bin = PathBuf::from(String::from_utf8_lossy(&bin.stdout).trim());
        Cluster {
            state,
            home: tempfile::tempdir().unwrap(),
            kubeconfig,
            bin,
        }
    }

    /// The admin kubeconfig (system:masters).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A scratch directory that lives as long as the cluster.
    pub fn scratch(&self) -> &Path {
        self.home.path()
    }

    /// A built binary (`kubectl`, `helm`, `kube-apiserver`, ...).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// The kubectl built from k8s.io/kubernetes at [`KUBERNETES_VERSION`], as admin.
    pub fn kubectl(&self) -> Command {
        self.kubectl_with(&self.bin("kubectl"), &self.kubeconfig)
    }

    /// The machine's own `/usr/bin/kubectl` (1.32), as admin.
    pub fn machine_kubectl(&self) -> Command {
        self.kubectl_with(Path::new("/usr/bin/kubectl"), &self.kubeconfig)
    }

    /// `kubectl` (built, or the machine's) against `kubeconfig`, isolated from this machine:
    /// its own HOME and discovery cache, nothing in the environment but PATH.
    pub fn kubectl_with(&self, kubectl: &Path, kubeconfig: &Path) -> Command {
        assert!(kubectl.exists(), "{} is missing", kubectl.display());
        let cache = self
            .home
            .path()
            .join(format!("cache-{}", kubectl.to_string_lossy().replace('/', "_")));
        let mut command = Command::new(kubectl);
        command
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(cache)
            .args(["--request-timeout", "30s"])
            .env_clear()
            .env("HOME", self.home.path())
            .env("PATH", "/usr/bin:/bin");
        command
    }

    /// The real helm (helm.sh/helm/v4), as admin, with its caches under the scratch directory.
    pub fn helm(&self) -> Command {
        let home = self.home.path();
        let mut command = Command::new(self.bin("helm"));
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env_clear()
            .env("HOME", home)
            .env("PATH", "/usr/bin:/bin")
            .env("HELM_CACHE_HOME", home.join("helm/cache"))
            .env("HELM_CONFIG_HOME", home.join("helm/config"))
            .env("HELM_DATA_HOME", home.join("helm/data"));
        command
    }

    /// Runs admin kubectl with `args`; its stdout, failing the test on a non-zero exit.
    pub fn ok(&self, args: &[&str]) -> String {
        ok(self.kubectl().args(args))
    }

    /// A kube client as admin.
    pub async fn client(&self) -> kube::Client {
        client_for(&self.kubeconfig).await
    }

    /// A kubeconfig for service account `namespace/name`, with a token from the TokenRequest
    /// API (what a pod's projected token is), written into the scratch directory.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let token = self.ok(&["create", "token", name, "-n", namespace, "--duration", "2h"]);
        let admin: Value = serde_saphyr::from_str(&std::fs::read_to_string(&self.kubeconfig).unwrap()).unwrap();
        let cluster = &admin["clusters"][0]["cluster"];
        let config = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": "u", "user": {"token": token.trim()}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "c",
        });
        let path = self.home.path().join(format!("{namespace}-{name}.kubeconfig"));
        std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
        path
    }

    /// Where `scripts/cluster` keeps this control plane's logs and data.
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("down")
            .env("DRIFTGUARD_CLUSTER_DIR", self.state.path())
            .output();
    }
}

/// A kube client from a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Runs `command`; its stdout, failing the test with stderr on a non-zero exit.
pub fn ok(command: &mut Command) -> String {
    let out = command.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr of a finished command, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// kube-proxy's part for one Service: accepts on the ClusterIP and port and forwards each
/// connection to the first backend, in turn, that accepts it (a replica that is gone refuses
/// at once, as an endpoint removed from the Service would no longer be chosen).
pub struct ServiceProxy {
    addr: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    /// Forwarded connections by backend (kube-apiserver keeps its webhook connections alive).
    open: Arc<Mutex<Vec<(SocketAddr, TcpStream)>>>,
    stop: Arc<AtomicBool>,
    /// Connections forwarded so far.
    pub connections: Arc<AtomicUsize>,
}

impl ServiceProxy {
    pub fn start(ip: IpAddr, port: u16) -> ServiceProxy {
        let addr = SocketAddr::new(ip, port);
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("binding the Service address {addr}: {e}"));
        listener.set_nonblocking(false).unwrap();
        let backends: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let open: Arc<Mutex<Vec<(SocketAddr, TcpStream)>>> = Arc::default();
        let (b, s, c, o) = (backends.clone(), stop.clone(), connections.clone(), open.clone());
        std::thread::spawn(move || {
            let next = AtomicUsize::new(0);
            for client in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                let candidates = b.lock().unwrap().clone();
                let start = next.fetch_add(1, Ordering::Relaxed);
                let upstream = (0..candidates.len()).find_map(|i| {
                    let backend = candidates[(start + i) % candidates.len()];
                    TcpStream::connect_timeout(&backend, Duration::from_secs(1))
                        .ok()
                        .map(|stream| (backend, stream))
                });
                let Some((backend, upstream)) = upstream else {
                    // No endpoint: the connection is refused, as with a Service without endpoints.
                    continue;
                };
                c.fetch_add(1, Ordering::Relaxed);
                if let Ok(clone) = upstream.try_clone() {
                    let mut open = o.lock().unwrap();
                    open.retain(|(_, s)| s.peer_addr().is_ok());
                    open.push((backend, clone));
                }
                splice(client, upstream);
            }
        });
        ServiceProxy {
            addr,
            backends,
            open,
            stop,
            connections,
        }
    }

    /// Replaces the endpoints, and cuts the open connections to endpoints no longer listed (so
    /// "no endpoints" makes the webhook unreachable at once, kept-alive connections included).
    pub fn set_backends(&self, backends: Vec<SocketAddr>) {
        let mut open = self.open.lock().unwrap();
        open.retain(|(backend, stream)| {
            let keep = backends.contains(backend);
            if !keep {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
            keep
        });
        *self.backends.lock().unwrap() = backends;
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ServiceProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn splice(a: TcpStream, b: TcpStream) {
    let (a2, b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let pump = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        })
    };
    pump(a, b2);
    pump(b, a2);
}

/// The namespace and release name the tests install the chart as (the chart's defaults make
/// the Service `driftguard.driftguard.svc`).
pub const NAMESPACE: &str = "driftguard";
pub const RELEASE: &str = "driftguard";

/// A driftguard replica run the way the chart's Deployment runs it: the rendered container args
/// and env (downward API resolved for the pod name), the chart's config with loopback listen
/// addresses, and the chart's service account's token.
pub struct Replica {
    pub name: String,
    child: Child,
    pub https: SocketAddr,
    pub metrics: SocketAddr,
    /// Audit records (stdout), one JSON line each.
    pub audit: mpsc::Receiver<String>,
    /// Log lines (stderr).
    pub logs: Arc<Mutex<Vec<String>>>,
    _drain: std::thread::JoinHandle<()>,
}

impl Replica {
    /// Sends SIGTERM (what the kubelet sends) and waits for the exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        super::process::sigterm(&self.child);
        super::process::wait_exit(&mut self.child, Duration::from_secs(40))
    }

    /// SIGTERM, wait for the exit, and every audit line it wrote (stdout) that was not read yet.
    pub fn stop(mut self) -> (std::process::ExitStatus, Vec<String>) {
        super::process::sigterm(&self.child);
        let status = super::process::wait_exit(&mut self.child, Duration::from_secs(40));
        // The child exited: its stdout closes and the reader ends the channel.
        let lines = self.audit.iter().collect();
        (status, lines)
    }

    /// Kills the process at once (a node lost).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.logs.lock().unwrap().iter().any(|l| l.contains(needle))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The chart installed with the real helm, its Service reachable through a [`ServiceProxy`],
/// and driftguard replicas run as its Deployment runs them.
pub struct Installed {
    pub manifests: Vec<Value>,
    pub proxy: ServiceProxy,
    pub replicas: Vec<Replica>,
    pub sa_kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

/// Parses a multi-document YAML stream into its object documents.
pub fn documents(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap()
        .into_iter()
        .filter(Value::is_object)
        .collect()
}

pub fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && !d["metadata"]["annotations"]["helm.sh/hook"].is_string())
        .unwrap_or_else(|| panic!("no {kind} in the manifests"))
}

impl Installed {
    /// `helm install` of charts/driftguard (with `values`, `--set` style) and `replicas`
    /// driftguard processes; waits until the leader injected the caBundle and every replica is
    /// ready.
    pub fn helm(cluster: &Cluster, values: &[&str], replicas: usize) -> Installed {
        let chart = super::root().join("charts/driftguard");
        let mut install = cluster.helm();
        install.args(["install", RELEASE]).arg(&chart).args([
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            "--wait=false",
        ]);
        for value in values {
            install.args(["--set", value]);
        }
        ok(&mut install);
        let manifest = ok(cluster.helm().args(["get", "manifest", RELEASE, "-n", NAMESPACE]));
        Installed::start(cluster, documents(&manifest), replicas)
    }

    /// Routes the chart's Service and starts the replicas for already-applied `manifests`.
    pub fn start(cluster: &Cluster, manifests: Vec<Value>, replicas: usize) -> Installed {
        let service: Value =
            serde_json::from_str(&cluster.ok(&["get", "service", RELEASE, "-n", NAMESPACE, "-o", "json"])).unwrap();
        let ip: IpAddr = service["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
        let port = service["spec"]["ports"][0]["port"].as_u64().unwrap() as u16;
        assert!(
            ip.is_loopback(),
            "scripts/cluster gives Services loopback ClusterIPs; got {ip}"
        );
        let proxy = ServiceProxy::start(ip, port);
        let sa = find(&manifests, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
            .as_str()
            .unwrap()
            .to_owned();
        let sa_kubeconfig = cluster.service_account_kubeconfig(NAMESPACE, &sa);
        let mut installed = Installed {
            manifests,
            proxy,
            replicas: Vec::new(),
            sa_kubeconfig,
            dir: tempfile::tempdir().unwrap(),
        };
        for i in 0..replicas {
            installed.add_replica(&format!("driftguard-{}", ["a", "b", "c", "d"][i % 4]));
        }
        installed
    }

    /// Starts one more replica named `pod` and adds it to the Service's endpoints.
    pub fn add_replica(&mut self, pod: &str) {
        let replica = start_replica(self.dir.path(), &self.manifests, pod, &self.sa_kubeconfig, |_| {});
        self.replicas.push(replica);
        self.route();
    }

    /// Points the Service at the replicas still in the list.
    pub fn route(&self) {
        self.proxy.set_backends(self.replicas.iter().map(|r| r.https).collect());
    }

    /// Removes the replica named `pod` from the endpoints and returns it.
    pub fn take(&mut self, pod: &str) -> Replica {
        let i = self
            .replicas
            .iter()
            .position(|r| r.name == pod)
            .unwrap_or_else(|| panic!("no replica {pod}"));
        let replica = self.replicas.remove(i);
        self.route();
        replica
    }

    /// The `driftguard_leader` gauge of each replica, by name.
    pub fn leaders(&self) -> Vec<String> {
        self.replicas
            .iter()
            .filter(|r| metric(r.metrics, "driftguard_leader") == Some(1.0))
            .map(|r| r.name.clone())
            .collect()
    }
}

/// One series' value from a replica's /metrics (None when absent or unreachable).
pub fn metric(metrics: SocketAddr, series: &str) -> Option<f64> {
    let mut stream = TcpStream::connect_timeout(&metrics, Duration::from_secs(2)).ok()?;
    use std::io::{Read, Write};
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {metrics}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    body.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// Starts replica `pod` from the chart's rendered `docs` (its ConfigMap's config with loopback
/// listen addresses, changed further by `tweak`; its Deployment's args and env) as `kubeconfig`.
pub fn start_replica(
    dir: &Path,
    docs: &[Value],
    pod: &str,
    kubeconfig: &Path,
    tweak: impl FnOnce(&mut Value),
) -> Replica {
    let config_map = find(docs, "ConfigMap");
    let text = config_map["data"]["config.yaml"].as_str().unwrap();
    let mut config: Value = serde_saphyr::from_str(text).unwrap();
    config["server"]["listen"] = json!("127.0.0.1:0");
    config["server"]["metricsListen"] = json!("127.0.0.1:0");
    config["gitCacheDir"] = json!(dir.join(format!("{pod}-git")).to_str().unwrap());
    tweak(&mut config);
    let config_file = dir.join(format!("{pod}.yaml"));
    std::fs::write(&config_file, serde_json::to_string_pretty(&config).unwrap()).unwrap();

    let container = &find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    let mut args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a.as_str()
                .unwrap()
                .replace("/etc/driftguard/config.yaml", config_file.to_str().unwrap())
        })
        .collect();
    assert_eq!(args.first().map(String::as_str), Some("serve"), "{args:?}");
    args.remove(0);
    args.extend(["--kubeconfig".to_owned(), kubeconfig.to_str().unwrap().to_owned()]);
    let mut env = Vec::new();
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap().to_owned();
        let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.namespace") => NAMESPACE.to_owned(),
            Some("metadata.name") => pod.to_owned(),
            Some(other) => panic!("unexpected fieldRef {other}"),
            None => var["value"].as_str().unwrap_or_default().to_owned(),
        };
        env.push((name, value));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    let (child, stderr, audit) = spawn_serve_with_env(dir, &args, &env);
    let serving = recv_until(&stderr, "the serving line", |l| {
        l.contains("driftguard is serving admission")
    });
    let https = between(&serving, "addr=", " ").parse().unwrap();
    let metrics = between(&serving, "metrics=Some(", ")").parse().unwrap();
    let logs: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = logs.clone();
    let drain = std::thread::spawn(move || {
        while let Ok(line) = stderr.recv() {
            sink.lock().unwrap().push(line);
        }
    });
    Replica {
        name: pod.to_owned(),
        child,
        https,
        metrics,
        audit,
        logs,
        _drain: drain,
    }
}

/// Polls `check` every 100 ms until it yields a value; fails the test with `what` after `within`.
pub fn wait_for<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Cluster {
    /// The API server's audit log (`scripts/cluster` records every request a service account
    /// made, at level Metadata): one JSON object per request, as the real authorizer decided it
    /// (`annotations["authorization.k8s.io/decision"]`) and the server answered it
    /// (`responseStatus.code`).
    pub fn audit_events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.state.path().join("audit.log")).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l}: {e}")))
            .collect()
    }
}

/// driftguard's identity without running driftguard: its namespace and the chart's
/// ServiceAccount, ClusterRole, ClusterRoleBinding, Role and RoleBinding (`helm template` of
/// charts/driftguard with its defaults, release [`RELEASE`] in [`NAMESPACE`]) applied, and a
/// kubeconfig for that service account. Waits until RBAC lets it read Guards, write
/// Deployments and take the leader Lease.
pub fn driftguard_identity(cluster: &Cluster) -> PathBuf {
    let chart = super::root().join("charts/driftguard");
    let rendered = ok(cluster
        .helm()
        .args(["template", RELEASE])
        .arg(&chart)
        .args(["--namespace", NAMESPACE]));
    let rbac: Vec<Value> = documents(&rendered)
        .into_iter()
        .filter(|d| {
            [
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
            ]
            .contains(&d["kind"].as_str().unwrap_or_default())
                && !d["metadata"]["annotations"]["helm.sh/hook"].is_string()
        })
        .collect();
    assert!(rbac.len() >= 5, "the chart's RBAC: {rbac:?}");
    cluster.ok(&["create", "namespace", NAMESPACE]);
    let file = cluster.scratch().join("driftguard-rbac.json");
    let list = json!({"apiVersion": "v1", "kind": "List", "items": rbac});
    std::fs::write(&file, list.to_string()).unwrap();
    cluster.ok(&["apply", "-f", file.to_str().unwrap()]);
    let sa = rbac
        .iter()
        .find(|d| d["kind"] == "ServiceAccount")
        .and_then(|d| d["metadata"]["name"].as_str())
        .unwrap()
        .to_owned();
    let user = format!("system:serviceaccount:{NAMESPACE}:{sa}");
    for check in [
        ["list", "guards.driftguard.io", "--all-namespaces"],
        ["patch", "deployments.apps", "--all-namespaces"],
        [
            "update",
            "leases.coordination.k8s.io",
            &format!("--namespace={NAMESPACE}"),
        ],
    ] {
        wait_for(
            &format!("RBAC to let {user} {check:?}"),
            Duration::from_secs(30),
            || {
                let out = cluster
                    .kubectl()
                    .args(["auth", "can-i", "--as", &user])
                    .args(check)
                    .output()
                    .unwrap();
                out.status.success().then_some(())
            },
        );
    }
    cluster.service_account_kubeconfig(NAMESPACE, &sa)
}

impl Cluster {
    /// driftguard's CRDs applied from `manifests/crds` (client-side, as a user would) and
    /// served: the real API server serves a new CRD's resources only once it is Established
    /// (the imitation served them at once), so a Guard applied straight after its CRD can meet
    /// "no matches for kind". Returns kubectl apply's output.
    pub fn install_crds(&self) -> String {
        let dir = super::root().join("manifests/crds");
        let out = self.ok(&["apply", "-f", dir.to_str().unwrap()]);
        self.ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/gitsources.driftguard.io",
            "crd/guards.driftguard.io",
        ]);
        out
    }

    /// GitSource `default/apps` on the local repository `repo` and Guard `default/example-app`
    /// over `examples/app`, applied as admin.
    pub fn apply_example_guard(&self, repo: &Path) {
        let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "driftguard.io/v1alpha1", "kind": "GitSource",
             "metadata": {"name": "apps", "namespace": "default"},
             "spec": {"url": repo.to_str().unwrap(), "ref": {"branch": "main"}}},
            {"apiVersion": "driftguard.io/v1alpha1", "kind": "Guard",
             "metadata": {"name": "example-app", "namespace": "default"},
             "spec": {"sourceRef": {"name": "apps"}, "path": "examples/app", "interval": "1h"}},
        ]});
        let file = self.scratch().join("example-guard.json");
        std::fs::write(&file, objects.to_string()).unwrap();
        self.ok(&["apply", "-f", file.to_str().unwrap()]);
    }
}
