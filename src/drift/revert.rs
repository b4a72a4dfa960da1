//! The revert patch: RFC 6902 operations on the new object that put Git's values back.

use json_patch::jsonptr::{PointerBuf, Token};
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use serde_json::Value;

use super::FieldDrift;
use super::path::{FieldPath, PathSegment};

/// See [`super::revert_patch`].
pub(crate) fn revert_patch(new: &Value, desired: &Value, drifts: &[FieldDrift]) -> Patch {
    // Operations are computed against the object as already patched, so that indices and
    // "does the parent exist" stay right when several drifts share a missing parent.
    let mut work = new.clone();
    let mut ops = Vec::new();
    for drift in drifts {
        let Some(op) = restore_op(&work, desired, &drift.path, drift.git.as_ref()) else {
            continue;
        };
        // The op was built against `work` itself, so applying it cannot fail; if it ever did,
        // leaving it out keeps the patch consistent with what the API server will apply.
        if json_patch::patch(&mut work, std::slice::from_ref(&op)).is_ok() {
            ops.push(op);
        }
    }
    Patch(ops)
}

/// The one operation restoring `path` in `root` from `desired`, or `None` if it already holds.
fn restore_op(root: &Value, desired: &Value, path: &FieldPath, fallback: Option<&Value>) -> Option<PatchOperation> {
    let mut pointer = PointerBuf::root();
    let mut cur = root;
    let mut d_cur = desired;
    for seg in path.segments() {
        let d_next = match seg {
            PathSegment::Field(name) => d_cur.get(name.as_str()),
            PathSegment::Element(key) => d_cur.as_array().and_then(|l| key.position_in(l).and_then(|i| l.get(i))),
        };
        // A path always comes from `desired`; if the caller passed another one, fall back to
        // the recorded Git value at the leaf and give up on the missing parents.
        let Some(d_next) = d_next else {
            return fallback.and_then(|git| replace_if_present(root, path, git));
        };
        let next = match seg {
            PathSegment::Field(name) => cur
                .as_object()
                .and_then(|m| m.get_key_value(name.as_str()))
                .map(|(k, v)| (Token::new(k.as_str()), v)),
            PathSegment::Element(key) => cur
                .as_array()
                .and_then(|l| key.position_in(l).and_then(|i| l.get(i).map(|v| (Token::from(i), v)))),
        };
        match next {
            Some((token, v)) => {
                pointer.push_back(token);
                cur = v;
                d_cur = d_next;
            }
            None => return Some(add_missing(cur, pointer, seg, d_cur, d_next)),
        }
    }
    (cur != d_cur).then(|| replace(pointer, d_cur.clone()))
}

/// `cur` (at `pointer`) lacks `seg`: add Git's subtree, or replace `cur` with Git's value when
/// it is not even a container of the right kind.
fn add_missing(cur: &Value, pointer: PointerBuf, seg: &PathSegment, d_cur: &Value, d_next: &Value) -> PatchOperation {
    match (seg, cur) {
        (PathSegment::Field(name), Value::Object(_)) => {
            let mut path = pointer;
            path.push_back(Token::new(name.as_str()));
            PatchOperation::Add(AddOperation {
                path,
                value: d_next.clone(),
            })
        }
        // A removed element of a keyed list comes back at the end: order is not drift.
        (PathSegment::Element(_), Value::Array(_)) => {
            let mut path = pointer;
            path.push_back(Token::new("-"));
            PatchOperation::Add(AddOperation {
                path,
                value: d_next.clone(),
            })
        }
        _ => replace(pointer, d_cur.clone()),
    }
}

fn replace(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Replace(ReplaceOperation { path, value })
}

fn replace_if_present(root: &Value, path: &FieldPath, git: &Value) -> Option<PatchOperation> {
    let pointer = path.pointer_in(root)?;
    root.pointer(&pointer)?;
    let path = PointerBuf::parse(pointer).ok()?;
    Some(replace(path, git.clone()))
}
