//! Verification of chained audit files (`driftguard audit verify FILE...`).
//!
//! The files may be given in any order: each file is placed by the `seq` of its first record
//! (rotated files hold consecutive runs of the chain), then every record is checked in turn:
//!
//! 1. the line ends with a `hash` member and the rest is JSON with `seq` and `prev_hash`;
//! 2. `hash` is the SHA-256 of the line without that member (see [`super::chain`]): an edited
//!    record fails here;
//! 3. `prev_hash` equals the previous record's `hash` and `seq` is the previous `seq` + 1: a
//!    deleted, inserted, reordered record or a missing file fails here, at the record after
//!    the gap.
//!
//! The first record may start later than seq 1 (older files rotated away): that is reported as
//! a warning, not an error. `audit.dropped` records are valid links, reported as warnings (the
//! events they count are missing). A file gap marker (`audit.file_gap`, written when the file
//! could not be written and its backlog overflowed, see [`super::chain`]) is checked like a
//! link: its `prev_hash` must be the preceding record's hash and its `first_seq` the next seq;
//! the record after it must follow its `seq` and name its `last_hash`. The missing range is
//! reported as a warning (those records went to stdout only); markers are not counted as records.
//! Like every record of this unkeyed chain a marker can be forged by whoever can rewrite the
//! file: compare its range with the stdout copy or the `driftguard_audit_file_dropped_total`
//! metric, and anchor the end with an expected head. With an expected head, the last record's hash must equal it,
//! which proves nothing was cut from (or added to) the end.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::chain::{FILE_GAP_EVENT, GENESIS_HASH, sha256_hex, split_line};

/// An intact chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records checked.
    pub records: u64,
    /// `seq` of the first and last records (0 when there are none).
    pub first_seq: u64,
    /// `seq` of the last record.
    pub last_seq: u64,
    /// `hash` of the last record (the head).
    pub head: String,
    /// The files in chain order.
    pub files: Vec<PathBuf>,
    /// Gaps that are not tampering: dropped events, a chain starting after seq 1, empty files.
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
    /// The first broken record.
    Broken {
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
            VerifyError::Broken {
                seq,
                file,
                line,
                reason,
            } => {
                let seq = seq.map_or_else(|| "?".to_owned(), |s| s.to_string());
                write!(f, "record seq {seq} at {}:{line}: {reason}", file.display())
            }
        }
    }
}

impl std::error::Error for VerifyError {}

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
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .ok_or("file gap marker without a valid last_hash")?;
    Ok(Some(FileGap {
        first_seq,
        last_hash: last_hash.to_owned(),
    }))
}

fn parse_record(line: &str) -> Result<Record, String> {
    let (body, hash) = split_line(line).ok_or("not a chained audit record (no trailing hash member)")?;
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
        hash: hash.to_owned(),
        event,
    })
}

struct Link {
    seq: u64,
    hash: String,
    file: PathBuf,
    line: usize,
}

/// The lines of a file: (line number, text), without empty trailing line.
fn lines(path: &Path, bytes: &[u8]) -> Result<Vec<(usize, String)>, VerifyError> {
    let mut out = Vec::new();
    let mut parts: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if parts.last().is_some_and(|l| l.is_empty()) {
        parts.pop();
    }
    for (i, part) in parts.into_iter().enumerate() {
        let text = String::from_utf8(part.to_vec()).map_err(|_| VerifyError::Broken {
            seq: None,
            file: path.to_owned(),
            line: i + 1,
            reason: "not UTF-8: the record was modified".to_owned(),
        })?;
        out.push((i + 1, text));
    }
    Ok(out)
}

/// Verify `paths` (any order) as one chain; `expect_head` is the hash the last record must have.
pub fn verify_files(paths: &[PathBuf], expect_head: Option<&str>) -> Result<VerifyReport, VerifyError> {
    let mut files = Vec::with_capacity(paths.len());
    let mut warnings = Vec::new();
    for path in paths {
        let bytes = std::fs::read(path).map_err(|e| VerifyError::Unreadable {
            path: path.clone(),
            error: e.to_string(),
        })?;
        files.push((path.clone(), bytes));
    }
    let mut ordered = Vec::with_capacity(files.len());
    for (path, bytes) in &files {
        let lines = lines(path, bytes)?;
        let Some((_, first)) = lines.first() else {
            warnings.push(format!("{}: empty file", path.display()));
            continue;
        };
        let seq = split_line(first)
            .and_then(|(body, _)| serde_json::from_str::<Value>(&body).ok())
            .and_then(|v| v.get("seq").and_then(Value::as_u64))
            .ok_or_else(|| VerifyError::Broken {
                seq: None,
                file: path.clone(),
                line: 1,
                reason: "cannot read the first record's seq (needed to order the files): the record was modified"
                    .to_owned(),
            })?;
        ordered.push((seq, path.clone(), lines));
    }
    ordered.sort_by_key(|(seq, _, _)| *seq);

    let mut previous: Option<Link> = None;
    let mut records = 0u64;
    let mut first_seq = 0u64;
    for (_, path, lines) in &ordered {
        for (number, text) in lines {
            let broken = |seq: Option<u64>, reason: String| VerifyError::Broken {
                seq,
                file: path.clone(),
                line: *number,
                reason,
            };
            let record = parse_record(text).map_err(|reason| {
                // The seq of a modified record, when its JSON still says one.
                let seq = serde_json::from_str::<Value>(text)
                    .ok()
                    .and_then(|v| v.get("seq").and_then(Value::as_u64));
                broken(seq, reason)
            })?;
            let gap = file_gap(&record).map_err(|reason| broken(Some(record.seq), reason))?;
            // A marker links into the chain at its first missing seq.
            let linked_seq = gap.as_ref().map_or(record.seq, |g| g.first_seq);
            match &previous {
                None => {
                    first_seq = linked_seq;
                    if linked_seq != 1 || record.prev_hash != GENESIS_HASH {
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
            if record.event.get("event").and_then(Value::as_str) == Some("audit.dropped") {
                let count = record.event.get("dropped").and_then(Value::as_u64).unwrap_or(0);
                warnings.push(format!(
                    "{}:{number}: seq {}: {count} audit events were dropped before this record (audit queue full)",
                    path.display(),
                    record.seq
                ));
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
                    gap.last_hash
                }
                None => {
                    records += 1;
                    record.hash
                }
            };
            previous = Some(Link {
                seq: record.seq,
                hash,
                file: path.clone(),
                line: *number,
            });
        }
    }
    let (last_seq, head) = previous
        .as_ref()
        .map_or((0, String::new()), |p| (p.seq, p.hash.clone()));
    if let Some(expected) = expect_head
        && !expected.eq_ignore_ascii_case(&head)
    {
        return Err(match previous {
            Some(p) => VerifyError::Broken {
                seq: Some(p.seq),
                file: p.file,
                line: p.line,
                reason: format!(
                    "the last record's hash is {head}, not the expected head {expected}: records were cut from (or added to) the end"
                ),
            },
            None => VerifyError::Broken {
                seq: None,
                file: paths.first().cloned().unwrap_or_default(),
                line: 0,
                reason: format!("no records, but the expected head is {expected}"),
            },
        });
    }
    Ok(VerifyReport {
        records,
        first_seq,
        last_seq,
        head,
        files: ordered.into_iter().map(|(_, path, _)| path).collect(),
        warnings,
    })
}
