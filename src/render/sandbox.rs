//! Running renderer programs (placeholder: replaced by the sandboxed runner at merge).

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bounds on one run of a renderer program.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock time before the program is killed.
    pub timeout: Duration,
    /// Most bytes of standard output accepted.
    pub max_output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(30),
            max_output_bytes: 64 * 1024 * 1024,
        }
    }
}

/// One run of a renderer program.
pub struct Invocation<'a> {
    /// The program.
    pub program: &'a Path,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Its working directory.
    pub cwd: &'a Path,
    /// The checkout root it may read.
    pub root: &'a Path,
    /// Its environment (nothing else is inherited but PATH).
    pub env: Vec<(String, String)>,
    /// Its bounds.
    pub limits: Limits,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The program could not be started.
    #[error("cannot run {program}: {error}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        error: std::io::Error,
    },
    /// The program ran too long.
    #[error("{program} did not finish within {after:?}")]
    Timeout {
        /// The program.
        program: String,
        /// The limit.
        after: Duration,
    },
    /// The program printed too much.
    #[error("{program} printed more than {limit} bytes")]
    OutputTooLarge {
        /// The program.
        program: String,
        /// The limit.
        limit: usize,
    },
    /// The program exited unsuccessfully.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// Its exit status.
        status: String,
        /// What it printed on standard error.
        stderr: String,
    },
    /// A path leaves the checkout.
    #[error("{path} is outside the checkout")]
    OutsideCheckout {
        /// The path.
        path: String,
    },
}

/// Runs the program; its standard output on success.
pub fn run(invocation: &Invocation<'_>) -> Result<Vec<u8>, SandboxError> {
    let program = invocation.program.display().to_string();
    let mut command = Command::new(invocation.program);
    command
        .args(&invocation.args)
        .current_dir(invocation.cwd)
        .env_clear()
        .envs(invocation.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    let mut child = command.spawn().map_err(|error| SandboxError::Spawn {
        program: program.clone(),
        error,
    })?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|error| SandboxError::Spawn {
            program: program.clone(),
            error,
        })? {
            break status;
        }
        if start.elapsed() > invocation.limits.timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SandboxError::Timeout {
                program,
                after: invocation.limits.timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(SandboxError::Failed {
            program,
            status: status.to_string(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
        });
    }
    if out.len() > invocation.limits.max_output_bytes {
        return Err(SandboxError::OutputTooLarge {
            program,
            limit: invocation.limits.max_output_bytes,
        });
    }
    Ok(out)
}

/// Finds `name` on PATH.
pub fn find_program(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}
