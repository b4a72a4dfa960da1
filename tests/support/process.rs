//! The real `driftguard` binary as a child process, with its output lines streamed into
//! channels.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

pub fn recv_until(rx: &mpsc::Receiver<String>, what: &str, mut found: impl FnMut(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if found(&line) => return line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no line with {what}; saw:\n{}", seen.join("\n")),
        }
    }
}

pub fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text
        .find(start)
        .map(|i| i + start.len())
        .unwrap_or_else(|| panic!("{start:?} in {text}"));
    let rest = &text[from..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

/// Start `driftguard serve ARGS` in `dir`; returns it with its stderr (logs) and stdout (audit)
/// lines.
pub fn spawn_serve(dir: &Path, args: &[&std::ffi::OsStr]) -> (Child, mpsc::Receiver<String>, mpsc::Receiver<String>) {
    spawn_serve_with_env(dir, args, &[])
}

/// [`spawn_serve`] with extra environment variables (e.g. `POD_NAMESPACE`, `POD_NAME`).
pub fn spawn_serve_with_env(
    dir: &Path,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
) -> (Child, mpsc::Receiver<String>, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_driftguard"))
        .arg("serve")
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("driftguard starts");
    let stderr = lines(child.stderr.take().unwrap());
    let audit = lines(child.stdout.take().unwrap());
    (child, stderr, audit)
}

/// Collects every line of `rx` until its stream ends (the child closed the pipe, i.e. exited).
pub fn collect(rx: mpsc::Receiver<String>) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || rx.iter().collect())
}

/// The webhook address from serve's `driftguard is serving admission addr=...` log line.
pub fn serving_addr(stderr: &mpsc::Receiver<String>) -> std::net::SocketAddr {
    let line = recv_until(stderr, "the serving address", |l| {
        l.contains("driftguard is serving admission")
    });
    between(&line, "addr=", " ")
        .parse()
        .unwrap_or_else(|e| panic!("no addr= in {line}: {e}"))
}

/// Sends SIGTERM, what the kubelet sends first.
pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -TERM {}: {status}", child.id());
}

/// Waits up to `within` for `child` to exit; kills it and fails the test past that.
pub fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("driftguard (pid {}) did not exit within {within:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
