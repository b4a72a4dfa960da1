//! Audit evidence that holds up when someone can rewrite the log: chains named per replica,
//! signed digests, anchors kept outside the log, and `driftguard audit verify` over many
//! files or one interleaved stream.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driftguard::audit::digest::{Anchor, Digest};
use driftguard::audit::signing::{SignerSlot, SigningKey};
use driftguard::audit::{AuditConfig, AuditSink, ChainSink, FsyncPolicy};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// A stdout stand-in shared by several writers (lines arrive whole: one write per line).
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// One replica's writer: its stdout, its anchors, its key slot.
struct Replica {
    sink: Option<ChainSink>,
    anchors: Arc<Mutex<Vec<Anchor>>>,
    slot: Arc<SignerSlot>,
}

impl Replica {
    fn start(name: &str, file: Option<&Path>, console: Shared, key: SigningKey, interval: Duration) -> Self {
        let slot = Arc::new(SignerSlot::with(key));
        let anchors = Arc::new(Mutex::new(Vec::new()));
        let seen = anchors.clone();
        let config = AuditConfig {
            file: file.map(Path::to_path_buf),
            fsync: FsyncPolicy::Every(Duration::from_millis(50)),
            digest_interval: interval,
            ..AuditConfig::default()
        };
        let sink = ChainSink::builder(config)
            .console(Box::new(console))
            .replica(name)
            .signer(slot.clone())
            .on_digest(Box::new(move |anchor| seen.lock().unwrap().push(anchor)))
            .start()
            .unwrap();
        Replica {
            sink: Some(sink),
            anchors,
            slot,
        }
    }

    fn sink(&self) -> &ChainSink {
        self.sink.as_ref().unwrap()
    }

    fn record(&self, count: usize) {
        for i in 0..count {
            self.sink()
                .record(support::denied_event(i, "spec.replicas is managed by Git"));
        }
    }

    /// Stop: the final digest is written.
    fn stop(&mut self) {
        self.sink.take();
    }
}

const HOUR: Duration = Duration::from_secs(3600);

/// A replica `a` whose stdout holds: 5 records, digest (seq 6), 5 records, digest (seq 12),
/// 3 records (unsigned tail, seq 13..15). Returns its lines, its key and its anchors.
fn signed_log() -> (Vec<String>, SigningKey, Vec<Anchor>) {
    let key = SigningKey::generate().unwrap();
    let copy = SigningKey::from_pem(key.to_pem().as_bytes(), "test").unwrap();
    let out = Shared::default();
    let replica = Replica::start("a", None, out.clone(), copy, HOUR);
    replica.record(5);
    replica.sink().digest_now();
    replica.record(5);
    replica.sink().digest_now();
    replica.record(3);
    replica.sink().flush();
    let anchors = replica.anchors.lock().unwrap().clone();
    drop(replica.sink);
    let mut lines = out.lines();
    // Without the shutdown digest: the last three records are the unsigned tail.
    assert_eq!(event_of(lines.last().unwrap()), "audit.digest");
    lines.pop();
    assert_eq!(lines.len(), 15);
    (lines, key, anchors)
}

fn object(line: &str) -> Map<String, Value> {
    serde_json::from_str(line).unwrap()
}

fn event_of(line: &str) -> String {
    object(line)["event"].as_str().unwrap().to_owned()
}

/// The canonical form as the README states it: keys sorted by UTF-8 bytes at every level, no
/// whitespace, arrays in order, strings and numbers as serde_json prints them.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let members: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::from(k.as_str()), canonical(&map[k])))
                .collect();
            format!("{{{}}}", members.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// What an attacker who can rewrite the log does after an edit: renumber from the first line's
/// seq and recompute every `prev_hash` and `hash`, following the README.
fn recompute(objects: Vec<Map<String, Value>>) -> Vec<String> {
    let first = objects.first().map_or(1, |o| o["seq"].as_u64().unwrap());
    let mut prev = objects
        .first()
        .map(|o| o["prev_hash"].as_str().unwrap().to_owned())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (seq, mut object) in (first..).zip(objects) {
        object.remove("hash");
        object.insert("seq".into(), Value::from(seq));
        object.insert("prev_hash".into(), Value::from(prev.as_str()));
        let body = canonical(&Value::Object(object));
        let hash: String = Sha256::digest(body.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        out.push(format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1]));
        prev = hash;
    }
    out
}

fn objects(lines: &[String]) -> Vec<Map<String, Value>> {
    lines.iter().map(|l| object(l)).collect()
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn log(&self, name: &str, lines: &[String]) -> PathBuf {
        self.write(name, &format!("{}\n", lines.join("\n")))
    }

    fn keys(&self, name: &str, keys: &[&SigningKey]) -> PathBuf {
        let text: String = keys.iter().map(|k| k.public().to_pem()).collect();
        self.write(name, &text)
    }

    fn anchors(&self, anchors: &[Anchor]) -> PathBuf {
        // As `kubectl get configmap -o json` exports an anchor ConfigMap.
        let data: Map<String, Value> = anchors
            .iter()
            .map(|a| (a.digest.chain.clone(), Value::from(serde_json::to_string(a).unwrap())))
            .collect();
        let exported =
            serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [{"kind": "ConfigMap", "data": data}]});
        self.write("anchors.json", &exported.to_string())
    }
}

fn verify(args: &[&str], stdin: Option<&str>) -> (i32, String) {
    let args = ["audit", "verify"].iter().chain(args);
    support::driftguard_with_stdin(args, stdin.unwrap_or_default().as_bytes())
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[track_caller]
fn assert_broken_with(code: i32, text: &str, expected: &str) {
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(expected), "expected {expected:?} in {text}");
}

#[test]
fn a_recomputed_chain_passes_without_a_key_and_fails_on_the_signature() {
    // Today's weakness, reproduced: an unsigned chain (no digests) with one message changed
    // and every later hash recomputed verifies as intact.
    let files = Files::new();
    let out = Shared::default();
    {
        let sink = ChainSink::builder(AuditConfig::default())
            .console(Box::new(out.clone()))
            .start()
            .unwrap();
        for i in 0..10 {
            sink.record(support::denied_event(i, "spec.replicas is managed by Git"));
        }
    }
    let mut forged = objects(&out.lines());
    forged[2].insert("message".into(), Value::from("nothing happened"));
    let log = files.log("unsigned.log", &recompute(forged));
    let (code, text) = verify(&[path(&log)], None);
    assert_eq!(code, 0, "the unkeyed chain cannot tell: {text}");

    // With signed digests the same forgery is caught, by the signed head even without the key.
    let (lines, key, _) = signed_log();
    let mut forged = objects(&lines);
    forged[2].insert("message".into(), Value::from("nothing happened"));
    let log = files.log("signed.log", &recompute(forged.clone()));
    let keys = files.keys("keys.pem", &[&key]);
    let (code, text) = verify(&["--public-key", path(&keys), path(&log)], None);
    assert_broken_with(code, &text, "record seq 6 at");
    assert_broken_with(code, &text, "was changed and the hashes after it recomputed");

    // An attacker who also rewrites the digests' heads passes without the key, and fails on
    // the signature with it.
    for index in [5usize, 11] {
        let heads = recompute(forged.clone());
        let head = object(&heads[index - 1])["hash"].clone();
        forged[index]
            .get_mut("digest")
            .unwrap()
            .as_object_mut()
            .unwrap()
            .insert("head".into(), head);
    }
    let log = files.log("signed.log", &recompute(forged));
    let (code, text) = verify(&[path(&log)], None);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("signatures were not checked"), "{text}");
    let (code, text) = verify(&["--public-key", path(&keys), path(&log)], None);
    assert_broken_with(code, &text, "record seq 6 at");
    assert_broken_with(code, &text, "signature does not verify with key");
}

#[test]
fn an_intact_signed_log_verifies_and_reports_its_unsigned_tail() {
    let files = Files::new();
    let (lines, key, anchors) = signed_log();
    let log = files.log("audit.log", &lines);
    let keys = files.keys("keys.pem", &[&key]);
    let anchors = files.anchors(&anchors);
    let (code, text) = verify(
        &["--public-key", path(&keys), "--anchors", path(&anchors), path(&log)],
        None,
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("(replica a): 15 records, seq 1..15"), "{text}");
    assert!(text.contains("2 digests (signatures checked"), "{text}");
    assert!(
        text.contains("signed through seq 11, unsigned tail 3, 1 cluster anchors matched"),
        "{text}"
    );
    assert!(
        text.contains("unsigned tail: 3 records after the last digest (seq 13..15)"),
        "{text}"
    );
}

#[test]
fn a_removed_digest_is_caught() {
    let files = Files::new();
    let (lines, key, _) = signed_log();
    let mut forged = objects(&lines);
    forged.remove(5);
    let log = files.log("audit.log", &recompute(forged));
    let keys = files.keys("keys.pem", &[&key]);
    let (code, text) = verify(&["--public-key", path(&keys), path(&log)], None);
    assert_broken_with(code, &text, "record seq 11 at");
    assert_broken_with(code, &text, "none precedes it in the chain: a digest was removed");
}

#[test]
fn records_removed_between_digests_are_caught() {
    let files = Files::new();
    let (lines, key, _) = signed_log();
    let mut forged = objects(&lines);
    forged.drain(7..9);
    let log = files.log("audit.log", &recompute(forged));
    let keys = files.keys("keys.pem", &[&key]);
    let (code, text) = verify(&["--public-key", path(&keys), path(&log)], None);
    assert_broken_with(code, &text, "record seq 10 at");
    assert_broken_with(
        code,
        &text,
        "signs records up to seq 11, but the record before it is seq 9",
    );
}

#[test]
fn a_tail_cut_after_the_last_digest_is_caught_by_the_anchor() {
    let files = Files::new();
    let (lines, key, anchors) = signed_log();
    // Cut the second digest and everything after it: what is left is intact and signed.
    let log = files.log("audit.log", &lines[..11]);
    let keys = files.keys("keys.pem", &[&key]);
    let (code, text) = verify(&["--public-key", path(&keys), path(&log)], None);
    assert_eq!(code, 0, "without the anchors the cut cannot be seen: {text}");
    let anchors = files.anchors(&anchors);
    let (code, text) = verify(
        &["--public-key", path(&keys), "--anchors", path(&anchors), path(&log)],
        None,
    );
    assert_broken_with(
        code,
        &text,
        "the chain ends at seq 11, but the cluster anchor names its digest at seq 12",
    );
    assert_broken_with(code, &text, "the log was cut short");
}

#[test]
fn a_rewritten_anchor_is_caught_by_the_log() {
    let files = Files::new();
    let (lines, key, mut anchors) = signed_log();
    let log = files.log("audit.log", &lines);
    let keys = files.keys("keys.pem", &[&key]);
    // Moved back to the first digest, as if the log ended there: the signature no longer fits.
    let anchor = anchors.last_mut().unwrap();
    anchor.digest.last_seq = 5;
    anchor.seq = 6;
    let anchors = files.anchors(&anchors);
    let (code, text) = verify(
        &["--public-key", path(&keys), "--anchors", path(&anchors), path(&log)],
        None,
    );
    assert_broken_with(code, &text, "the anchor was rewritten");
}

#[test]
fn a_chain_of_another_replica_spliced_in_is_caught() {
    let files = Files::new();
    let (a, key, _) = signed_log();
    let copy = SigningKey::from_pem(key.to_pem().as_bytes(), "test").unwrap();
    let out = Shared::default();
    let mut b = Replica::start("b", None, out.clone(), copy, HOUR);
    b.record(4);
    b.stop();
    let b_lines = out.lines();
    let a_chain = object(&a[0])["chain"].clone();
    // B's records, relabelled as A's and linked in after A's second digest.
    let mut forged = objects(&a[..12]);
    for mut record in objects(&b_lines) {
        record.insert("chain".into(), a_chain.clone());
        record.insert("replica".into(), Value::from("a"));
        forged.push(record);
    }
    let log = files.log("audit.log", &recompute(forged));
    let keys = files.keys("keys.pem", &[&key]);
    let (code, text) = verify(&["--public-key", path(&keys), path(&log)], None);
    assert_broken_with(code, &text, "record seq 17 at");
    assert_broken_with(code, &text, "records of another chain were spliced in");
}

#[test]
fn a_digest_forged_with_another_key_is_caught() {
    let files = Files::new();
    let (lines, key, _) = signed_log();
    let mut forged = objects(&lines);
    forged[2].insert("message".into(), Value::from("nothing happened"));
    let relinked = recompute(forged.clone());
    // Re-sign the first digest over the recomputed head with the attacker's own key.
    let attacker = SigningKey::generate().unwrap();
    let mut digest: Digest = serde_json::from_value(forged[5]["digest"].clone()).unwrap();
    digest.head = object(&relinked[4])["hash"].as_str().unwrap().to_owned();
    digest.key_id = attacker.key_id().to_owned();
    let (mut record, _) = digest.record(&attacker);
    for member in ["chain", "replica"] {
        record.insert(member.into(), forged[5][member].clone());
    }
    forged[5] = record;
    let log = files.log("audit.log", &recompute(forged));
    let keys = files.keys("keys.pem", &[&key]);
    let (code, text) = verify(&["--public-key", path(&keys), path(&log)], None);
    assert_broken_with(code, &text, "record seq 6 at");
    assert_broken_with(
        code,
        &text,
        &format!(
            "signed with key {}, which is not among the public keys",
            attacker.key_id()
        ),
    );
}

#[test]
fn digests_verify_across_a_key_rotation() {
    let files = Files::new();
    let old = SigningKey::generate().unwrap();
    let new = SigningKey::generate().unwrap();
    let out = Shared::default();
    let mut replica = Replica::start(
        "a",
        None,
        out.clone(),
        SigningKey::from_pem(old.to_pem().as_bytes(), "t").unwrap(),
        HOUR,
    );
    replica.record(3);
    replica.sink().digest_now();
    replica
        .slot
        .set(SigningKey::from_pem(new.to_pem().as_bytes(), "t").unwrap());
    replica.record(3);
    replica.stop();
    let log = files.log("audit.log", &out.lines());
    let both = files.keys("keys.pem", &[&old, &new]);
    let (code, text) = verify(&["--public-key", path(&both), path(&log)], None);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("2 digests (signatures checked; keys {}", {
            let mut ids = [old.key_id(), new.key_id()];
            ids.sort();
            ids.join(" ")
        })),
        "{text}"
    );
    // Without the old key the older digest cannot be checked.
    let only_new = files.keys("new.pem", &[&new]);
    let (code, text) = verify(&["--public-key", path(&only_new), path(&log)], None);
    assert_broken_with(
        code,
        &text,
        &format!("signed with key {}, which is not among", old.key_id()),
    );
}

#[test]
fn an_interleaved_stream_of_three_replicas_verifies_as_three_chains() {
    let files = Files::new();
    let key = SigningKey::generate().unwrap();
    let out = Shared::default();
    let mut replicas: Vec<Replica> = ["web-0", "web-1", "web-2"]
        .iter()
        .map(|name| {
            let copy = SigningKey::from_pem(key.to_pem().as_bytes(), "t").unwrap();
            Replica::start(name, None, out.clone(), copy, HOUR)
        })
        .collect();
    for round in 0..4 {
        for replica in &replicas {
            replica.record(2);
            replica.sink().flush();
        }
        if round == 1 {
            replicas[1].sink().digest_now();
        }
    }
    let mut anchors = Vec::new();
    for replica in &mut replicas {
        replica.stop();
        anchors.extend(replica.anchors.lock().unwrap().clone());
    }
    let mut stream = out.lines();
    // A log line of something else in the same stream is skipped.
    stream.insert(3, "2026-11-26T16:51:31Z INFO something else".to_owned());
    let chains: std::collections::BTreeSet<String> = stream
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| v["chain"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(chains.len(), 3);
    let keys = files.keys("keys.pem", &[&key]);
    let anchors = files.anchors(&anchors);
    let text = format!("{}\n", stream.join("\n"));
    let (code, out) = verify(
        &["--public-key", path(&keys), "--anchors", path(&anchors), "-"],
        Some(&text),
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok: 28 records in 3 chains in 1 files"), "{out}");
    for name in ["web-0", "web-1", "web-2"] {
        assert!(out.contains(&format!("(replica {name}):")), "{out}");
    }
    assert!(out.contains("1 lines that are not audit records"), "{out}");
    // A SIEM that re-serializes records (keys reordered, spaces) and delivers out of order.
    let mut shuffled: Vec<String> = stream
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| serde_json::to_string_pretty(&v).unwrap().replace('\n', ""))
        .collect();
    shuffled.reverse();
    shuffled.push(shuffled[0].clone());
    let text = format!("{}\n", shuffled.join("\n"));
    let (code, out) = verify(&["--public-key", path(&keys), "--any-order", "-"], Some(&text));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 duplicate records were dropped"), "{out}");
    // Without --any-order the reversed stream is out of order.
    let (code, out) = verify(&["--public-key", path(&keys), "-"], Some(&text));
    assert_eq!(code, 1, "{out}");
}

#[test]
fn a_restart_with_the_same_file_continues_the_chain_and_its_digests() {
    let files = Files::new();
    let key = SigningKey::generate().unwrap();
    let file = files.dir.path().join("audit.log");
    let mut chain_ids = Vec::new();
    for _ in 0..2 {
        let copy = SigningKey::from_pem(key.to_pem().as_bytes(), "t").unwrap();
        let mut replica = Replica::start("a", Some(&file), Shared::default(), copy, HOUR);
        replica.record(3);
        replica.stop();
        let lines = std::fs::read_to_string(&file).unwrap();
        chain_ids.push(object(lines.lines().last().unwrap())["chain"].clone());
    }
    assert_eq!(chain_ids[0], chain_ids[1], "the chain id survives the restart");
    let keys = files.keys("keys.pem", &[&key]);
    let (code, text) = verify(&["--public-key", path(&keys), path(&file)], None);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("8 records, seq 1..8"), "{text}");
    assert!(text.contains("2 digests"), "{text}");
    assert!(text.contains("unsigned tail 0"), "{text}");
}

#[test]
fn digests_come_every_interval() {
    let key = SigningKey::generate().unwrap();
    let out = Shared::default();
    let replica = Replica::start("a", None, out.clone(), key, Duration::from_millis(200));
    replica.record(1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while replica.anchors.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no digest within 10s");
        std::thread::sleep(Duration::from_millis(20));
    }
    replica.record(1);
    while replica.anchors.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "no second digest within 10s");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Nothing new, no digest: two digests, over seq 1..1 and 3..3.
    let anchors = replica.anchors.lock().unwrap().clone();
    assert_eq!((anchors[0].digest.first_seq, anchors[0].digest.last_seq), (1, 1));
    assert_eq!((anchors[1].digest.first_seq, anchors[1].digest.last_seq), (3, 3));
    assert_eq!(anchors[1].digest.prev_signature, anchors[0].signature);
}

#[test]
fn public_key_prints_the_key_of_a_signing_key_file() {
    let files = Files::new();
    let file = files.dir.path().join("audit-signing.key");
    let (key, _) = SigningKey::load_or_generate(&file).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_driftguard"))
        .args(["audit", "public-key", "--signing-key-file", path(&file)])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), key.public().to_pem());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("PRIVATE"));
}
