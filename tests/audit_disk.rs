//! The audit file on a full disk: records the file does not take wait in a backlog, in chain
//! order, and are written once there is space again, so the file's chain stays complete.
//!
//! The full disk is real: `/dev/full` answers every write with `ENOSPC` from the kernel, with no
//! root, mount or loop device needed. The audit path is made a symlink to it, and "freeing space"
//! puts a regular file (or nothing) at the path again.

mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use driftguard::audit::verify::verify_files;
use driftguard::audit::{AuditConfig, AuditEvent, AuditSink, ChainSink, FsyncPolicy};
use driftguard::telemetry::Metrics;
use serde_json::Value;
use support::Captured;

/// Text in every record's message: it must never reach the logs.
const CONTENT: &str = "replicas-managed-by-git";

/// The logs of every test of this binary (the writer logs from its own thread, so a
/// thread-local subscriber would not see them); tests look for their own directory in them.
fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
}

fn event(i: usize) -> AuditEvent {
    support::denied_event(i, CONTENT)
}

fn config(path: &Path, max_file_bytes: u64) -> AuditConfig {
    AuditConfig {
        file: Some(path.to_owned()),
        max_file_bytes,
        keep_files: 1000,
        fsync: FsyncPolicy::Every(Duration::from_millis(20)),
        ..AuditConfig::default()
    }
}

/// A sink on `config` whose console copy goes to the returned buffer, reporting into `metrics`.
fn start_sink(config: AuditConfig, metrics: &Metrics) -> (ChainSink, Captured) {
    logs();
    let console = Captured::default();
    let sink = ChainSink::builder(config)
        .console(Box::new(console.clone()))
        .file_metrics(metrics.audit_file_metrics())
        .start()
        .unwrap();
    (sink, console)
}

/// The value of the sample `name` (no labels) in the metrics text.
fn metric(metrics: &Metrics, name: &str) -> u64 {
    let text = metrics.encode().unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

/// Poll `check` until it holds; fails after a generous deadline.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn seq_of(line: &str) -> u64 {
    serde_json::from_str::<Value>(line).unwrap()["seq"].as_u64().unwrap()
}

/// The lines of `files`, in the given order.
fn file_lines(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every `audit.log*` in `dir`.
fn audit_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("audit.log"))
        .collect()
}

fn fill_disk(path: &Path) {
    std::os::unix::fs::symlink("/dev/full", path).unwrap();
}

#[test]
fn a_full_disk_keeps_records_until_space_is_freed_then_the_file_chain_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    fill_disk(&path);
    let metrics = Metrics::new();
    // Small files: the backlog is written across several rotations.
    let (sink, console) = start_sink(config(&path, 4 * 1024), &metrics);
    for i in 0..50 {
        sink.record(event(i));
    }
    sink.flush();
    // Stdout has every record at once; the file has none, and the backlog holds them all.
    let stdout: Vec<u64> = console.lines().iter().map(|l| seq_of(l)).collect();
    assert_eq!(stdout, (1..=50).collect::<Vec<_>>());
    assert_eq!(metric(&metrics, "driftguard_audit_file_backlog_records"), 50);
    assert!(metric(&metrics, "driftguard_audit_file_write_failures_total") >= 1);
    assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
    let log = logs().text();
    let named = log
        .lines()
        .find(|l| l.contains(&*path.to_string_lossy()) && l.contains("cannot write to the audit file"))
        .unwrap_or_else(|| panic!("no log line names {}: {log}", path.display()));
    assert!(named.contains("No space left on device"), "{named}");

    // Space is freed: a regular file at the path again (swapped in at once, so the sink never
    // sees no file); newer records come meanwhile.
    let fresh = dir.path().join("fresh");
    std::fs::File::create(&fresh).unwrap();
    std::fs::rename(&fresh, &path).unwrap();
    for i in 50..60 {
        sink.record(event(i));
    }
    wait_for("the backlog to drain", || {
        sink.flush();
        metric(&metrics, "driftguard_audit_file_backlog_records") == 0
    });
    let failures = metric(&metrics, "driftguard_audit_file_write_failures_total");
    drop(sink);

    let files = audit_files(dir.path());
    assert!(
        files.len() > 3,
        "expected rotations while the backlog was written: {files:?}"
    );
    let report = verify_files(&files, None).unwrap();
    assert_eq!((report.records, report.first_seq, report.last_seq), (60, 1, 60));
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    // Exactly the records stdout got, in chain order, byte for byte.
    assert_eq!(file_lines(&report.files), console.lines());
    assert_eq!(metric(&metrics, "driftguard_audit_file_dropped_total"), 0);
    assert_eq!(metric(&metrics, "driftguard_audit_file_write_failures_total"), failures);
    assert!(!logs().text().contains(CONTENT), "a log line carries record content");
}

/// The disk fills in the middle of the chain. A descriptor held on a regular file fails only
/// when its file system fills up, which a test cannot cause without root (a small tmpfs or a
/// loop device); `/dev/full` is reached when the sink opens the path again. So the operator
/// moves the file away (as logrotate does), the sink continues at the path, which now is full,
/// and space is freed by putting a file there that a short write left a torn record in.
#[test]
fn the_disk_fills_mid_chain_and_the_chain_is_intact_across_the_outage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let moved = dir.path().join("audit.log.moved");
    let metrics = Metrics::new();
    let (sink, console) = start_sink(config(&path, 1024 * 1024), &metrics);
    for i in 0..20 {
        sink.record(event(i));
    }
    sink.flush();
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 20);

    std::fs::rename(&path, &moved).unwrap();
    fill_disk(&path);
    let mut recorded = 20;
    wait_for("a write to fail on the full disk", || {
        sink.record(event(recorded));
        recorded += 1;
        sink.flush();
        metric(&metrics, "driftguard_audit_file_write_failures_total") > 0
    });
    for _ in 0..10 {
        sink.record(event(recorded));
        recorded += 1;
    }
    sink.flush();
    let waiting = metric(&metrics, "driftguard_audit_file_backlog_records");
    assert!(waiting >= 11, "backlog {waiting}");

    // Freed; the file at the path ends in a torn record, which must not stay in the middle.
    let fresh = dir.path().join("fresh");
    std::fs::write(&fresh, b"{\"actor\":{\"groups\":[],\"username\":\"").unwrap();
    std::fs::rename(&fresh, &path).unwrap();
    wait_for("the backlog to drain", || {
        sink.flush();
        metric(&metrics, "driftguard_audit_file_backlog_records") == 0
    });
    let head = sink.head();
    drop(sink);

    let report = verify_files(&[path.clone(), moved.clone()], Some(&head.1)).unwrap();
    assert_eq!((report.records, report.first_seq), (recorded as u64, 1));
    assert_eq!(report.last_seq, recorded as u64);
    assert_eq!(report.files, [moved.clone(), path.clone()]);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(file_lines(&report.files), console.lines());
    let backlogged = std::fs::read_to_string(&path).unwrap();
    assert!(backlogged.starts_with("{\"actor\""), "{backlogged}");
    assert!(seq_of(backlogged.lines().next().unwrap()) > 20);
}

#[test]
fn an_overflowing_backlog_drops_from_the_file_only_and_the_file_marks_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    fill_disk(&path);
    let metrics = Metrics::new();
    let mut config = config(&path, 1024 * 1024);
    config.file_backlog_bytes = 4 * 1024;
    let (sink, console) = start_sink(config.clone(), &metrics);
    for i in 0..30 {
        sink.record(event(i));
    }
    sink.flush();
    assert_eq!(console.lines().len(), 30, "stdout gets every record");
    let kept = metric(&metrics, "driftguard_audit_file_backlog_records");
    let dropped = metric(&metrics, "driftguard_audit_file_dropped_total");
    assert!((1..30).contains(&kept), "kept {kept}");
    assert_eq!(kept + dropped, 30);
    let kept_bytes: usize = console.lines()[..kept as usize].iter().map(|l| l.len() + 1).sum();
    assert!(
        kept_bytes <= 4 * 1024,
        "the backlog is bounded: {kept} records, {kept_bytes} bytes"
    );
    let log = logs().text();
    let overflow: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&*path.to_string_lossy()) && l.contains("backlog is full"))
        .collect();
    assert_eq!(overflow.len(), 1, "logged once per burst: {overflow:?}");

    std::fs::remove_file(&path).unwrap();
    wait_for("the backlog to drain", || {
        sink.flush();
        metric(&metrics, "driftguard_audit_file_backlog_records") == 0
    });
    let head = sink.head();
    drop(sink);

    // The file: the kept records, then the marker of the dropped ones.
    let lines = file_lines(std::slice::from_ref(&path));
    assert_eq!(lines.len() as u64, kept + 1);
    assert_eq!(lines[..kept as usize], console.lines()[..kept as usize]);
    let marker: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(marker["event"], "audit.file_gap");
    assert_eq!(marker["first_seq"], kept + 1);
    assert_eq!(marker["seq"], 30);
    assert_eq!(marker["dropped"], dropped);
    assert_eq!(marker["last_hash"], Value::from(head.1.clone()));
    let report = verify_files(std::slice::from_ref(&path), Some(&head.1)).unwrap();
    assert_eq!((report.records, report.last_seq), (kept, 30));
    let expected = format!("seq {}..30: {dropped} records are missing from the file", kept + 1);
    assert!(
        report.warnings.iter().any(|w| w.contains(&expected)),
        "{expected:?} not in {:?}",
        report.warnings
    );

    // A restart continues after the gap; the chain verifies across it.
    let (sink, _) = start_sink(config, &metrics);
    assert_eq!(sink.head(), head);
    for i in 30..35 {
        sink.record(event(i));
    }
    sink.flush();
    drop(sink);
    let report = verify_files(std::slice::from_ref(&path), None).unwrap();
    assert_eq!((report.records, report.last_seq), (kept + 5, 35));
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
}

/// Without the marker the gap still shows: cutting it out breaks the chain at the next record.
#[test]
fn a_removed_gap_marker_is_a_break() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    fill_disk(&path);
    let metrics = Metrics::new();
    let mut config = config(&path, 1024 * 1024);
    config.file_backlog_bytes = 2 * 1024;
    let (sink, _) = start_sink(config, &metrics);
    for i in 0..20 {
        sink.record(event(i));
    }
    sink.flush();
    std::fs::remove_file(&path).unwrap();
    wait_for("the backlog to drain", || {
        sink.flush();
        metric(&metrics, "driftguard_audit_file_backlog_records") == 0
    });
    sink.record(event(20));
    drop(sink);
    let mut lines = file_lines(std::slice::from_ref(&path));
    let at = lines.iter().position(|l| l.contains("audit.file_gap")).unwrap();
    lines.remove(at);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let error = verify_files(std::slice::from_ref(&path), None).unwrap_err().to_string();
    assert!(error.contains("record seq 21"), "{error}");
    assert!(error.contains("prev_hash does not match"), "{error}");
}

#[test]
fn dropping_the_sink_makes_a_last_attempt_and_reports_what_is_lost() {
    // Still full at shutdown: the loss is logged, with the file and the count.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    fill_disk(&path);
    let metrics = Metrics::new();
    let (sink, _) = start_sink(config(&path, 1024 * 1024), &metrics);
    for i in 0..7 {
        sink.record(event(i));
    }
    drop(sink);
    let log = logs().text();
    let lost = log
        .lines()
        .find(|l| l.contains(&*path.to_string_lossy()) && l.contains("before shutdown"))
        .unwrap_or_else(|| panic!("no shutdown loss logged for {}: {log}", path.display()));
    assert!(lost.contains("unwritten=7"), "{lost}");

    // Freed just before shutdown, long before the next retry is due: the last attempt writes
    // the backlog.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    fill_disk(&path);
    let metrics = Metrics::new();
    let (sink, console) = start_sink(config(&path, 1024 * 1024), &metrics);
    let mut recorded = 0;
    wait_for("the retries to back off", || {
        sink.record(event(recorded));
        recorded += 1;
        sink.flush();
        metric(&metrics, "driftguard_audit_file_write_failures_total") >= 5
    });
    std::fs::remove_file(&path).unwrap();
    drop(sink);
    let report = verify_files(std::slice::from_ref(&path), None).unwrap();
    assert_eq!((report.records, report.last_seq), (recorded as u64, recorded as u64));
    assert_eq!(file_lines(&[path]), console.lines());
}

#[test]
fn the_backlog_bound_is_a_validated_setting_with_a_default() {
    use driftguard::config::AuditFile;
    let dir = Path::new("/etc/driftguard");
    let default = AuditFile::default().validate(dir).unwrap();
    assert_eq!(default.file_backlog_bytes, 64 * 1024 * 1024);
    let set: AuditFile = serde_json::from_value(serde_json::json!({ "fileBacklogBytes": 1048576 })).unwrap();
    assert_eq!(set.validate(dir).unwrap().file_backlog_bytes, 1024 * 1024);
    let tiny: AuditFile = serde_json::from_value(serde_json::json!({ "fileBacklogBytes": 1000 })).unwrap();
    let error = tiny.validate(dir).unwrap_err().to_string();
    assert!(error.contains("audit.fileBacklogBytes"), "{error}");
}
