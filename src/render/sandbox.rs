//! Running a rendering tool (kustomize, helm, jsonnet) over an untrusted checkout.
//!
//! A repository is untrusted input. The child gets no environment beyond `PATH`, a fresh
//! temporary `HOME`/`TMPDIR`/`XDG_*` (removed afterwards) and what the caller passes: no
//! credentials, kubeconfig or cloud variables leak in. Its working directory must lie inside
//! the checkout, stdin is closed, stdout is captured up to a cap, stderr is kept (capped) for
//! messages, and the whole process group is killed when the time is up or the output too
//! large. Network isolation is not done here: callers refuse remote references before
//! running (see `kustomize`).

use std::ffi::OsString;
use std::fs::DirBuilder;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The `PATH` a child sees.
const CHILD_PATH: &str = "/usr/bin:/bin";
/// How much of stderr is kept for messages.
const MAX_STDERR_BYTES: usize = 64 * 1024;
/// How long to wait for the output pipes to close once the group has been killed.
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(1);
/// Where `find_program` looks when the process has no `PATH`.
const DEFAULT_SEARCH_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Bounds of one child process.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock time before the process group is killed.
    pub timeout: Duration,
    /// Most stdout bytes accepted; more kills the process group.
    pub max_output_bytes: usize,
}

impl Default for Limits {
    /// 30 seconds, 64 MiB.
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(30),
            max_output_bytes: 64 * 1024 * 1024,
        }
    }
}

/// One program run inside a checkout.
pub struct Invocation<'a> {
    /// Absolute path, resolved by the caller (see [`find_program`]).
    pub program: &'a Path,
    /// The arguments.
    pub args: Vec<OsString>,
    /// The working directory; must be inside `root`.
    pub cwd: &'a Path,
    /// The checkout root.
    pub root: &'a Path,
    /// The only environment besides `PATH` and a temporary `HOME`/`TMPDIR`/`XDG_*` dirs.
    pub env: Vec<(String, String)>,
    /// Time and output bounds.
    pub limits: Limits,
}

/// Why a sandboxed run produced no output.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The program could not be started (missing, not executable, no temp dir).
    #[error("could not start {program}: {error}")]
    Spawn {
        /// The program.
        program: String,
        /// What the operating system reported.
        error: std::io::Error,
    },
    /// It ran longer than the limit and was killed with its process group.
    #[error(
        "{program} killed after {after:?} (render timeout); make the render cheaper or raise the \
         render timeout"
    )]
    Timeout {
        /// The program.
        program: String,
        /// The limit.
        after: Duration,
    },
    /// It wrote more than the output cap and was killed with its process group.
    #[error(
        "{program} wrote more than {limit} bytes of output (the render output cap) and was \
         killed; render less or raise the cap"
    )]
    OutputTooLarge {
        /// The program.
        program: String,
        /// The cap in bytes.
        limit: usize,
    },
    /// It exited unsuccessfully.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// The exit status, e.g. `exit status: 1`.
        status: String,
        /// What it wrote on stderr (trimmed, capped).
        stderr: String,
    },
    /// The working directory is not inside the checkout.
    #[error("{path} is outside the checkout; tools run only inside the repository")]
    OutsideCheckout {
        /// The offending directory.
        path: String,
    },
}

/// The absolute path of `name` on the machine's `PATH` (None: not installed).
pub fn find_program(name: &str) -> Option<PathBuf> {
    if name.is_empty() || name.contains('/') {
        return None;
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_SEARCH_PATH.into());
    std::env::split_paths(&search)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Runs `invocation` in a clean environment (see the module documentation). `Ok(stdout)` when
/// it exits with status 0.
pub fn run(invocation: &Invocation<'_>) -> Result<Vec<u8>, SandboxError> {
    let program = invocation.program.display().to_string();
    let cwd = inside_root(invocation.cwd, invocation.root)?;
    let scratch = Scratch::create().map_err(|error| SandboxError::Spawn {
        program: program.clone(),
        error,
    })?;

    let mut command = Command::new(invocation.program);
    command
        .args(&invocation.args)
        .current_dir(&cwd)
        .env_clear()
        .env("PATH", CHILD_PATH)
        .envs(scratch.env())
        .envs(invocation.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command.spawn().map_err(|error| SandboxError::Spawn {
        program: program.clone(),
        error,
    })?;
    let started = Instant::now();

    let overflow = Arc::new(AtomicBool::new(false));
    let stdout = child
        .stdout
        .take()
        .map(|pipe| spawn_reader(pipe, invocation.limits.max_output_bytes, Some(Arc::clone(&overflow))));
    let stderr = child
        .stderr
        .take()
        .map(|pipe| spawn_reader(pipe, MAX_STDERR_BYTES, None));

    let outcome = supervise(
        &mut child,
        started,
        invocation.limits.timeout,
        &overflow,
        &[&stdout, &stderr],
    );
    let status = match outcome {
        Outcome::Exited(status) => status,
        Outcome::TimedOut | Outcome::Overflowed => {
            kill_group(&mut child);
            wait_readers(&[&stdout, &stderr], Instant::now() + DRAIN_AFTER_KILL);
            drop(scratch);
            return Err(if matches!(outcome, Outcome::Overflowed) {
                SandboxError::OutputTooLarge {
                    program,
                    limit: invocation.limits.max_output_bytes,
                }
            } else {
                SandboxError::Timeout {
                    program,
                    after: invocation.limits.timeout,
                }
            });
        }
    };
    let stdout = join_reader(stdout);
    let stderr = join_reader(stderr);
    drop(scratch);
    if status.success() {
        Ok(stdout)
    } else {
        Err(SandboxError::Failed {
            program,
            status: status.to_string(),
            stderr: String::from_utf8_lossy(&stderr).trim().to_owned(),
        })
    }
}

/// The canonical `cwd`, when it lies inside `root`.
fn inside_root(cwd: &Path, root: &Path) -> Result<PathBuf, SandboxError> {
    let outside = || SandboxError::OutsideCheckout {
        path: cwd.display().to_string(),
    };
    let root = root.canonicalize().map_err(|_| outside())?;
    let cwd = cwd.canonicalize().map_err(|_| outside())?;
    if cwd.starts_with(&root) {
        Ok(cwd)
    } else {
        Err(outside())
    }
}

enum Outcome {
    Exited(ExitStatus),
    TimedOut,
    Overflowed,
}

type Reader = Option<JoinHandle<Vec<u8>>>;

/// Waits for the child to exit and its pipes to close, the deadline, or an output overflow.
fn supervise(
    child: &mut Child,
    started: Instant,
    timeout: Duration,
    overflow: &AtomicBool,
    readers: &[&Reader],
) -> Outcome {
    let deadline = started + timeout;
    let mut status = None;
    let mut pause = Duration::from_millis(1);
    loop {
        if overflow.load(Ordering::Acquire) {
            return Outcome::Overflowed;
        }
        if status.is_none() {
            match child.try_wait() {
                Ok(Some(exited)) => status = Some(exited),
                Ok(None) => {}
                // Cannot happen for a child we spawned; treat it as gone.
                Err(error) => {
                    tracing::warn!(%error, "waiting for a render process");
                    return Outcome::TimedOut;
                }
            }
        }
        // Output is complete once the pipes close (a leftover grandchild may hold them).
        if let Some(exited) = status
            && readers_done(readers)
        {
            return Outcome::Exited(exited);
        }
        if Instant::now() >= deadline {
            return Outcome::TimedOut;
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn readers_done(readers: &[&Reader]) -> bool {
    readers
        .iter()
        .all(|reader| reader.as_ref().is_none_or(JoinHandle::is_finished))
}

fn wait_readers(readers: &[&Reader], until: Instant) {
    while !readers_done(readers) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn join_reader(reader: Reader) -> Vec<u8> {
    reader.and_then(|handle| handle.join().ok()).unwrap_or_default()
}

/// Reads `pipe` on a thread, keeping at most `cap` bytes. With `overflow`, exceeding the cap
/// sets it and stops reading; without, the rest is read and dropped (so the child never
/// blocks on a full pipe).
fn spawn_reader(
    mut pipe: impl Read + Send + 'static,
    cap: usize,
    overflow: Option<Arc<AtomicBool>>,
) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let read = match pipe.read(&mut chunk) {
                Ok(0) => break,
                Ok(read) => read,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let room = cap.saturating_sub(kept.len());
            kept.extend_from_slice(chunk.get(..read.min(room)).unwrap_or_default());
            if read > room
                && let Some(flag) = &overflow
            {
                flag.store(true, Ordering::Release);
                break;
            }
        }
        kept
    })
}

/// Kills the child's whole process group, then the child, and reaps it.
fn kill_group(child: &mut Child) {
    // The child leads its own group (`process_group(0)`): its id is the group id, and stays
    // reserved until the child is reaped below.
    let group = format!("-{}", child.id());
    if let Some(kill) = ["/usr/bin/kill", "/bin/kill"]
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
    {
        let result = Command::new(kill)
            .args(["-s", "KILL", "--", &group])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Err(error) = result {
            tracing::warn!(%error, "could not kill a render process group");
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A fresh private directory for the child's `HOME`, `TMPDIR` and `XDG_*`, removed on drop.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn create() -> std::io::Result<Scratch> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let base = std::env::temp_dir();
        let mut last = None;
        for _ in 0..16 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = base.join(format!("driftguard-render-{}-{n}-{nanos}", std::process::id()));
            match DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    let scratch = Scratch { dir };
                    for sub in ["home", "tmp", "config", "cache", "data", "state"] {
                        DirBuilder::new().mode(0o700).create(scratch.dir.join(sub))?;
                    }
                    return Ok(scratch);
                }
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => last = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no temporary directory name was free")))
    }

    fn env(&self) -> [(&'static str, PathBuf); 6] {
        [
            ("HOME", self.dir.join("home")),
            ("TMPDIR", self.dir.join("tmp")),
            ("XDG_CONFIG_HOME", self.dir.join("config")),
            ("XDG_CACHE_HOME", self.dir.join("cache")),
            ("XDG_DATA_HOME", self.dir.join("data")),
            ("XDG_STATE_HOME", self.dir.join("state")),
        ]
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), %error, "could not remove a render scratch directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh() {
        let sh = find_program("sh").expect("sh is installed");
        assert!(sh.is_absolute());
        assert_eq!(find_program("driftguard-no-such-program"), None);
        assert_eq!(find_program("/bin/sh"), None);
    }

    #[test]
    fn default_limits() {
        let limits = Limits::default();
        assert_eq!(limits.timeout, Duration::from_secs(30));
        assert_eq!(limits.max_output_bytes, 64 << 20);
    }
}
