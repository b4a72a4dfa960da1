//! The tamper-evident audit chain: file sink with rotation, restart, backpressure, and
//! `driftguard audit verify`.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use driftguard::audit::chain::{rotated_name, seal};
use driftguard::audit::{AuditConfig, AuditEvent, AuditSink, ChainSink, FsyncPolicy};
use serde_json::Value;

fn config(dir: &Path, max_file_bytes: u64) -> AuditConfig {
    AuditConfig {
        file: Some(dir.join("audit.log")),
        max_file_bytes,
        keep_files: 10_000,
        fsync: FsyncPolicy::Every(Duration::from_millis(50)),
        queue_capacity: 16 * 1024,
        ..AuditConfig::default()
    }
}

fn sink(config: AuditConfig) -> ChainSink {
    ChainSink::builder(config)
        .console(Box::new(std::io::sink()))
        .start()
        .unwrap()
}

fn event(i: usize) -> AuditEvent {
    support::denied_event(i, "spec.replicas is managed by Git")
}

fn write_log(dir: &Path, count: usize, max_file_bytes: u64) {
    let sink = sink(config(dir, max_file_bytes));
    for i in 0..count {
        sink.record(event(i));
    }
}

/// Every audit file in `dir`, in arbitrary (directory) order.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("audit.log"))
        .collect();
    files.sort();
    files.reverse();
    files
}

fn verify(files: &[PathBuf], extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_driftguard"))
        .args(["audit", "verify"])
        .args(extra)
        .args(files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), text)
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

fn seq_of(line: &str) -> u64 {
    serde_json::from_str::<Value>(line).unwrap()["seq"].as_u64().unwrap()
}

/// A small log with several files; returns the directory and a middle rotated file.
fn small_log() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 200, 8 * 1024);
    let middle = rotated_name(&dir.path().join("audit.log"), 3);
    assert!(
        rotated_name(&dir.path().join("audit.log"), 5).exists(),
        "expected several rotated files"
    );
    (dir, middle)
}

fn assert_broken(code: i32, text: &str, seq: u64, file: &Path, line: usize) {
    assert_eq!(code, 1, "{text}");
    let location = format!("record seq {seq} at {}:{line}:", file.display());
    assert!(text.contains(&location), "expected {location:?} in {text}");
}

#[test]
fn ten_thousand_events_across_rotated_files_verify() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 10_000, 64 * 1024);
    let files = files(dir.path());
    assert!(files.len() > 10, "only {} files", files.len());
    for file in &files {
        assert!(std::fs::metadata(file).unwrap().len() <= 64 * 1024);
    }
    let (code, text) = verify(&files, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("ok: 10000 records"), "{text}");
    assert!(text.contains("seq 1..10000"), "{text}");
    assert!(!text.contains("warning"), "{text}");
}

#[test]
fn edited_byte_is_located() {
    let (_dir, file) = small_log();
    let mut lines = read_lines(&file);
    let seq = seq_of(&lines[2]);
    lines[2] = lines[2].replacen("UPDATE", "UPDATF", 1);
    write_lines(&file, &lines);
    let (code, text) = verify(&files(file.parent().unwrap()), &[]);
    assert_broken(code, &text, seq, &file, 3);
    assert!(text.contains("modified"), "{text}");
}

#[test]
fn deleted_line_is_located() {
    let (_dir, file) = small_log();
    let mut lines = read_lines(&file);
    let next_seq = seq_of(&lines[3]);
    lines.remove(2);
    write_lines(&file, &lines);
    let (code, text) = verify(&files(file.parent().unwrap()), &[]);
    assert_broken(code, &text, next_seq, &file, 3);
}

#[test]
fn swapped_lines_are_located() {
    let (_dir, file) = small_log();
    let mut lines = read_lines(&file);
    let later = seq_of(&lines[2]);
    lines.swap(1, 2);
    write_lines(&file, &lines);
    let (code, text) = verify(&files(file.parent().unwrap()), &[]);
    assert_broken(code, &text, later, &file, 2);
}

#[test]
fn forged_line_with_recomputed_hash_is_located() {
    let (_dir, file) = small_log();
    let mut lines = read_lines(&file);
    let seq = seq_of(&lines[1]);
    let mut forged: serde_json::Map<String, Value> = serde_json::from_str(&lines[1]).unwrap();
    forged.insert("message".into(), Value::from("nothing happened"));
    let (line, _) = seal(forged, seq + 1, &"ab".repeat(32));
    lines.insert(2, line);
    write_lines(&file, &lines);
    let (code, text) = verify(&files(file.parent().unwrap()), &[]);
    assert_broken(code, &text, seq + 1, &file, 3);
    assert!(text.contains("prev_hash"), "{text}");
}

#[test]
fn removed_middle_file_is_located() {
    let (dir, file) = small_log();
    let last_removed = seq_of(read_lines(&file).last().unwrap());
    std::fs::remove_file(&file).unwrap();
    let next_file = rotated_name(&dir.path().join("audit.log"), 2);
    let (code, text) = verify(&files(dir.path()), &[]);
    assert_broken(code, &text, last_removed + 1, &next_file, 1);
}

#[test]
fn expect_head_detects_a_cut_tail() {
    let dir = tempfile::tempdir().unwrap();
    let head = {
        let sink = sink(config(dir.path(), 8 * 1024));
        for i in 0..50 {
            sink.record(event(i));
        }
        sink.flush();
        sink.head()
    };
    assert_eq!(head.0, 50);
    let files = files(dir.path());
    let (code, text) = verify(&files, &["--expect-head", &head.1]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&head.1), "{text}");
    let (code, text) = verify(&files, &["--expect-head", &"0f".repeat(32)]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("seq 50"), "{text}");
    // Cutting the last record also fails against the head.
    let active = dir.path().join("audit.log");
    let mut lines = read_lines(&active);
    lines.pop();
    write_lines(&active, &lines);
    let (code, text) = verify(&files, &["--expect-head", &head.1]);
    assert_eq!(code, 1, "{text}");
}

#[test]
fn unreadable_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let (code, text) = verify(&[dir.path().join("missing.log")], &[]);
    assert_eq!(code, 2, "{text}");
}

#[test]
fn restart_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let first_head = {
        let sink = sink(config(dir.path(), 4 * 1024));
        for i in 0..30 {
            sink.record(event(i));
        }
        sink.flush();
        sink.head()
    };
    let sink2 = sink(config(dir.path(), 4 * 1024));
    assert_eq!(sink2.head(), first_head);
    sink2.record(event(30));
    sink2.flush();
    assert_eq!(sink2.head().0, 31);
    drop(sink2);
    let all: Vec<String> = files(dir.path()).iter().flat_map(|f| read_lines(f)).collect();
    let resumed = all.iter().find(|l| seq_of(l) == 31).unwrap();
    let resumed: Value = serde_json::from_str(resumed).unwrap();
    assert_eq!(resumed["prev_hash"], Value::from(first_head.1));
    let (code, text) = verify(&files(dir.path()), &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("ok: 31 records"), "{text}");
}

/// A console writer that blocks until the gate opens.
#[derive(Clone)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn open(&self) {
        *self.0.0.lock().unwrap() = true;
        self.0.1.notify_all();
    }
}

impl Write for Gate {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut open = self.0.0.lock().unwrap();
        while !*open {
            open = self.0.1.wait(open).unwrap();
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn blocked_writer_never_blocks_record_and_drops_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Gate(Arc::new((Mutex::new(false), Condvar::new())));
    let mut config = config(dir.path(), 64 * 1024);
    config.queue_capacity = 100;
    let sink = ChainSink::builder(config)
        .console(Box::new(gate.clone()))
        .start()
        .unwrap();
    let started = Instant::now();
    for i in 0..10_000 {
        sink.record(event(i));
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(1), "record blocked: {elapsed:?}");
    let dropped = sink.dropped_total();
    assert!(dropped >= 10_000 - 101, "dropped {dropped}");
    gate.open();
    sink.flush();
    let (seq, _) = sink.head();
    drop(sink);
    let records: Vec<Value> = files(dir.path())
        .iter()
        .flat_map(|f| read_lines(f))
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
    let gaps: Vec<&Value> = records.iter().filter(|r| r["event"] == "audit.dropped").collect();
    assert!(!gaps.is_empty());
    let counted: u64 = gaps.iter().map(|r| r["dropped"].as_u64().unwrap()).sum();
    assert_eq!(counted, dropped, "every drop is counted in an audit.dropped record");
    assert_eq!(seq, 10_000 - dropped + gaps.len() as u64);
    assert_eq!(records.len() as u64, seq);
    let (code, text) = verify(&files(dir.path()), &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("audit events were dropped"), "{text}");
    let first_gap = gaps[0]["dropped"].as_u64().unwrap();
    assert!(
        text.contains(&format!("{first_gap} audit events were dropped")),
        "{text}"
    );
    assert!(text.contains("warning:"), "{text}");
}
