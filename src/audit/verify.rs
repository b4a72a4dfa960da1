//! Verification of chained audit records (`driftguard audit verify FILE... | -`).
//!
//! The input is any number of sources (rotated files in any order, one replica's stdout, or one
//! stream where several replicas' records are interleaved, such as a SIEM export of JSON lines).
//! Lines that do not carry the schema `driftguard.io/audit/v1` (log lines mixed into a stream)
//! are skipped and counted. Records are split by their `chain` (records written before chains
//! were named form one chain); each chain's runs are placed by the `seq` of their first record
//! (rotated files hold consecutive runs of the chain), then every record is checked in turn:
//!
//! 1. the line ends with a `hash` member and the rest is JSON with `seq` and `prev_hash` (a
//!    line re-serialized by a log store, with its keys reordered or spaced, is put back in
//!    canonical form first);
//! 2. `hash` is the SHA-256 of the line without that member (see [`super::chain`]): an edited
//!    record fails here;
//! 3. `prev_hash` equals the previous record's `hash` and `seq` is the previous `seq` + 1: a
//!    deleted, inserted, reordered record or a missing file fails here, at the record after
//!    the gap;
//! 4. a digest record (see [`super::digest`]) must be signed by one of the public keys given
//!    (when given), name this chain and replica, follow the previous digest (its
//!    `prev_signature` and `first_seq`), and sign exactly the record before it (`last_seq`,
//!    `head`): a record changed with every later hash recomputed fails here, as does a
//!    removed digest, records removed between digests, or another chain spliced in.
//!
//! Records after a chain's last digest are reported as its unsigned tail. With anchors (the
//! digests kept in the cluster), every anchored digest must be in its chain with the same hash:
//! a log cut after its last anchored digest fails ("cut short"), and so does an anchor that
//! was rewritten (its signature).
//!
//! The first record may start later than seq 1 (older files rotated away): that is reported as
//! a warning, not an error. `audit.dropped` records are valid links, reported as warnings (the
//! events they count are missing). A file gap marker (`audit.file_gap`, written when the file
//! could not be written and its backlog overflowed, see [`super::chain`]) is checked like a
//! link: its `prev_hash` must be the preceding record's hash and its `first_seq` the next seq;
//! the record after it must follow its `seq` and name its `last_hash`. The missing range is
//! reported as a warning (those records went to stdout only); markers are not counted as records.
//! With an expected head (one chain only), the last record's hash must equal it, which proves
//! nothing was cut from (or added to) the end.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::chain::{FILE_GAP_EVENT, GENESIS_HASH, canonical_json, sha256_hex, split_line};
use super::digest::{Anchor, Digest, SignatureCheck};
use super::signing::PublicKeys;

/// One verified chain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChainReport {
    /// The chain id (empty: records written before chains were named).
    pub chain: String,
    /// The replica of its last record.
    pub replica: String,
    /// Records checked (digests included, file gap markers not).
    pub records: u64,
    /// `seq` of the first record (0 when there are none).
    pub first_seq: u64,
    /// `seq` of the last record.
    pub last_seq: u64,
    /// `hash` of the last record (the head).
    pub head: String,
    /// The sources holding it, in chain order.
    pub files: Vec<PathBuf>,
    /// Digest records.
    pub digests: u64,
    /// `last_seq` of the last digest (0: none).
    pub signed_through: u64,
    /// Records after the last digest.
    pub unsigned_tail: u64,
    /// Whether the digests' signatures were checked (public keys given).
    pub signatures_checked: bool,
    /// Keys that signed its digests.
    pub key_ids: BTreeSet<String>,
    /// Cluster anchors found in it.
    pub anchors: u64,
}

/// Intact chains.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    /// Records checked, in all chains.
    pub records: u64,
    /// `seq` of the first record, when there is one chain (else 0).
    pub first_seq: u64,
    /// `seq` of the last record, when there is one chain (else 0).
    pub last_seq: u64,
    /// The head, when there is one chain (else empty).
    pub head: String,
    /// The chains, by chain id.
    pub chains: Vec<ChainReport>,
    /// The sources holding records, in chain order (chain by chain).
    pub files: Vec<PathBuf>,
    /// Gaps that are not tampering: dropped events, a chain starting after seq 1, empty files,
    /// unsigned tails, skipped lines, anchors of chains not in the input.
    pub warnings: Vec<String>,
}

/// Why verification failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// A file could not be read.
    Unreadable {
        /// File.
        path: PathBuf,
        /// Cause.
        error: String,
    },
    /// The options cannot be applied to this input.
    Usage(String),
    /// The first broken record.
    Broken {
        /// Its chain (empty: unnamed).
        chain: String,
        /// Its `seq`, when it could be read.
        seq: Option<u64>,
        /// File.
        file: PathBuf,
        /// Line (1-based).
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Unreadable { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            VerifyError::Usage(text) => f.write_str(text),
            VerifyError::Broken {
                chain,
                seq,
                file,
                line,
                reason,
            } => {
                if !chain.is_empty() {
                    write!(f, "chain {chain}: ")?;
                }
                let seq = seq.map_or_else(|| "?".to_owned(), |s| s.to_string());
                write!(f, "record seq {seq} at {}:{line}: {reason}", file.display())
            }
        }
    }
}

impl std::error::Error for VerifyError {}

/// What to check besides the chains.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions<'a> {
    /// The hash the last record must have (one chain only).
    pub expect_head: Option<&'a str>,
    /// Check digest signatures with these keys (None: not checked, with a warning).
    pub public_keys: Option<&'a PublicKeys>,
    /// Digests kept outside the log: each must be in its chain.
    pub anchors: &'a [Anchor],
    /// Order each chain's records by `seq` and drop exact duplicates (a log store that
    /// reorders or delivers twice); by default the input order must be the chain order.
    pub any_order: bool,
}

struct Record {
    seq: u64,
    prev_hash: String,
    hash: String,
    event: Value,
}

/// A file gap marker's range: records `first_seq..=seq` are missing, the last had `last_hash`.
struct FileGap {
    first_seq: u64,
    last_hash: String,
}

fn is_hex64(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The gap a marker record states; Err when it is malformed; None for ordinary records.
fn file_gap(record: &Record) -> Result<Option<FileGap>, String> {
    if record.event.get("event").and_then(Value::as_str) != Some(FILE_GAP_EVENT) {
        return Ok(None);
    }
    let first_seq = record
        .event
        .get("first_seq")
        .and_then(Value::as_u64)
        .filter(|first| *first <= record.seq)
        .ok_or("file gap marker without a valid first_seq")?;
    let last_hash = record
        .event
        .get("last_hash")
        .and_then(Value::as_str)
        .filter(|h| is_hex64(h))
        .ok_or("file gap marker without a valid last_hash")?;
    Ok(Some(FileGap {
        first_seq,
        last_hash: last_hash.to_owned(),
    }))
}

/// The hashed body and claimed hash of a line: as written, or, for a line a log store
/// re-serialized, its canonical form.
fn body_and_hash(line: &str) -> Option<(String, String)> {
    if let Some((body, hash)) = split_line(line) {
        return Some((body, hash.to_owned()));
    }
    let mut object = match serde_json::from_str::<Value>(line).ok()? {
        Value::Object(object) => object,
        _ => return None,
    };
    let hash = object.remove("hash")?.as_str().filter(|h| is_hex64(h))?.to_owned();
    Some((canonical_json(&Value::Object(object)), hash))
}

fn parse_record(line: &str) -> Result<Record, String> {
    let (body, hash) = body_and_hash(line).ok_or("not a chained audit record (no trailing hash member)")?;
    let event: Value = serde_json::from_str(&body).map_err(|e| format!("not JSON: {e}"))?;
    let seq = event.get("seq").and_then(Value::as_u64).ok_or("no seq")?;
    let prev_hash = event
        .get("prev_hash")
        .and_then(Value::as_str)
        .ok_or("no prev_hash")?
        .to_owned();
    if sha256_hex(body.as_bytes()) != hash {
        return Err("content does not match its hash: the record was modified".to_owned());
    }
    Ok(Record {
        seq,
        prev_hash,
        hash,
        event,
    })
}

#[derive(Clone)]
struct Link {
    seq: u64,
    hash: String,
    file: PathBuf,
    line: usize,
}

/// One line of a source that carries the audit schema.
struct Line {
    source: usize,
    number: usize,
    text: String,
    /// `seq` and `chain`, when the line is JSON that says them.
    seq: Option<u64>,
}

/// The lines of a source: (line number, text), without empty trailing line.
fn lines(path: &Path, bytes: &[u8]) -> Result<Vec<(usize, String)>, VerifyError> {
    let mut out = Vec::new();
    let mut parts: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if parts.last().is_some_and(|l| l.is_empty()) {
        parts.pop();
    }
    for (i, part) in parts.into_iter().enumerate() {
        let text = String::from_utf8(part.to_vec()).map_err(|_| VerifyError::Broken {
            chain: String::new(),
            seq: None,
            file: path.to_owned(),
            line: i + 1,
            reason: "not UTF-8: the record was modified".to_owned(),
        })?;
        out.push((i + 1, text));
    }
    Ok(out)
}

/// Read `paths` (`-` is stdin) and [`verify_sources`] them.
pub fn verify_paths(paths: &[PathBuf], options: VerifyOptions<'_>) -> Result<VerifyReport, VerifyError> {
    let mut sources = Vec::with_capacity(paths.len());
    for path in paths {
        let bytes = if path.as_os_str() == "-" {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes).map(|_| bytes)
        } else {
            std::fs::read(path)
        }
        .map_err(|e| VerifyError::Unreadable {
            path: path.clone(),
            error: e.to_string(),
        })?;
        sources.push((path.clone(), bytes));
    }
    verify_sources(&sources, options)
}

/// Verify `paths` (any order) as rotated files of one chain; `expect_head` is the hash the last
/// record must have.
pub fn verify_files(paths: &[PathBuf], expect_head: Option<&str>) -> Result<VerifyReport, VerifyError> {
    verify_paths(
        paths,
        VerifyOptions {
            expect_head,
            ..VerifyOptions::default()
        },
    )
}

/// Verify the records of `sources` (name and content), split by chain.
pub fn verify_sources(sources: &[(PathBuf, Vec<u8>)], options: VerifyOptions<'_>) -> Result<VerifyReport, VerifyError> {
    let mut warnings = Vec::new();
    // chain id -> runs (one per source), each in input order.
    let mut chains: BTreeMap<String, Vec<Vec<Line>>> = BTreeMap::new();
    let mut skipped = 0usize;
    for (index, (path, bytes)) in sources.iter().enumerate() {
        let lines = lines(path, bytes)?;
        if lines.is_empty() {
            warnings.push(format!("{}: empty file", path.display()));
            continue;
        }
        let mut runs: BTreeMap<String, Vec<Line>> = BTreeMap::new();
        let mut last_chain = String::new();
        for (number, text) in lines {
            if !text.contains(super::SCHEMA) {
                skipped += usize::from(!text.trim().is_empty());
                continue;
            }
            let value = serde_json::from_str::<Value>(&text).ok();
            let seq = value.as_ref().and_then(|v| v.get("seq")).and_then(Value::as_u64);
            // A line that is no longer JSON stays with the chain before it.
            let chain = match &value {
                Some(v) => v.get("chain").and_then(Value::as_str).unwrap_or_default().to_owned(),
                None => last_chain.clone(),
            };
            last_chain.clone_from(&chain);
            runs.entry(chain).or_default().push(Line {
                source: index,
                number,
                text,
                seq,
            });
        }
        for (chain, run) in runs {
            chains.entry(chain).or_default().push(run);
        }
    }
    if skipped > 0 {
        warnings.push(format!(
            "{skipped} lines that are not audit records (no schema {}) were skipped",
            super::SCHEMA
        ));
    }
    if options.expect_head.is_some() && chains.len() > 1 {
        return Err(VerifyError::Usage(format!(
            "--expect-head needs the records of one chain, and the input has {}: verify each chain's records alone",
            chains.len()
        )));
    }
    let mut reports = Vec::with_capacity(chains.len());
    for (chain, runs) in chains {
        let lines = order_runs(&chain, runs, sources, options.any_order, &mut warnings)?;
        let mut check = ChainCheck::new(&chain, options);
        for line in &lines {
            check.record(line, &sources[line.source].0, &mut warnings)?;
        }
        reports.push(check.finish(options, &mut warnings)?);
    }
    if options.public_keys.is_none() && reports.iter().any(|r| r.digests > 0) {
        warnings.push(
            "digest signatures were not checked (no --public-key): whoever can rewrite the log can recompute the chain and its digests"
                .to_owned(),
        );
    }
    let found: BTreeSet<&str> = reports.iter().map(|r| r.chain.as_str()).collect();
    let mut missing = BTreeSet::new();
    for anchor in options.anchors {
        if !found.contains(anchor.digest.chain.as_str()) && missing.insert(anchor.digest.chain.as_str()) {
            warnings.push(format!(
                "the cluster anchors name chain {} (replica {}, digest at seq {}, {}), which has no records in the input",
                anchor.digest.chain, anchor.digest.replica, anchor.seq, anchor.digest.time
            ));
        }
    }
    let mut files: Vec<PathBuf> = Vec::new();
    for file in reports.iter().flat_map(|r| &r.files) {
        if !files.contains(file) {
            files.push(file.clone());
        }
    }
    let (first_seq, last_seq, head) = match reports.as_slice() {
        [only] => (only.first_seq, only.last_seq, only.head.clone()),
        _ => (0, 0, String::new()),
    };
    Ok(VerifyReport {
        records: reports.iter().map(|r| r.records).sum(),
        first_seq,
        last_seq,
        head,
        chains: reports,
        files,
        warnings,
    })
}

/// A chain's lines in chain order: runs by the `seq` of their first line (or, with
/// `any_order`, every line by `seq`, exact duplicates dropped).
fn order_runs(
    chain: &str,
    runs: Vec<Vec<Line>>,
    sources: &[(PathBuf, Vec<u8>)],
    any_order: bool,
    warnings: &mut Vec<String>,
) -> Result<Vec<Line>, VerifyError> {
    let unordered = |line: &Line| VerifyError::Broken {
        chain: chain.to_owned(),
        seq: None,
        file: sources[line.source].0.clone(),
        line: line.number,
        reason: "cannot read the record's seq (needed to order the records): the record was modified".to_owned(),
    };
    if any_order {
        let mut lines: Vec<Line> = runs.into_iter().flatten().collect();
        if let Some(line) = lines.iter().find(|l| l.seq.is_none()) {
            return Err(unordered(line));
        }
        lines.sort_by_key(|l| l.seq);
        let before = lines.len();
        lines.dedup_by(|a, b| a.seq == b.seq && a.text == b.text);
        if lines.len() < before {
            warnings.push(format!(
                "chain {chain}: {} duplicate records were dropped",
                before - lines.len()
            ));
        }
        return Ok(lines);
    }
    let mut keyed = Vec::with_capacity(runs.len());
    for run in runs {
        let Some(first) = run.first() else { continue };
        let seq = first.seq.ok_or_else(|| unordered(first))?;
        keyed.push((seq, run));
    }
    keyed.sort_by_key(|(seq, _)| *seq);
    Ok(keyed.into_iter().flat_map(|(_, run)| run).collect())
}

/// The last digest seen in a chain.
struct SeenDigest {
    seq: u64,
    signature: String,
}

/// The checks of one chain, record by record.
struct ChainCheck<'a> {
    chain: String,
    options: VerifyOptions<'a>,
    previous: Option<Link>,
    /// The chain in the input begins at seq 1 (nothing rotated away).
    from_genesis: bool,
    last_digest: Option<SeenDigest>,
    /// Digest records by seq: their hash.
    digest_hashes: BTreeMap<u64, String>,
    report: ChainReport,
}

impl<'a> ChainCheck<'a> {
    fn new(chain: &str, options: VerifyOptions<'a>) -> Self {
        ChainCheck {
            chain: chain.to_owned(),
            options,
            previous: None,
            from_genesis: false,
            last_digest: None,
            digest_hashes: BTreeMap::new(),
            report: ChainReport {
                chain: chain.to_owned(),
                signatures_checked: options.public_keys.is_some(),
                ..ChainReport::default()
            },
        }
    }

    fn name(&self) -> String {
        if self.chain.is_empty() {
            "the chain".to_owned()
        } else {
            format!("chain {} (replica {})", self.chain, self.report.replica)
        }
    }

    fn record(&mut self, line: &Line, path: &Path, warnings: &mut Vec<String>) -> Result<(), VerifyError> {
        let number = line.number;
        let chain = self.chain.clone();
        let broken = |seq: Option<u64>, reason: String| VerifyError::Broken {
            chain: chain.clone(),
            seq,
            file: path.to_owned(),
            line: number,
            reason,
        };
        let record = parse_record(&line.text).map_err(|reason| broken(line.seq, reason))?;
        let gap = file_gap(&record).map_err(|reason| broken(Some(record.seq), reason))?;
        // A marker links into the chain at its first missing seq.
        let linked_seq = gap.as_ref().map_or(record.seq, |g| g.first_seq);
        match &self.previous {
            None => {
                self.report.first_seq = linked_seq;
                self.from_genesis = linked_seq == 1 && record.prev_hash == GENESIS_HASH;
                if !self.from_genesis {
                    warnings.push(format!(
                        "{}:{number}: the chain begins at seq {}; earlier records are not among the files (rotated away?)",
                        path.display(),
                        linked_seq
                    ));
                }
            }
            Some(p) => {
                if record.prev_hash != p.hash {
                    return Err(broken(
                        Some(record.seq),
                        format!(
                            "prev_hash does not match the hash of the preceding record (seq {} at {}:{}): a record was deleted, inserted or reordered, or a file is missing",
                            p.seq,
                            p.file.display(),
                            p.line
                        ),
                    ));
                }
                if linked_seq != p.seq + 1 {
                    return Err(broken(
                        Some(record.seq),
                        format!("seq does not follow seq {} at {}:{}", p.seq, p.file.display(), p.line),
                    ));
                }
            }
        }
        if let Some(replica) = record.event.get("replica").and_then(Value::as_str) {
            replica.clone_into(&mut self.report.replica);
        }
        if self.report.files.last().map(PathBuf::as_path) != Some(path) {
            self.report.files.push(path.to_owned());
        }
        if record.event.get("event").and_then(Value::as_str) == Some("audit.dropped") {
            let count = record.event.get("dropped").and_then(Value::as_u64).unwrap_or(0);
            warnings.push(format!(
                "{}:{number}: seq {}: {count} audit events were dropped before this record (audit queue full)",
                path.display(),
                record.seq
            ));
        }
        if let Some((digest, signature)) = Digest::of_record(&record.event).map_err(|r| broken(Some(record.seq), r))? {
            self.digest(&record, &digest, &signature)
                .map_err(|reason| broken(Some(record.seq), reason))?;
        } else if gap.is_none() {
            self.report.unsigned_tail += 1;
        }
        let hash = match gap {
            Some(gap) => {
                warnings.push(format!(
                    "{}:{number}: seq {}..{}: {} records are missing from the file: it could not be written (disk full?) and its backlog overflowed; they went to stdout only",
                    path.display(),
                    gap.first_seq,
                    record.seq,
                    record.seq - gap.first_seq + 1
                ));
                self.report.unsigned_tail += record.seq - gap.first_seq + 1;
                gap.last_hash
            }
            None => {
                self.report.records += 1;
                record.hash
            }
        };
        self.previous = Some(Link {
            seq: record.seq,
            hash,
            file: path.to_owned(),
            line: number,
        });
        Ok(())
    }

    /// The checks of a digest record (see the module documentation).
    fn digest(&mut self, record: &Record, digest: &Digest, signature: &str) -> Result<(), String> {
        let chain = record.event.get("chain").and_then(Value::as_str).unwrap_or_default();
        let replica = record.event.get("replica").and_then(Value::as_str).unwrap_or_default();
        if digest.chain != chain || digest.replica != replica {
            return Err(format!(
                "a digest of chain {} (replica {}) in chain {chain} (replica {replica}): records of another chain were spliced in",
                digest.chain, digest.replica
            ));
        }
        if let Some(keys) = self.options.public_keys {
            match digest.check(signature, keys) {
                SignatureCheck::Valid => {}
                SignatureCheck::UnknownKey => {
                    return Err(format!(
                        "the digest is signed with key {}, which is not among the public keys given ({}): a forged digest, or a key missing from --public-key",
                        digest.key_id,
                        keys.ids().collect::<Vec<_>>().join(", ")
                    ));
                }
                SignatureCheck::Invalid => {
                    return Err(format!(
                        "the digest's signature does not verify with key {}: the digest was altered or forged",
                        digest.key_id
                    ));
                }
            }
        }
        match &self.last_digest {
            Some(previous) => {
                if digest.prev_signature != previous.signature {
                    return Err(format!(
                        "the digest does not follow the digest at seq {} (it names another previous signature): a digest was removed or inserted",
                        previous.seq
                    ));
                }
                if digest.first_seq != previous.seq + 1 {
                    return Err(format!(
                        "the digest covers seq {}.. but the previous digest is at seq {}: a digest was removed or inserted",
                        digest.first_seq, previous.seq
                    ));
                }
            }
            None if self.from_genesis && (!digest.prev_signature.is_empty() || digest.first_seq != 1) => {
                return Err(format!(
                    "the digest names a previous digest (it covers seq {}..), but none precedes it in the chain: a digest was removed",
                    digest.first_seq
                ));
            }
            None => {}
        }
        let before = self.previous.as_ref().map_or(0, |p| p.seq);
        if digest.last_seq != before || digest.last_seq + 1 != record.seq {
            return Err(format!(
                "the digest signs records up to seq {}, but the record before it is seq {before}: records were removed or inserted before it and the chain recomputed",
                digest.last_seq
            ));
        }
        if digest.head != record.prev_hash {
            return Err(format!(
                "the digest signs head {} for seq {}, but the chain has {}: a record up to seq {} was changed and the hashes after it recomputed",
                digest.head, digest.last_seq, record.prev_hash, digest.last_seq
            ));
        }
        self.last_digest = Some(SeenDigest {
            seq: record.seq,
            signature: signature.to_owned(),
        });
        self.digest_hashes.insert(record.seq, record.hash.clone());
        self.report.digests += 1;
        self.report.signed_through = digest.last_seq;
        self.report.unsigned_tail = 0;
        self.report.key_ids.insert(digest.key_id.clone());
        Ok(())
    }

    fn finish(mut self, options: VerifyOptions<'_>, warnings: &mut Vec<String>) -> Result<ChainReport, VerifyError> {
        let last = self.previous.clone();
        let broken_at_end = |reason: String| match &last {
            Some(p) => VerifyError::Broken {
                chain: self.chain.clone(),
                seq: Some(p.seq),
                file: p.file.clone(),
                line: p.line,
                reason,
            },
            None => VerifyError::Broken {
                chain: self.chain.clone(),
                seq: None,
                file: PathBuf::new(),
                line: 0,
                reason,
            },
        };
        let (last_seq, head) = last.as_ref().map_or((0, String::new()), |p| (p.seq, p.hash.clone()));
        if let Some(expected) = options.expect_head
            && !expected.eq_ignore_ascii_case(&head)
        {
            return Err(broken_at_end(if last.is_some() {
                format!(
                    "the last record's hash is {head}, not the expected head {expected}: records were cut from (or added to) the end"
                )
            } else {
                format!("no records, but the expected head is {expected}")
            }));
        }
        for anchor in options.anchors.iter().filter(|a| a.digest.chain == self.chain) {
            if let Some(keys) = options.public_keys
                && anchor.digest.check(&anchor.signature, keys) != SignatureCheck::Valid
            {
                return Err(broken_at_end(format!(
                    "the cluster anchor of the digest at seq {} does not verify with the public keys: the anchor was rewritten (the log's signed digests are the evidence)",
                    anchor.seq
                )));
            }
            if anchor.seq > last_seq {
                return Err(broken_at_end(format!(
                    "the chain ends at seq {last_seq}, but the cluster anchor names its digest at seq {} (signed {}): the log was cut short",
                    anchor.seq, anchor.digest.time
                )));
            }
            if anchor.seq < self.report.first_seq {
                continue;
            }
            match self.digest_hashes.get(&anchor.seq) {
                Some(hash) if *hash == anchor.hash => self.report.anchors += 1,
                found => {
                    return Err(broken_at_end(format!(
                        "the cluster anchor names the digest at seq {} with hash {}, but the chain has {} there: the log or the anchor was rewritten",
                        anchor.seq,
                        anchor.hash,
                        found.map_or("no digest", String::as_str)
                    )));
                }
            }
        }
        self.report.last_seq = last_seq;
        self.report.head = head;
        if self.report.unsigned_tail > 0 && (self.report.digests > 0 || options.public_keys.is_some()) {
            let name = self.name();
            warnings.push(if self.report.digests == 0 {
                format!(
                    "{name}: no signed digest: none of its {} records is signed (unsigned tail)",
                    self.report.unsigned_tail
                )
            } else {
                format!(
                    "{name}: unsigned tail: {} records after the last digest (seq {}..{}) are not signed yet",
                    self.report.unsigned_tail,
                    self.report.signed_through + 2,
                    last_seq
                )
            });
        }
        Ok(self.report)
    }
}
