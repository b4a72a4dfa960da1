//! The drift walk: one pass over the desired object, looking up the new and old objects in
//! step. Allocates only the path stack and the drifts it finds.

use std::borrow::Borrow;

use serde_json::Value;

use super::FieldDrift;
use super::compare::{matches_desired, same};
use super::ignore::IgnorePath;
use super::path::FieldPath;
use super::schema::{KeyedLookup, METADATA_DECLARED, ROOT_EXCLUDED, Seg, keyed_list};

struct Walker<'a, 'i, P> {
    ignore: &'i [IgnorePath],
    /// Delegated pointers: drifts under one are tagged with its position.
    delegated: &'i [P],
    /// The delegated pointer the walk is under.
    current: Option<usize>,
    /// False on CREATE: there is no old object, so only `N != D` counts.
    has_old: bool,
    stack: Vec<Seg<'a>>,
    out: Vec<FieldDrift>,
}

/// See [`super::detect_delegated`].
pub(crate) fn detect<P: Borrow<IgnorePath>>(
    desired: &Value,
    old: Option<&Value>,
    new: &Value,
    ignore: &[IgnorePath],
    delegated: &[P],
) -> Vec<FieldDrift> {
    let mut w = Walker {
        ignore,
        delegated,
        current: None,
        has_old: old.is_some(),
        stack: Vec::with_capacity(16),
        out: Vec::new(),
    };
    if w.ignored() {
        return w.out;
    }
    w.mark();
    let Some(dm) = desired.as_object() else {
        return w.out;
    };
    for (k, dv) in dm {
        if ROOT_EXCLUDED.contains(&k.as_str()) {
            continue;
        }
        let nv = new.get(k);
        let ov = old.and_then(|o| o.get(k));
        w.stack.push(Seg::Field(k));
        if !w.ignored() {
            let saved = w.mark();
            if k == "metadata" {
                w.walk_metadata(dv, nv, ov);
            } else {
                w.walk(dv, nv, ov);
            }
            w.current = saved;
        }
        w.stack.pop();
    }
    w.out
}

fn child<'a>(v: Option<&'a Value>, k: &str) -> Option<&'a Value> {
    v.and_then(Value::as_object).and_then(|m| m.get(k))
}

impl<'a, P: Borrow<IgnorePath>> Walker<'a, '_, P> {
    /// Enter the current position: when it is the first delegated pointer on the way down,
    /// the subtree is tagged with it. Returns what to restore on the way up.
    fn mark(&mut self) -> Option<usize> {
        let saved = self.current;
        if saved.is_none() {
            let depth = self.stack.len();
            self.current = self.delegated.iter().position(|p| {
                let p = p.borrow();
                p.depth() == depth && p.matches(&self.stack)
            });
        }
        saved
    }

    fn ignored(&self) -> bool {
        let depth = self.stack.len();
        self.ignore
            .iter()
            .any(|rule| rule.depth() == depth && rule.matches(&self.stack))
    }

    fn walk_field(&mut self, k: &'a str, d: &'a Value, n: Option<&'a Value>, o: Option<&'a Value>) {
        self.stack.push(Seg::Field(k));
        if !self.ignored() {
            let saved = self.mark();
            self.walk(d, child(n, k), child(o, k));
            self.current = saved;
        }
        self.stack.pop();
    }

    /// Under the top-level `metadata`, only declared labels and annotations count.
    fn walk_metadata(&mut self, d: &'a Value, n: Option<&'a Value>, o: Option<&'a Value>) {
        let Some(dm) = d.as_object() else {
            return;
        };
        for (k, dv) in dm {
            if METADATA_DECLARED.contains(&k.as_str()) {
                self.walk_field(k, dv, n, o);
            }
        }
    }

    fn walk(&mut self, d: &'a Value, n: Option<&'a Value>, o: Option<&'a Value>) {
        match d {
            // YAML `key:` with no value declares nothing; the API server drops it.
            Value::Null => {}
            Value::Object(dm) if !dm.is_empty() => {
                for (k, dv) in dm {
                    self.walk_field(k, dv, n, o);
                }
            }
            Value::Array(da) => match keyed_list(&self.stack, da) {
                Some(list) => {
                    let mut nl = n.and_then(Value::as_array).map(|l| KeyedLookup::new(list, l));
                    let mut ol = o.and_then(Value::as_array).map(|l| KeyedLookup::new(list, l));
                    for (index, de) in da.iter().enumerate() {
                        let ne = nl.as_mut().and_then(|l| l.find(de, index));
                        let oe = ol.as_mut().and_then(|l| l.find(de, index));
                        self.stack.push(Seg::Elem { list, elem: de, index });
                        if !self.ignored() {
                            let saved = self.mark();
                            self.walk(de, ne, oe);
                            self.current = saved;
                        }
                        self.stack.pop();
                    }
                }
                None => self.leaf(d, n, o),
            },
            _ => self.leaf(d, n, o),
        }
    }

    fn leaf(&mut self, d: &'a Value, n: Option<&'a Value>, o: Option<&'a Value>) {
        if matches_desired(&mut self.stack, d, n, o) {
            return;
        }
        // The request did not move the field: pre-existing drift is the enforcer's job.
        if self.has_old && same(&mut self.stack, n, o) {
            return;
        }
        self.out.push(FieldDrift {
            path: FieldPath::from_stack(&self.stack),
            git: Some(d.clone()),
            attempted: n.filter(|v| !v.is_null()).cloned(),
            previous: o.filter(|v| !v.is_null()).cloned(),
            delegated: self.current,
        });
    }
}
