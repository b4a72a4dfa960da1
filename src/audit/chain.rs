//! The tamper-evident audit chain and its writer.
//!
//! # Record format
//!
//! Every record is one line of UTF-8 JSON: the event's **canonical form** with one member,
//! `"hash":"<64 hex digits>"`, appended as the last member:
//!
//! ```text
//! {"actor":{...},"dry_run":false,"event":"admission.denied",...,"prev_hash":"…","schema":"driftguard.io/audit/v1","seq":7,"time":"…","hash":"…"}
//! ```
//!
//! - `seq` numbers the records of the chain 1, 2, 3, ... without gaps (events dropped by a full
//!   queue take no number; an `audit.dropped` record counts them instead).
//! - `prev_hash` is the `hash` of the previous record; the first record of a chain has
//!   [`GENESIS_HASH`] (64 zeros).
//! - `hash` is the lowercase hex SHA-256 of the canonical form of the record **without** `hash`
//!   (including `seq` and `prev_hash`). Those are exactly the bytes of the line with its
//!   trailing `,"hash":"…"` member removed and `}` put back, so a verifier can hash the bytes
//!   as written, or re-canonicalize the parsed JSON: both give the same digest.
//!
//! # Canonical form
//!
//! [`canonical_json`]: JSON with no whitespace at all; object keys sorted by their UTF-8 bytes
//! (recursively, at every depth); array order kept; strings escaped as `serde_json` writes them
//! (only `"`, `\` and control characters escaped, everything else as raw UTF-8); numbers as
//! `serde_json` prints them (integers in decimal, floats in shortest round-trip form); `true`,
//! `false`, `null` literally. The order in which a producer wrote the keys never matters.
//!
//! # Sinks, rotation and restart
//!
//! [`ChainSink`] assigns `seq`, `prev_hash` and `hash` once, on one writer thread, and writes
//! the same line to stdout (always) and, with [`AuditConfig::file`], appends it to that file.
//! Before a line would take the file over [`AuditConfig::max_file_bytes`] the file is rotated:
//! `audit.log.N-1` → `audit.log.N`, ..., `audit.log` → `audit.log.1`, and a new `audit.log` is
//! started; `audit.log.K` for `K > keep_files` is deleted. The chain simply continues in the new
//! file. At start the sink reads the last record of `audit.log` (or of `audit.log.1` when
//! `audit.log` is empty or missing) and continues its `seq` and `hash`; a torn last line (no
//! newline: the process died while writing) is cut off first. Without a file the chain starts at
//! seq 1 in each process.
//!
//! # Backpressure
//!
//! [`AuditSink::record`] never blocks: it puts the event in a bounded queue
//! ([`AuditConfig::queue_capacity`]). When the queue is full the event is dropped, counted
//! ([`ChainSink::dropped_total`], the `driftguard_audit_dropped_total` metric) and logged (once per
//! burst), and as soon as the writer catches up it writes an `audit.dropped` record whose
//! `dropped` member is the number of events lost since the previous one, so the gap is visible
//! in the chain and reported by verification.
//!
//! # When the file cannot be written (disk full)
//!
//! Stdout always gets every record at once. A record the file does not take (`ENOSPC`, `EIO`,
//! the file or its directory gone, a failed rotation) is not lost: the writer keeps it, in chain
//! order, in a backlog bounded by [`AuditConfig::file_backlog_bytes`], and retries with
//! exponential backoff (0.1 s doubling to 5 s) from its own thread, also when no new records
//! arrive. Every retry reopens the path (the operator may have freed space, or moved, deleted or
//! replaced the file). A line the kernel took only in part (a short write before `ENOSPC`) is
//! cut off again (truncated back to the last complete line, and on reopen any bytes after the
//! file's last newline are cut, as at start), so no torn record is left in the middle of the
//! file. Once the file takes writes again the backlog is written, in order, before any newer
//! record: the file's chain has no gap and verifies. Rotation works as usual across this. Every
//! failed attempt (write, reopen, rotation, fsync) counts in
//! `driftguard_audit_file_write_failures_total`; `driftguard_audit_file_backlog_records` is the
//! number of lines waiting. The log names the file and the OS error, never a record's content.
//!
//! When the path is moved away or deleted while the file is healthy (seen within about a second),
//! the writer reopens the path and continues the chain in a new file there, instead of writing
//! into a file nobody can see any more.
//!
//! When the backlog is full, further records are dropped **from the file only** (they were on
//! stdout), counted in `driftguard_audit_file_dropped_total` and logged once per burst. The file
//! then says so itself: as soon as there is room again (the backlog drained, or a new record
//! comes), the writer puts a **file gap marker** where the records are missing, a line sealed
//! like a record (it has a `hash` over its canonical form) with `"event":"audit.file_gap"`:
//!
//! - `first_seq` and `seq`: the first and last missing `seq`; `dropped`: how many;
//! - `prev_hash`: the `hash` of the record before the gap (the last one in the file);
//! - `last_hash`: the `hash` of the last missing record, which the next record's `prev_hash`
//!   names.
//!
//! A marker takes no `seq` of its own and never appears on stdout (whose chain has every record).
//! [`super::verify`] checks that the marker links to the record before it and that the record
//! after it links to `last_hash`, so the rest of the file stays verified, and reports the gap as
//! a warning naming the missing seq range (those records are on stdout only). A verifier that
//! does not know markers fails at the record after the gap: a gap is never silent. Resuming after
//! a restart treats a marker as the last record (`seq`, `last_hash`).
//!
//! # Shutdown
//!
//! Dropping the sink writes what is queued, makes a last attempt to write the backlog (whatever
//! the backoff), and logs how many records could not be written to the file.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use super::digest::{Anchor, ChainIdentity, Digest, OnDigest, new_chain_id};
use super::signing::SignerSlot;
use super::{AuditEvent, AuditSink, EventKind};

/// `prev_hash` of the first record of a chain: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The canonical form of a JSON value (see the module documentation).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Seal one record: set `seq` and `prev_hash`, drop any `hash`, and return the line (without
/// newline) and its hash.
pub fn seal(mut object: Map<String, Value>, seq: u64, prev_hash: &str) -> (String, String) {
    object.remove("hash");
    object.insert("seq".to_owned(), Value::from(seq));
    object.insert("prev_hash".to_owned(), Value::from(prev_hash));
    let mut line = canonical_json(&Value::Object(object));
    let hash = sha256_hex(line.as_bytes());
    line.pop();
    line.push_str(",\"hash\":\"");
    line.push_str(&hash);
    line.push_str("\"}");
    (line, hash)
}

/// Split a record line into the hashed body (the line without its trailing `hash` member) and
/// the hash it claims; None when the line does not end with a `hash` member.
pub fn split_line(line: &str) -> Option<(String, &str)> {
    const SUFFIX_LEN: usize = ",\"hash\":\"".len() + 64 + "\"}".len();
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.len() < SUFFIX_LEN + 2 || !line.is_char_boundary(line.len() - SUFFIX_LEN) {
        return None;
    }
    let (head, tail) = line.split_at(line.len() - SUFFIX_LEN);
    let hash = tail.strip_prefix(",\"hash\":\"")?.strip_suffix("\"}")?;
    if !hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    Some((format!("{head}}}"), hash))
}

/// When the file sink calls fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every record (`fsync: always`).
    Always,
    /// At most this long after a record was written (`fsync: 1s`).
    Every(Duration),
}

/// Validated settings of the audit sink (the config file's `audit:` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// Append-only file (`audit.log`); None: stdout only.
    pub file: Option<PathBuf>,
    /// Rotate before a record would take the file over this size.
    pub max_file_bytes: u64,
    /// Rotated files kept (`audit.log.1` ... `audit.log.N`); older ones are deleted.
    pub keep_files: usize,
    /// fsync policy of the file.
    pub fsync: FsyncPolicy,
    /// Events that may wait for the writer; more are dropped (and counted).
    pub queue_capacity: usize,
    /// Bytes of records kept for the file while it cannot be written (disk full); records past
    /// this are dropped from the file only, and a gap marker says so (see the module docs).
    pub file_backlog_bytes: u64,
    /// How often a writer with a signing key appends a signed digest (see [`super::digest`]).
    pub digest_interval: Duration,
}

/// Default of [`AuditConfig::digest_interval`]: 5 minutes.
pub const DEFAULT_DIGEST_INTERVAL: Duration = Duration::from_secs(300);

/// Default of [`AuditConfig::file_backlog_bytes`]: 64 MiB.
pub const DEFAULT_FILE_BACKLOG_BYTES: u64 = 64 * 1024 * 1024;

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            file: None,
            max_file_bytes: 100 * 1024 * 1024,
            keep_files: 10,
            fsync: FsyncPolicy::Every(Duration::from_secs(1)),
            queue_capacity: 16 * 1024,
            file_backlog_bytes: DEFAULT_FILE_BACKLOG_BYTES,
            digest_interval: DEFAULT_DIGEST_INTERVAL,
        }
    }
}

/// The metrics the file writer reports into (registered by `telemetry::Metrics`); unregistered
/// defaults count just the same.
#[derive(Debug, Clone, Default)]
pub struct AuditFileMetrics {
    /// `driftguard_audit_file_write_failures_total`: failed attempts to write, reopen, rotate
    /// or fsync the audit file.
    pub write_failures: Counter,
    /// `driftguard_audit_file_backlog_records`: lines waiting for the file after a failed write.
    pub backlog_records: Gauge,
    /// `driftguard_audit_file_dropped_total`: records dropped from the file (not from stdout)
    /// because the backlog was full.
    pub dropped: Counter,
}

/// Builds a [`ChainSink`].
pub struct ChainSinkBuilder {
    config: AuditConfig,
    console: Option<Box<dyn Write + Send>>,
    counter: Option<Counter>,
    file_metrics: AuditFileMetrics,
    replica: Option<String>,
    signer: Option<Arc<SignerSlot>>,
    on_digest: Option<OnDigest>,
}

/// This host's name (the replica name of a standalone writer).
pub fn host_name() -> String {
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    match host.trim() {
        "" => "standalone".to_owned(),
        host => host.to_owned(),
    }
}

impl ChainSinkBuilder {
    /// The replica named in every record (default: the host name).
    pub fn replica(mut self, replica: impl Into<String>) -> Self {
        self.replica = Some(replica.into());
        self
    }

    /// Append a signed digest every [`AuditConfig::digest_interval`] and at shutdown, with the
    /// key in `signer` (none in it yet: the digest waits).
    pub fn signer(mut self, signer: Arc<SignerSlot>) -> Self {
        self.signer = Some(signer);
        self
    }

    /// Called on the writer thread with each digest written (to keep it outside the log);
    /// must not block.
    pub fn on_digest(mut self, anchor: OnDigest) -> Self {
        self.on_digest = Some(anchor);
        self
    }

    /// Write the stdout copy of each line here instead (tests, or `io::sink()`).
    pub fn console(mut self, writer: Box<dyn Write + Send>) -> Self {
        self.console = Some(writer);
        self
    }

    /// Also count drops in this counter (`driftguard_audit_dropped_total`).
    pub fn dropped_counter(mut self, counter: Counter) -> Self {
        self.counter = Some(counter);
        self
    }

    /// Report the file's write failures, backlog and drops in these metrics.
    pub fn file_metrics(mut self, metrics: AuditFileMetrics) -> Self {
        self.file_metrics = metrics;
        self
    }

    /// Open the file (resuming its chain) and start the writer thread.
    pub fn start(self) -> io::Result<ChainSink> {
        let resumed = match &self.config.file {
            Some(path) => resume(path)?,
            None => Resumed::default(),
        };
        let identity = ChainIdentity {
            replica: self.replica.unwrap_or_else(host_name),
            chain: resumed.chain.clone().unwrap_or_else(new_chain_id),
        };
        let file = match &self.config.file {
            Some(path) => Some(FileLog::open(path, &self.config, self.file_metrics, identity.clone())?),
            None => None,
        };
        let Resumed { seq, prev, .. } = resumed;
        let digests = self.signer.map(|signer| Digests {
            signer,
            interval: self.config.digest_interval,
            next_at: Instant::now() + self.config.digest_interval,
            last_seq: resumed.last_digest.as_ref().map_or(0, |d| d.0),
            last_signature: resumed.last_digest.map(|d| d.1).unwrap_or_default(),
            on_digest: self.on_digest,
        });
        let shared = Arc::new(Shared {
            pending_dropped: AtomicU64::new(0),
            dropped_total: AtomicU64::new(0),
            counter: self.counter,
            head: Mutex::new((seq, prev.clone())),
        });
        let (tx, rx) = mpsc::sync_channel::<Msg>(self.config.queue_capacity.max(1));
        let mut writer = Writer {
            console: self.console.unwrap_or_else(|| Box::new(io::stdout())),
            file,
            seq,
            prev,
            shared: shared.clone(),
            fsync: self.config.fsync,
            identity,
            digests,
        };
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(ChainSink {
            queue: Some(tx),
            shared,
            thread: Some(thread),
        })
    }
}

enum Msg {
    Event(Box<AuditEvent>),
    Flush(mpsc::Sender<()>),
    Digest(mpsc::Sender<()>),
}

struct Shared {
    pending_dropped: AtomicU64,
    dropped_total: AtomicU64,
    counter: Option<Counter>,
    head: Mutex<(u64, String)>,
}

/// The hash-chained sink: stdout always, plus an optional rotating append-only file (see the
/// module documentation). Dropping it writes what is queued and stops the writer.
pub struct ChainSink {
    queue: Option<SyncSender<Msg>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl ChainSink {
    /// A builder for `config`.
    pub fn builder(config: AuditConfig) -> ChainSinkBuilder {
        ChainSinkBuilder {
            config,
            console: None,
            counter: None,
            file_metrics: AuditFileMetrics::default(),
            replica: None,
            signer: None,
            on_digest: None,
        }
    }

    /// Events dropped because the queue was full, since start.
    pub fn dropped_total(&self) -> u64 {
        self.shared.dropped_total.load(Ordering::Relaxed)
    }

    /// The last record written: its `seq` and `hash` (seq 0 and [`GENESIS_HASH`] before any).
    pub fn head(&self) -> (u64, String) {
        match self.shared.head.lock() {
            Ok(head) => head.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Append a signed digest now (when there is a signer and records since the last one), and
    /// wait until it is written and flushed. Blocks: not for the request path.
    pub fn digest_now(&self) {
        if let Some(queue) = &self.queue {
            let (tx, rx) = mpsc::channel();
            if queue.send(Msg::Digest(tx)).is_ok() {
                let _ = rx.recv();
            }
        }
    }

    /// Wait until everything recorded so far is written to stdout and handed to the file,
    /// flushed and fsynced; records the file does not take yet stay in its backlog (see the
    /// module documentation). Blocks: not for the request path.
    pub fn flush(&self) {
        if let Some(queue) = &self.queue {
            let (tx, rx) = mpsc::channel();
            if queue.send(Msg::Flush(tx)).is_ok() {
                let _ = rx.recv();
            }
        }
    }
}

impl Drop for ChainSink {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl AuditSink for ChainSink {
    fn record(&self, event: AuditEvent) {
        let Some(queue) = &self.queue else { return };
        match queue.try_send(Msg::Event(Box::new(event))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let before = self.shared.pending_dropped.fetch_add(1, Ordering::Relaxed);
                self.shared.dropped_total.fetch_add(1, Ordering::Relaxed);
                if let Some(counter) = &self.shared.counter {
                    counter.inc();
                }
                if before == 0 {
                    tracing::warn!("audit queue full: dropping audit events until the writer catches up");
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::error!("audit writer stopped; event lost");
            }
        }
    }
}

struct Writer {
    console: Box<dyn Write + Send>,
    file: Option<FileLog>,
    seq: u64,
    prev: String,
    shared: Arc<Shared>,
    fsync: FsyncPolicy,
    identity: ChainIdentity,
    digests: Option<Digests>,
}

/// The signed digests of a writer.
struct Digests {
    signer: Arc<SignerSlot>,
    interval: Duration,
    next_at: Instant,
    /// `seq` of the last digest record (0: none yet).
    last_seq: u64,
    last_signature: String,
    on_digest: Option<OnDigest>,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Msg>) {
        // The tick also paces the file's retries while it cannot be written.
        let tick = match self.fsync {
            FsyncPolicy::Always => Duration::from_millis(100),
            FsyncPolicy::Every(every) => every.clamp(Duration::from_millis(1), Duration::from_millis(100)),
        };
        loop {
            let msg = match rx.try_recv() {
                Ok(msg) => Some(msg),
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    self.write_dropped();
                    self.flush(false);
                    match rx.recv_timeout(tick) {
                        Ok(msg) => Some(msg),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            match msg {
                Some(Msg::Event(event)) => {
                    self.write_dropped();
                    self.write_event(*event, None);
                }
                Some(Msg::Flush(done)) => {
                    self.write_dropped();
                    self.flush(true);
                    let _ = done.send(());
                }
                Some(Msg::Digest(done)) => {
                    self.write_dropped();
                    self.write_digest();
                    self.flush(true);
                    let _ = done.send(());
                }
                None => {}
            }
            if self.digests.as_ref().is_some_and(|d| Instant::now() >= d.next_at) {
                self.write_digest();
            }
            self.sync_if_due();
            if let Some(file) = &mut self.file {
                file.reopen_if_moved();
            }
        }
        self.write_dropped();
        // At shutdown: sign what came since the last digest.
        self.write_digest();
        if let Err(error) = self.console.flush() {
            tracing::error!(%error, "cannot flush audit stdout");
        }
        if let Some(file) = &mut self.file {
            file.close();
        }
    }

    /// Append a signed digest of the records since the last one (none: nothing to do).
    fn write_digest(&mut self) {
        let Some(digests) = &mut self.digests else { return };
        digests.next_at = Instant::now() + digests.interval;
        if self.seq == digests.last_seq {
            return;
        }
        let Some(key) = digests.signer.get() else {
            tracing::debug!("no audit signing key yet: the digest waits");
            return;
        };
        let digest = Digest {
            replica: self.identity.replica.clone(),
            chain: self.identity.chain.clone(),
            first_seq: digests.last_seq + 1,
            last_seq: self.seq,
            head: self.prev.clone(),
            prev_signature: digests.last_signature.clone(),
            time: super::now_rfc3339(),
            key_id: key.key_id().to_owned(),
        };
        let (object, signature) = digest.record(&key);
        let (seq, hash) = self.write_object(object);
        if let Some(digests) = &mut self.digests {
            digests.last_seq = seq;
            digests.last_signature = signature.clone();
            if let Some(on_digest) = &mut digests.on_digest {
                on_digest(Anchor {
                    seq,
                    hash,
                    digest,
                    signature,
                });
            }
        }
    }

    fn write_dropped(&mut self) {
        let count = self.shared.pending_dropped.swap(0, Ordering::Relaxed);
        if count > 0 {
            let mut event = AuditEvent::new(EventKind::AuditDropped);
            event.message = format!("{count} audit events were dropped: the audit queue was full");
            self.write_event(event, Some(count));
        }
    }

    fn write_event(&mut self, event: AuditEvent, dropped: Option<u64>) {
        let mut object = match serde_json::to_value(&event) {
            Ok(Value::Object(object)) => object,
            Ok(_) => return,
            Err(error) => {
                tracing::error!(%error, "cannot serialize audit event");
                return;
            }
        };
        if let Some(count) = dropped {
            object.insert("dropped".to_owned(), Value::from(count));
        }
        self.write_object(object);
    }

    /// Stamp, seal and write one record; its `seq` and `hash`.
    fn write_object(&mut self, mut object: Map<String, Value>) -> (u64, String) {
        self.identity.stamp(&mut object);
        let seq = self.seq + 1;
        let (mut line, hash) = seal(object, seq, &self.prev);
        line.push('\n');
        if let Err(error) = self.console.write_all(line.as_bytes()) {
            tracing::error!(%error, "cannot write audit event to stdout");
        }
        if let Some(file) = &mut self.file {
            file.push(seq, &self.prev, &hash, line);
            if self.fsync == FsyncPolicy::Always {
                file.drain(false);
                file.sync();
            }
        }
        self.seq = seq;
        self.prev = hash.clone();
        match self.shared.head.lock() {
            Ok(mut head) => *head = (seq, hash.clone()),
            Err(poisoned) => *poisoned.into_inner() = (seq, hash.clone()),
        }
        (seq, hash)
    }

    fn flush(&mut self, sync: bool) {
        if let Err(error) = self.console.flush() {
            tracing::error!(%error, "cannot flush audit stdout");
        }
        if let Some(file) = &mut self.file {
            file.drain(false);
            if sync {
                file.sync();
            }
        }
    }

    fn sync_if_due(&mut self) {
        if let (FsyncPolicy::Every(every), Some(file)) = (self.fsync, &mut self.file)
            && file.dirty
            && file.last_sync.elapsed() >= every
        {
            file.sync();
        }
    }
}

/// Lines waiting for the file are written once this many bytes have gathered (or when the
/// writer is idle, or at once with `fsync: always`).
const BUFFER_BYTES: u64 = 8 * 1024;
/// At most this many bytes go to the file in one write call.
const BATCH_BYTES: usize = 64 * 1024;
/// First wait before retrying a file that failed; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between retries.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How often a healthy file is checked for having been moved away or deleted.
const MOVED_CHECK_EVERY: Duration = Duration::from_secs(1);

/// The file cannot be written since `since`; the next attempt is at `retry_at`.
struct Outage {
    since: Instant,
    backoff: Duration,
    retry_at: Instant,
}

/// Records dropped from the file because the backlog was full: `first_seq..=last_seq`.
struct Gap {
    first_seq: u64,
    last_seq: u64,
    /// `hash` of the record before the gap.
    prev_hash: String,
    /// `hash` of the last dropped record.
    last_hash: String,
}

impl Gap {
    /// The gap marker line (see the module documentation), with its newline.
    fn marker(&self, identity: &ChainIdentity) -> String {
        let dropped = self.last_seq - self.first_seq + 1;
        let mut object = Map::new();
        object.insert("schema".to_owned(), Value::from(super::SCHEMA));
        object.insert("time".to_owned(), Value::from(super::now_rfc3339()));
        object.insert("event".to_owned(), Value::from(FILE_GAP_EVENT));
        object.insert("first_seq".to_owned(), Value::from(self.first_seq));
        object.insert("dropped".to_owned(), Value::from(dropped));
        object.insert("last_hash".to_owned(), Value::from(self.last_hash.as_str()));
        object.insert(
            "message".to_owned(),
            Value::from(format!(
                "{dropped} audit records (seq {}..{}) are missing from this file: it could not be written and the backlog was full; they were written to stdout only",
                self.first_seq, self.last_seq
            )),
        );
        identity.stamp(&mut object);
        let (mut line, _) = seal(object, self.last_seq, &self.prev_hash);
        line.push('\n');
        line
    }
}

/// `event` of a file gap marker.
pub const FILE_GAP_EVENT: &str = "audit.file_gap";

struct FileLog {
    path: PathBuf,
    /// None after a failure: the next attempt reopens the path.
    out: Option<File>,
    /// Bytes in the open file, up to its last complete line.
    size: u64,
    max: u64,
    keep: usize,
    dirty: bool,
    last_sync: Instant,
    last_moved_check: Instant,
    /// Lines (with newline) not yet written, in chain order: the write buffer, and while the
    /// file fails, the backlog.
    pending: VecDeque<String>,
    pending_bytes: u64,
    backlog_max: u64,
    outage: Option<Outage>,
    gap: Option<Gap>,
    metrics: AuditFileMetrics,
    identity: ChainIdentity,
}

/// `audit.log.N`.
pub fn rotated_name(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Write `buf`, retrying short writes; returns how many bytes the kernel took either way.
fn write_counted(mut out: &File, buf: &[u8]) -> (usize, io::Result<()>) {
    let mut written = 0;
    while let Some(rest) = buf.get(written..).filter(|rest| !rest.is_empty()) {
        match out.write(rest) {
            Ok(0) => return (written, Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Err(e)),
        }
    }
    (written, Ok(()))
}

impl FileLog {
    fn open(path: &Path, config: &AuditConfig, metrics: AuditFileMetrics, identity: ChainIdentity) -> io::Result<Self> {
        let mut log = FileLog {
            path: path.to_owned(),
            out: None,
            size: 0,
            max: config.max_file_bytes.max(1),
            keep: config.keep_files,
            dirty: false,
            last_sync: Instant::now(),
            last_moved_check: Instant::now(),
            pending: VecDeque::new(),
            pending_bytes: 0,
            backlog_max: config.file_backlog_bytes,
            outage: None,
            gap: None,
            metrics,
            identity,
        };
        log.reopen()?;
        Ok(log)
    }

    /// Open the path afresh, cutting a torn last line (ours, from a short write) first.
    fn reopen(&mut self) -> io::Result<()> {
        self.out = None;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        last_line(&self.path, true)?;
        let file = open_append(&self.path)?;
        self.size = file.metadata()?.len();
        self.out = Some(file);
        Ok(())
    }

    /// Take a sealed line for the file: into the pending lines, or, when the backlog is full,
    /// dropped (from the file only) into the open gap.
    fn push(&mut self, seq: u64, prev_hash: &str, hash: &str, line: String) {
        if self.outage.is_none() && self.pending_bytes + line.len() as u64 > self.backlog_max {
            // Make room as a full write buffer would; the bound only ever holds back a failing file.
            self.drain(false);
        }
        let marker = self.gap.as_ref().map(|gap| gap.marker(&self.identity));
        let needed = line.len() as u64 + marker.as_ref().map_or(0, |m| m.len() as u64);
        // An empty backlog takes any one record, however large.
        let room = (self.pending.is_empty() && marker.is_none()) || self.pending_bytes + needed <= self.backlog_max;
        if room {
            if let Some(marker) = marker {
                self.close_gap(marker);
            }
            self.pending_bytes += line.len() as u64;
            self.pending.push_back(line);
            if self.pending_bytes >= BUFFER_BYTES {
                self.drain(false);
            }
        } else {
            self.metrics.dropped.inc();
            match &mut self.gap {
                Some(gap) => {
                    gap.last_seq = seq;
                    gap.last_hash = hash.to_owned();
                }
                None => {
                    tracing::error!(
                        path = %self.path.display(),
                        backlog_bytes = self.backlog_max,
                        seq,
                        "the audit file's backlog is full: dropping records from the file (not from stdout) until it drains; the file will mark the gap"
                    );
                    self.gap = Some(Gap {
                        first_seq: seq,
                        last_seq: seq,
                        prev_hash: prev_hash.to_owned(),
                        last_hash: hash.to_owned(),
                    });
                }
            }
        }
        self.update_gauge();
    }

    fn close_gap(&mut self, marker: String) {
        if let Some(gap) = self.gap.take() {
            tracing::warn!(
                path = %self.path.display(),
                first_seq = gap.first_seq,
                last_seq = gap.last_seq,
                dropped = gap.last_seq - gap.first_seq + 1,
                "audit records were dropped from the audit file (they are on stdout); a gap marker records it in the file"
            );
        }
        self.pending_bytes += marker.len() as u64;
        self.pending.push_back(marker);
    }

    fn update_gauge(&self) {
        let waiting = if self.outage.is_some() { self.pending.len() } else { 0 };
        self.metrics
            .backlog_records
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    /// Write the pending lines, unless the file is failing and its next retry is not due
    /// (`force`: try anyway).
    fn drain(&mut self, force: bool) {
        if let Some(outage) = &self.outage
            && !force
            && Instant::now() < outage.retry_at
        {
            return;
        }
        loop {
            if self.pending.is_empty()
                && let Some(gap) = &self.gap
            {
                // Drained with records missing: mark the gap now rather than at the next record.
                let marker = gap.marker(&self.identity);
                self.close_gap(marker);
            }
            if self.pending.is_empty() {
                break;
            }
            let before = self.pending.len();
            match self.try_drain() {
                Ok(()) => {
                    if let Some(outage) = self.outage.take() {
                        tracing::warn!(
                            path = %self.path.display(),
                            outage_seconds = outage.since.elapsed().as_secs(),
                            "the audit file takes writes again: its backlog is written"
                        );
                    }
                }
                Err(error) => {
                    self.fail(&error, self.pending.len() < before);
                    break;
                }
            }
        }
        self.update_gauge();
    }

    fn try_drain(&mut self) -> io::Result<()> {
        while let Some(first) = self.pending.front().map(|line| line.len() as u64) {
            if self.out.is_none() {
                self.reopen()?;
            }
            if self.size > 0 && self.size + first > self.max {
                self.rotate()?;
            }
            let mut batch = Vec::new();
            let mut size = self.size;
            for line in &self.pending {
                let len = line.len() as u64;
                if !batch.is_empty() && (size + len > self.max || batch.len() + line.len() > BATCH_BYTES) {
                    break;
                }
                batch.extend_from_slice(line.as_bytes());
                size += len;
            }
            let Some(out) = &self.out else {
                return Err(io::Error::other("the audit file is not open"));
            };
            let (written, result) = write_counted(out, &batch);
            let mut done = 0usize;
            while let Some(line) = self.pending.front() {
                if done + line.len() > written {
                    break;
                }
                done += line.len();
                self.pending_bytes -= line.len() as u64;
                self.pending.pop_front();
            }
            self.size += done as u64;
            self.dirty |= done > 0;
            if let Err(error) = result {
                if written > done
                    && let Err(cut) = out.set_len(self.size)
                {
                    // The reopen before the next attempt cuts it.
                    tracing::warn!(error = %cut, path = %self.path.display(), "cannot cut a partly written audit record off the file yet");
                }
                return Err(error);
            }
        }
        Ok(())
    }

    /// Count a failed attempt, close the file (the next attempt reopens the path) and schedule
    /// the retry; `progress`: some lines were written before the failure.
    fn fail(&mut self, error: &io::Error, progress: bool) {
        self.metrics.write_failures.inc();
        self.out = None;
        let now = Instant::now();
        match &mut self.outage {
            None => {
                tracing::error!(
                    %error,
                    path = %self.path.display(),
                    waiting = self.pending.len(),
                    "cannot write to the audit file: keeping its records in memory and retrying (stdout has them)"
                );
                self.outage = Some(Outage {
                    since: now,
                    backoff: RETRY_FIRST,
                    retry_at: now + RETRY_FIRST,
                });
            }
            Some(outage) => {
                outage.backoff = if progress {
                    RETRY_FIRST
                } else {
                    (outage.backoff * 2).min(RETRY_MAX)
                };
                outage.retry_at = now + outage.backoff;
                tracing::debug!(%error, path = %self.path.display(), waiting = self.pending.len(), "the audit file still cannot be written");
            }
        }
    }

    fn sync(&mut self) {
        if self.outage.is_some() {
            return;
        }
        if self.dirty
            && let Some(out) = &self.out
        {
            if let Err(error) = out.sync_data() {
                self.metrics.write_failures.inc();
                tracing::error!(%error, path = %self.path.display(), "cannot fsync the audit file");
            }
            self.dirty = false;
        }
        self.last_sync = Instant::now();
    }

    /// When the open file is no longer at the path (moved away, deleted, replaced), continue in
    /// whatever is at the path now; checked at most every [`MOVED_CHECK_EVERY`].
    fn reopen_if_moved(&mut self) {
        if self.outage.is_some() || self.last_moved_check.elapsed() < MOVED_CHECK_EVERY {
            return;
        }
        self.last_moved_check = Instant::now();
        let Some(held) = self.out.as_ref().and_then(|out| out.metadata().ok()) else {
            return;
        };
        let moved = match fs::metadata(&self.path) {
            Ok(now) => (now.dev(), now.ino()) != (held.dev(), held.ino()),
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        };
        if moved {
            tracing::warn!(path = %self.path.display(), "the audit file was moved away or deleted: continuing the chain in a new file at its path");
            self.sync();
            if let Err(error) = self.reopen() {
                self.fail(&error, false);
                self.update_gauge();
            }
        }
    }

    /// The last attempt, at shutdown: write the backlog whatever the backoff, then say what is
    /// lost.
    fn close(&mut self) {
        self.drain(true);
        self.sync();
        if !self.pending.is_empty() {
            tracing::error!(
                path = %self.path.display(),
                unwritten = self.pending.len(),
                "audit records could not be written to the audit file before shutdown (stdout has them)"
            );
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        if let Some(out) = &self.out {
            out.sync_all()?;
        }
        self.dirty = false;
        if self.keep == 0 {
            fs::remove_file(&self.path)?;
        } else {
            match fs::remove_file(rotated_name(&self.path, self.keep)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            for n in (1..self.keep).rev() {
                let from = rotated_name(&self.path, n);
                if from.exists() {
                    fs::rename(&from, rotated_name(&self.path, n + 1))?;
                }
            }
            fs::rename(&self.path, rotated_name(&self.path, 1))?;
        }
        // From here a failure leaves no file at the path: the retry creates it.
        self.out = None;
        self.size = 0;
        self.out = Some(open_append(&self.path)?);
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(dir) = File::open(dir)
        {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// Where a writer continues a file's chain.
struct Resumed {
    seq: u64,
    prev: String,
    /// The chain id of the last record (None: a new file, or records older than chain ids).
    chain: Option<String>,
    /// The last digest record's `seq` and signature.
    last_digest: Option<(u64, String)>,
}

impl Default for Resumed {
    fn default() -> Self {
        Resumed {
            seq: 0,
            prev: GENESIS_HASH.to_owned(),
            chain: None,
            last_digest: None,
        }
    }
}

/// The `seq` and `hash` to continue from: the last record of `path`, else of `path.1`, else
/// the start of a chain; its chain id; and the last digest in those files. A torn last line of
/// `path` is cut off. A file gap marker stands for the last record it counts (its `seq`, and
/// `last_hash`).
fn resume(path: &Path) -> io::Result<Resumed> {
    for (candidate, active) in [(path.to_owned(), true), (rotated_name(path, 1), false)] {
        if let Some(line) = last_line(&candidate, active)? {
            let bad = || {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "cannot continue the audit chain: the last line of {} is not a chained audit record",
                        candidate.display()
                    ),
                )
            };
            let (body, hash) = split_line(&line).ok_or_else(bad)?;
            let value: Value = serde_json::from_str(&body).map_err(|_| bad())?;
            let seq = value.get("seq").and_then(Value::as_u64).ok_or_else(bad)?;
            let prev = if value.get("event").and_then(Value::as_str) == Some(FILE_GAP_EVENT) {
                value
                    .get("last_hash")
                    .and_then(Value::as_str)
                    .ok_or_else(bad)?
                    .to_owned()
            } else {
                hash.to_owned()
            };
            let chain = value.get("chain").and_then(Value::as_str).map(str::to_owned);
            let mut last_digest = None;
            for file in [path.to_owned(), rotated_name(path, 1)] {
                last_digest = last_digest_in(&file, chain.as_deref())?;
                if last_digest.is_some() {
                    break;
                }
            }
            return Ok(Resumed {
                seq,
                prev,
                chain,
                last_digest,
            });
        }
    }
    Ok(Resumed::default())
}

/// The `seq` and signature of the last digest record of `chain` in `path`.
fn last_digest_in(path: &Path, chain: Option<&str>) -> io::Result<Option<(u64, String)>> {
    use std::io::BufRead as _;
    let Some(chain) = chain else { return Ok(None) };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let needle = format!("\"event\":\"{}\"", super::digest::DIGEST_EVENT);
    let mut found = None;
    for line in io::BufReader::new(file).split(b'\n') {
        let line = line?;
        if !line.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            continue;
        }
        let Ok(value) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        if value.get("chain").and_then(Value::as_str) != Some(chain) {
            continue;
        }
        if let (Some(seq), Some(signature)) = (
            value.get("seq").and_then(Value::as_u64),
            value.get("signature").and_then(Value::as_str),
        ) {
            found = Some((seq, signature.to_owned()));
        }
    }
    Ok(found)
}

/// The last complete line of a file (None when missing, empty, or not a regular file: a device
/// such as `/dev/full` has no records to read). With `repair`, bytes after the last newline (a
/// torn write) are truncated away.
fn last_line(path: &Path, repair: bool) -> io::Result<Option<String>> {
    match fs::metadata(path) {
        Ok(meta) if !meta.is_file() => return Ok(None),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut file = match OpenOptions::new().read(true).write(repair).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::new();
        (&mut file).take(len - start).read_to_end(&mut tail)?;
        let complete = match tail.iter().rposition(|&b| b == b'\n') {
            Some(end) => end,
            None if start == 0 => {
                if repair && !tail.is_empty() {
                    tracing::warn!(path = %path.display(), "cutting a torn audit record off the end of the file");
                    file.set_len(0)?;
                }
                return Ok(None);
            }
            None => {
                window *= 4;
                continue;
            }
        };
        let begin = tail[..complete].iter().rposition(|&b| b == b'\n').map(|i| i + 1);
        if begin.is_none() && start > 0 {
            window *= 4;
            continue;
        }
        if repair && complete + 1 < tail.len() {
            tracing::warn!(path = %path.display(), "cutting a torn audit record off the end of the file");
            file.set_len(start + complete as u64 + 1)?;
        }
        let line = &tail[begin.unwrap_or(0)..complete];
        return Ok(Some(String::from_utf8_lossy(line).into_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_ignores_key_order() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[3,{"q":true,"p":null}],"x":"é\n"}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{ "a": {"x": "é\n", "y": [3, {"p": null, "q": true}]}, "b": 1 }"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":"é\n","y":[3,{"p":null,"q":true}]},"b":1}"#
        );
    }

    #[test]
    fn canonical_form_keeps_array_order_and_sorts_by_bytes() {
        let v: Value = serde_json::from_str(r#"{"b":[2,1],"B":0,"a_":1,"a":1.5}"#).unwrap();
        assert_eq!(canonical_json(&v), r#"{"B":0,"a":1.5,"a_":1,"b":[2,1]}"#);
    }

    #[test]
    fn sealed_line_hash_covers_body_and_splits_back() {
        let object: Map<String, Value> = serde_json::from_str(r#"{"z":1,"hash":"stale","a":"x"}"#).unwrap();
        let (line, hash) = seal(object, 3, GENESIS_HASH);
        let (body, claimed) = split_line(&line).unwrap();
        assert_eq!(claimed, hash);
        assert_eq!(sha256_hex(body.as_bytes()), hash);
        let reparsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(canonical_json(&reparsed), body);
        assert_eq!(reparsed["seq"], 3);
        assert_eq!(reparsed["prev_hash"], GENESIS_HASH);
        assert!(split_line("{\"a\":1}").is_none());
    }
}
