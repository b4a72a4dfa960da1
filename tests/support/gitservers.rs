//! Real Git servers for fetch tests, each on a free loopback port and killed on drop:
//! `git daemon` (git://), OpenSSH `sshd` serving repositories by absolute path (ssh://), and a
//! small hyper server running `git http-backend` as CGI behind basic or bearer authentication
//! (smart HTTP), which can also damage the packfiles it sends ([`PackFault`]).

use std::convert::Infallible;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tempfile::TempDir;

/// How long a server may take to start listening.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// Pause between connection attempts while waiting for a server.
const POLL: Duration = Duration::from_millis(10);

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls until `port` accepts connections; panics with the server's log if the process
/// exits or the deadline passes.
fn wait_for_port(port: u16, child: &mut Child, log: &Path, what: &str) {
    let deadline = Instant::now() + START_DEADLINE;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}) before listening on {port}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "{what} did not listen on {port} within {START_DEADLINE:?}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(POLL);
    }
}

fn git_command() -> Command {
    let mut command = Command::new("git");
    command
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1");
    command
}

/// Publish a bare clone of the working repository `work` as `<root>/<name>` (what a server
/// serves); push later commits to it with `git push <returned path> main`.
pub fn bare_clone(work: &Path, root: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(root).unwrap();
    let bare = root.join(name);
    super::git(
        root,
        &["clone", "-q", "--bare", work.to_str().unwrap(), bare.to_str().unwrap()],
    );
    bare
}

/// `git daemon` exporting every repository under `base` (`git://127.0.0.1:<port>/<name>`).
pub struct GitDaemon {
    child: Option<Child>,
    /// The listening port.
    pub port: u16,
    base: PathBuf,
    log: PathBuf,
}

impl GitDaemon {
    /// Starts a daemon serving the repositories under `base`; `log_dir` receives its log.
    pub fn start(base: &Path, log_dir: &Path) -> GitDaemon {
        let port = free_port();
        let log = log_dir.join(format!("git-daemon-{port}.log"));
        let child = Self::spawn(base, port, &log);
        GitDaemon {
            child: Some(child),
            port,
            base: base.to_owned(),
            log,
        }
    }

    /// Starts the daemon again on the same port after [`GitDaemon::stop`] (the server is back).
    pub fn restart(&mut self) {
        self.stop();
        self.child = Some(Self::spawn(&self.base, self.port, &self.log));
    }

    fn spawn(base: &Path, port: u16, log: &Path) -> Child {
        // The daemon binary itself: `git daemon` would run it as a child that outlives a kill.
        let exec_path = git_command().arg("--exec-path").output().expect("git --exec-path");
        let exec_path = PathBuf::from(String::from_utf8_lossy(&exec_path.stdout).trim());
        let mut child = Command::new(exec_path.join("git-daemon"))
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .arg("--export-all")
            .arg("--informative-errors")
            .arg(format!("--base-path={}", base.display()))
            .arg(format!("--port={port}"))
            .arg("--listen=127.0.0.1")
            .arg("--reuseaddr")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap())
            .spawn()
            .expect("start git daemon");
        wait_for_port(port, &mut child, log, "git daemon");
        child
    }

    /// The git:// URL of the repository `name` under the base path.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }

    /// Stops the daemon now (connections are refused afterwards).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An SSH key pair made by `ssh-keygen`.
pub struct SshKey {
    /// The private key file's text (OpenSSH format).
    pub private: String,
    /// The public key line (`ssh-ed25519 AAAA... comment`).
    pub public: String,
}

/// A new ed25519 key pair in `dir/name`, encrypted with `passphrase` if given.
pub fn ssh_keygen(dir: &Path, name: &str, passphrase: Option<&str>) -> SshKey {
    let path = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-C", name, "-N", passphrase.unwrap_or(""), "-f"])
        .arg(&path)
        .output()
        .expect("run ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    SshKey {
        private: std::fs::read_to_string(&path).unwrap(),
        public: std::fs::read_to_string(path.with_extension("pub"))
            .unwrap()
            .trim()
            .to_owned(),
    }
}

/// OpenSSH's sshd on loopback, running as the current user with its own host key and
/// authorized keys; repositories are addressed by absolute path.
pub struct Sshd {
    child: Option<Child>,
    /// The listening port.
    pub port: u16,
    /// The host key's public line (`ssh-ed25519 AAAA...`).
    pub host_key: String,
    /// The login user (the current user).
    pub user: String,
    dir: TempDir,
}

impl Sshd {
    /// Path of the OpenSSH server (Debian's openssh-server).
    pub const SSHD: &'static str = "/usr/sbin/sshd";

    /// Starts sshd accepting the given public keys.
    pub fn start(authorized_keys: &[&str]) -> Sshd {
        assert!(
            Path::new(Self::SSHD).exists(),
            "{} is missing: install openssh-server (scripts/test does)",
            Self::SSHD
        );
        let dir = tempfile::tempdir().unwrap();
        let host = ssh_keygen(dir.path(), "host_ed25519", None);
        let authorized = dir.path().join("authorized_keys");
        std::fs::write(&authorized, authorized_keys.join("\n") + "\n").unwrap();
        let user = current_user();
        let is_root = user == "root";
        if is_root {
            // sshd's privilege separation directory (made by the service unit, which never ran).
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        let port = free_port();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\n\
                 ListenAddress 127.0.0.1\n\
                 HostKey {host_key}\n\
                 AuthorizedKeysFile {authorized}\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PermitRootLogin prohibit-password\n\
                 PermitUserRC no\n\
                 PermitUserEnvironment no\n\
                 AllowTcpForwarding no\n\
                 X11Forwarding no\n\
                 PrintMotd no\n\
                 UseDNS no\n\
                 PidFile {pid}\n\
                 LogLevel VERBOSE\n",
                host_key = dir.path().join("host_ed25519").display(),
                authorized = authorized.display(),
                pid = dir.path().join("sshd.pid").display(),
            ),
        )
        .unwrap();
        let log = dir.path().join("sshd.log");
        let mut child = Command::new(Self::SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start sshd");
        wait_for_port(port, &mut child, &log, "sshd");
        let mut parts = host.public.split_whitespace();
        let host_key = format!("{} {}", parts.next().unwrap(), parts.next().unwrap());
        Sshd {
            child: Some(child),
            port,
            host_key,
            user,
            dir,
        }
    }

    /// The ssh:// URL of the repository at the absolute path `repo`.
    pub fn url(&self, repo: &Path) -> String {
        format!("ssh://{}@127.0.0.1:{}{}", self.user, self.port, repo.display())
    }

    /// The known_hosts line for this server.
    pub fn known_hosts(&self) -> String {
        format!("[127.0.0.1]:{} {}\n", self.port, self.host_key)
    }

    /// sshd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("run id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// What the smart HTTP server demands.
#[derive(Debug, Clone)]
pub enum HttpAuth {
    /// Anonymous.
    None,
    /// `Authorization: Basic` with this user and password.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(String),
}

/// What the smart HTTP server does to the packfile in its `git-upload-pack` answers, as a
/// broken disk, proxy or server would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackFault {
    /// Send it as `git http-backend` wrote it.
    None,
    /// Flip bytes in the middle of the packfile (the pkt-line framing stays intact).
    Corrupt,
    /// End the answer halfway through the packfile.
    Truncate,
}

/// The switchable fault of a server and how many answers it damaged.
#[derive(Debug)]
struct PackFaults {
    mode: Mutex<PackFault>,
    damaged: AtomicUsize,
}

/// Git smart HTTP: `git http-backend` as CGI over the repositories under a root, behind
/// [`HttpAuth`] (401 with a Basic challenge otherwise). Plain HTTP on loopback.
pub struct SmartHttp {
    /// The listening port.
    pub port: u16,
    faults: Arc<PackFaults>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SmartHttp {
    /// Starts serving the repositories under `root`; listening when this returns.
    pub fn start(root: &Path, auth: HttpAuth) -> SmartHttp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (shutdown, mut stop) = tokio::sync::oneshot::channel();
        let root = Arc::new(root.to_owned());
        let auth = Arc::new(auth);
        let faults = Arc::new(PackFaults {
            mode: Mutex::new(PackFault::None),
            damaged: AtomicUsize::new(0),
        });
        let served_faults = faults.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let stream = tokio::select! {
                        _ = &mut stop => break,
                        accepted = listener.accept() => match accepted {
                            Ok((stream, _)) => stream,
                            Err(_) => continue,
                        },
                    };
                    let (root, auth, faults) = (root.clone(), auth.clone(), served_faults.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            handle(request, root.clone(), auth.clone(), faults.clone())
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        SmartHttp {
            port,
            faults,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// The http:// URL of the repository `name` under the root.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    /// Damage the packfiles of later answers (or stop: [`PackFault::None`]).
    pub fn set_pack_fault(&self, fault: PackFault) {
        *self.faults.mode.lock().unwrap() = fault;
    }

    /// How many answers carried a damaged packfile so far.
    pub fn damaged_packs(&self) -> usize {
        self.faults.damaged.load(Ordering::SeqCst)
    }
}

impl Drop for SmartHttp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn authorized(request: &Request<Incoming>, auth: &HttpAuth) -> bool {
    let header = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth {
        HttpAuth::None => true,
        HttpAuth::Basic { user, password } => {
            let want = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            header == Some(format!("Basic {want}").as_str())
        }
        HttpAuth::Bearer(token) => header == Some(format!("Bearer {token}").as_str()),
    }
}

async fn handle(
    request: Request<Incoming>,
    root: Arc<PathBuf>,
    auth: Arc<HttpAuth>,
    faults: Arc<PackFaults>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if !authorized(&request, &auth) {
        return Ok(Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(hyper::header::WWW_AUTHENTICATE, "Basic realm=\"git\"")
            .body(Full::new(Bytes::from_static(b"authentication required\n")))
            .unwrap());
    }
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let env = vec![
        ("GIT_PROJECT_ROOT", root.display().to_string()),
        ("GIT_HTTP_EXPORT_ALL", "1".to_owned()),
        ("PATH_INFO", request.uri().path().to_owned()),
        ("QUERY_STRING", request.uri().query().unwrap_or("").to_owned()),
        ("REQUEST_METHOD", request.method().as_str().to_owned()),
        ("CONTENT_TYPE", header("content-type")),
        ("HTTP_CONTENT_ENCODING", header("content-encoding")),
        ("HTTP_GIT_PROTOCOL", header("git-protocol")),
        ("REMOTE_USER", "tester".to_owned()),
        ("REMOTE_ADDR", "127.0.0.1".to_owned()),
    ];
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST, "unreadable body")),
    };
    let upload_pack = request_is_upload_pack(&env);
    let output = tokio::task::spawn_blocking(move || run_cgi(env, &body)).await;
    let Ok(Ok(mut output)) = output else {
        return Ok(status(StatusCode::INTERNAL_SERVER_ERROR, "git http-backend failed"));
    };
    let fault = *faults.mode.lock().unwrap();
    if upload_pack && fault != PackFault::None && damage_pack(&mut output, fault) {
        faults.damaged.fetch_add(1, Ordering::SeqCst);
    }
    Ok(cgi_response(&output))
}

fn request_is_upload_pack(env: &[(&'static str, String)]) -> bool {
    let value = |name: &str| env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
    value("REQUEST_METHOD") == Some("POST") && value("PATH_INFO").is_some_and(|p| p.ends_with("/git-upload-pack"))
}

/// Damages the packfile in CGI `output` (headers, blank line, pkt-lines with the pack on
/// side-band channel 1) as `fault` says; false when the answer carries no packfile (a
/// negotiation round).
fn damage_pack(output: &mut Vec<u8>, fault: PackFault) -> bool {
    let body = output
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
        .or_else(|| output.windows(2).position(|w| w == b"\n\n").map(|at| at + 2));
    let Some(body) = body else {
        return false;
    };
    let mut at = body;
    while at + 4 <= output.len() {
        let Some(length) = std::str::from_utf8(&output[at..at + 4])
            .ok()
            .and_then(|hex| usize::from_str_radix(hex, 16).ok())
        else {
            return false;
        };
        if length < 4 {
            at += 4; // flush, delimiter or response-end packet
            continue;
        }
        let payload = &output[at + 4..(at + length).min(output.len())];
        if payload.starts_with(b"\x01PACK") && payload.len() > 1 + 12 + 8 {
            // The middle of what follows the 12-byte pack header in this packet.
            let middle = at + 4 + 1 + 12 + (payload.len() - 13) / 2;
            match fault {
                PackFault::None => return false,
                PackFault::Corrupt => {
                    for byte in &mut output[middle..middle + 4] {
                        *byte ^= 0xff;
                    }
                }
                PackFault::Truncate => output.truncate(middle),
            }
            return true;
        }
        at += length;
    }
    false
}

fn status(code: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .body(Full::new(Bytes::from_static(text.as_bytes())))
        .unwrap()
}

fn run_cgi(env: Vec<(&'static str, String)>, body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut command = git_command();
    command
        .arg("http-backend")
        .envs(env)
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = body.to_vec();
    // Write the request while reading the response: both may exceed a pipe buffer.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut output = Vec::new();
    child.stdout.take().expect("piped stdout").read_to_end(&mut output)?;
    let _ = writer.join();
    child.wait()?;
    Ok(output)
}

/// CGI output: header lines, a blank line, the body; `Status:` sets the status code.
fn cgi_response(output: &[u8]) -> Response<Full<Bytes>> {
    let split = output
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| (at, 4))
        .or_else(|| output.windows(2).position(|w| w == b"\n\n").map(|at| (at, 2)));
    let Some((at, separator)) = split else {
        return status(StatusCode::BAD_GATEWAY, "malformed CGI output");
    };
    let head = String::from_utf8_lossy(&output[..at]);
    let mut response = Response::builder().status(StatusCode::OK);
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u16>().ok())
                .unwrap_or(500);
            response = response.status(code);
        } else {
            response = response.header(name.trim(), value);
        }
    }
    response
        .body(Full::new(Bytes::copy_from_slice(&output[at + separator..])))
        .unwrap()
}
