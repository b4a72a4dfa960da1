//! Lines of an object's fields in its YAML file, so denials point at the drifted field rather
//! than at the object's first line.
//!
//! Kept compact: one `(path hash, line)` pair per node (mapping value or sequence item), sorted
//! for binary search, 8 bytes each. A path is hashed from its steps (field names, list
//! indexes); a drift path is looked up with keyed list elements replaced by their index in the
//! desired object, and falls back to its nearest recorded ancestor. Pure: works on text.

use granit_parser::{Event, Parser};

use crate::drift::{FieldPath, PathSegment};

/// One step of a path as written in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// Where each field of one object is written, by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldLines(Box<[(u32, u32)]>);

impl FieldLines {
    /// From `(path relative to the object, line)` records.
    pub(super) fn from_records<'a>(records: impl IntoIterator<Item = (&'a [Step], u32)>) -> Self {
        let mut pairs: Vec<(u32, u32)> = records
            .into_iter()
            .map(|(path, line)| (hash_steps(path.iter().map(StepRef::from)), line))
            .collect();
        // On a (rare) hash collision keep the earliest line: any answer is a real field's line.
        pairs.sort_unstable();
        pairs.dedup_by_key(|pair| pair.0);
        FieldLines(pairs.into_boxed_slice())
    }

    /// True when no field line is known (generated manifests, JSON files).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.0)
    }

    /// The line of `path`, or of its nearest ancestor whose line is known.
    pub fn line_of(&self, path: &FieldPath) -> Option<u32> {
        let steps: Vec<StepRef<'_>> = path
            .segments()
            .iter()
            .map(|segment| match segment {
                PathSegment::Field(name) => StepRef::Key(name),
                PathSegment::Element(key) => StepRef::Index(key.desired_index()),
            })
            .collect();
        (1..=steps.len()).rev().find_map(|len| {
            let hash = hash_steps(steps.iter().take(len).copied());
            self.0
                .binary_search_by_key(&hash, |pair| pair.0)
                .ok()
                .and_then(|at| self.0.get(at))
                .map(|pair| pair.1)
        })
    }
}

#[derive(Clone, Copy)]
enum StepRef<'a> {
    Key(&'a str),
    Index(usize),
}

impl<'a> From<&'a Step> for StepRef<'a> {
    fn from(step: &'a Step) -> Self {
        match step {
            Step::Key(key) => StepRef::Key(key),
            Step::Index(index) => StepRef::Index(*index),
        }
    }
}

/// FNV-1a over a tagged encoding of the steps (a key cannot be confused with an index, nor
/// `a.b` with `[a.b]`).
fn hash_steps<'a>(steps: impl Iterator<Item = StepRef<'a>>) -> u32 {
    const PRIME: u32 = 0x0100_0193;
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u32::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    for step in steps {
        match step {
            StepRef::Key(key) => {
                feed(&[1]);
                feed(key.as_bytes());
                feed(&[0]);
            }
            StepRef::Index(index) => {
                feed(&[2]);
                feed(&(index as u64).to_le_bytes());
            }
        }
    }
    hash
}

/// What the walk is inside of.
enum Frame {
    /// A mapping: the key read for the next value (if a plain scalar) and its line; `pending`
    /// once a key is read and its value is expected.
    Map {
        key: Option<Step>,
        key_line: u32,
        pending: bool,
    },
    /// A sequence and the index of its next item.
    Seq { next: usize },
    /// A complex key (a collection used as a mapping key): skipped.
    SkipKey,
}

/// Every node of the single YAML document `text` with its path and file line (`first_line`
/// is the file line of the text's first line). The root is not listed. Empty on a parse
/// error (the caller reports the error; lines are only a refinement).
pub(super) fn yaml_lines(text: &str, first_line: u32) -> Vec<(Vec<Step>, u32)> {
    let offset = first_line.saturating_sub(1);
    let mut out = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut path: Vec<Step> = Vec::new();
    for item in Parser::new_from_str(text) {
        let Ok((event, span)) = item else {
            return Vec::new();
        };
        let line = offset.saturating_add(u32::try_from(span.start.line()).unwrap_or(u32::MAX));
        let starts = match event {
            Event::Scalar(..) | Event::Alias(..) => Some(false),
            Event::SequenceStart(..) | Event::MappingStart(..) => Some(true),
            Event::SequenceEnd | Event::MappingEnd => {
                match stack.pop() {
                    Some(Frame::SkipKey) => {
                        if let Some(Frame::Map { key, pending, .. }) = stack.last_mut() {
                            *key = None;
                            *pending = true;
                        }
                    }
                    Some(_) => {
                        path.pop();
                        finish_value(&mut stack);
                    }
                    None => {}
                }
                None
            }
            _ => None,
        };
        let Some(collection) = starts else { continue };
        let push = |stack: &mut Vec<Frame>| {
            stack.push(match event {
                Event::SequenceStart(..) => Frame::Seq { next: 0 },
                _ => Frame::Map {
                    key: None,
                    key_line: 0,
                    pending: false,
                },
            });
        };
        let step = match stack.last_mut() {
            Some(Frame::SkipKey) => {
                if collection {
                    stack.push(Frame::SkipKey);
                }
                continue;
            }
            Some(Frame::Map { key, key_line, pending }) if !*pending => {
                // This node is a key.
                if collection {
                    stack.push(Frame::SkipKey);
                } else {
                    *key = match &event {
                        Event::Scalar(value, ..) => Some(Step::Key(value.to_string())),
                        _ => None,
                    };
                    *key_line = line;
                    *pending = true;
                }
                continue;
            }
            // A mapping value is where its key is written.
            Some(Frame::Map { key, key_line, .. }) => key.take().map(|step| (step, *key_line)),
            Some(Frame::Seq { next }) => Some((Step::Index(*next), line)),
            None => {
                // The root: recorded by the caller as the object's line.
                if collection {
                    push(&mut stack);
                }
                continue;
            }
        };
        match step {
            Some((step, line)) => {
                let mut full = path.clone();
                full.push(step.clone());
                out.push((full, line));
                if collection {
                    path.push(step);
                }
            }
            // A value under a key that is not a plain scalar: not addressable.
            None if collection => path.push(Step::Key(String::new())),
            None => {}
        }
        if collection {
            push(&mut stack);
        } else {
            finish_value(&mut stack);
        }
    }
    out
}

/// A value ended: its mapping expects a key again, its sequence moves to the next index.
fn finish_value(stack: &mut [Frame]) {
    match stack.last_mut() {
        Some(Frame::Map { key, pending, .. }) => {
            *key = None;
            *pending = false;
        }
        Some(Frame::Seq { next }) => *next += 1,
        Some(Frame::SkipKey) | None => {}
    }
}

/// The records under `prefix`, relative to it.
pub(super) fn under<'a>(
    records: &'a [(Vec<Step>, u32)],
    prefix: &'a [Step],
) -> impl Iterator<Item = (&'a [Step], u32)> + 'a {
    records.iter().filter_map(move |(steps, line)| {
        steps
            .strip_prefix(prefix)
            .filter(|rest| !rest.is_empty())
            .map(|rest| (rest, *line))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(records: &[(Vec<Step>, u32)]) -> Vec<(String, u32)> {
        records
            .iter()
            .map(|(steps, line)| {
                let text: Vec<String> = steps
                    .iter()
                    .map(|s| match s {
                        Step::Key(k) => k.clone(),
                        Step::Index(i) => format!("[{i}]"),
                    })
                    .collect();
                (text.join("."), *line)
            })
            .collect()
    }

    #[test]
    fn block_and_flow_nodes_get_their_lines() {
        let text = "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  containers:\n    # the app\n    - name: web\n      image: nginx\n      args: [a,\n        b]\n";
        let lines = show(&yaml_lines(text, 10));
        let want = [
            ("apiVersion", 11),
            ("kind", 12),
            ("metadata", 13),
            ("metadata.name", 14),
            ("metadata.labels", 15),
            ("metadata.labels.app", 15),
            ("spec", 16),
            ("spec.containers", 17),
            ("spec.containers.[0]", 19),
            ("spec.containers.[0].name", 19),
            ("spec.containers.[0].image", 20),
            ("spec.containers.[0].args", 21),
            ("spec.containers.[0].args.[0]", 21),
            ("spec.containers.[0].args.[1]", 22),
        ];
        let want: Vec<(String, u32)> = want.iter().map(|(p, l)| ((*p).to_owned(), *l)).collect();
        assert_eq!(lines, want);
    }

    #[test]
    fn complex_keys_are_skipped_and_errors_give_nothing() {
        let lines = show(&yaml_lines("? [a, b]\n: 1\nc: 2\n", 1));
        assert_eq!(lines, vec![("c".to_owned(), 3)]);
        assert!(yaml_lines("a: [\n", 1).is_empty());
    }

    #[test]
    fn lookup_falls_back_to_the_nearest_ancestor() {
        let records = yaml_lines("a:\n  b: 1\nc: 2\n", 5);
        let lines = FieldLines::from_records(records.iter().map(|(s, l)| (s.as_slice(), *l)));
        let path = |keys: &[&str]| FieldPath::from_fields(keys.iter().map(|k| (*k).to_owned()));
        assert_eq!(lines.line_of(&path(&["a", "b"])), Some(6));
        assert_eq!(lines.line_of(&path(&["c"])), Some(7));
        assert_eq!(lines.line_of(&path(&["a", "missing"])), Some(5));
        assert_eq!(lines.line_of(&path(&["missing"])), None);
        assert_eq!(lines.heap_bytes(), 8 * 3);
    }
}
