//! Ignore rules: JSON pointers whose subtrees are not compared.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use super::DriftError;
use super::schema::{KeyValue, ListKeys, Seg};

/// A Guard ignore rule: an RFC 6901 JSON pointer into the desired object; the whole subtree
/// under it is not compared.
///
/// A token `*` matches any object field or any list element. An element of a keyed list
/// (`containers`, `env`, `ports`, ...) may also be addressed by its index in the desired
/// object, by the value of its (first) key field, or by its full key as displayed in
/// [`FieldPath`](super::FieldPath)s:
/// `/spec/template/spec/containers/web/image`, `/spec/template/spec/containers/0/image`,
/// `/spec/ports/containerPort=8080,protocol=TCP` (escape `/` as `~1` and `~` as `~0`).
///
/// An atomic list is a single leaf: a pointer must address the list itself, not a position
/// inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnorePath {
    raw: String,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    text: String,
    int: Option<i64>,
}

impl IgnorePath {
    /// Parse a JSON pointer (`""` ignores the whole object).
    pub fn parse(s: &str) -> Result<Self, DriftError> {
        let tokens = if s.is_empty() {
            Vec::new()
        } else {
            let rest = s
                .strip_prefix('/')
                .ok_or_else(|| DriftError::PointerStart { pointer: s.to_owned() })?;
            rest.split('/')
                .map(|raw| {
                    let text = unescape(raw).ok_or_else(|| DriftError::PointerEscape { pointer: s.to_owned() })?;
                    let int = text.parse().ok();
                    Ok(Token { text, int })
                })
                .collect::<Result<_, DriftError>>()?
        };
        Ok(IgnorePath {
            raw: s.to_owned(),
            tokens,
        })
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Number of tokens (the depth of the subtree root it ignores).
    pub(crate) fn depth(&self) -> usize {
        self.tokens.len()
    }

    /// True when this rule names exactly the walk position `stack`.
    pub(crate) fn matches(&self, stack: &[Seg<'_>]) -> bool {
        self.tokens.len() == stack.len() && self.tokens.iter().zip(stack).all(|(t, seg)| t.matches(seg))
    }
}

impl Token {
    fn matches(&self, seg: &Seg<'_>) -> bool {
        if self.text == "*" {
            return true;
        }
        match *seg {
            Seg::Field(name) => self.text == name,
            Seg::Elem { list, elem, index } => {
                self.int.is_some_and(|i| usize::try_from(i).is_ok_and(|i| i == index))
                    || self.matches_primary_key(list, elem)
                    || self.matches_full_key(list, elem)
            }
            Seg::Item(index) => self.int.is_some_and(|i| usize::try_from(i).is_ok_and(|i| i == index)),
        }
    }

    fn matches_primary_key(&self, list: &ListKeys, elem: &Value) -> bool {
        list.keys
            .first()
            .and_then(|f| ListKeys::key_value(f, elem))
            .is_some_and(|kv| key_text_eq(kv, &self.text, self.int))
    }

    fn matches_full_key(&self, list: &ListKeys, elem: &Value) -> bool {
        let mut parts = self.text.split(',');
        let all_fields = list.keys.iter().all(|f| {
            let Some((name, text)) = parts.next().and_then(|p| p.split_once('=')) else {
                return false;
            };
            name == f.name && ListKeys::key_value(f, elem).is_some_and(|kv| key_text_eq(kv, text, text.parse().ok()))
        });
        all_fields && parts.next().is_none()
    }
}

/// Does a key value equal the text written in a pointer token?
fn key_text_eq(kv: KeyValue<'_>, text: &str, int: Option<i64>) -> bool {
    let v = match kv {
        KeyValue::Present(v) => v,
        KeyValue::Default(s) => return s == text,
    };
    match v {
        Value::String(s) => s == text,
        Value::Number(n) => match (n.as_i64(), int) {
            (Some(a), Some(b)) => a == b,
            _ => text.parse::<f64>().ok() == n.as_f64(),
        },
        Value::Bool(b) => text == if *b { "true" } else { "false" },
        _ => false,
    }
}

fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

impl FromStr for IgnorePath {
    type Err = DriftError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for IgnorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc6901_escapes() {
        let p = IgnorePath::parse("/metadata/annotations/example.com~1a~0b").ok();
        assert_eq!(
            p.map(|p| p.tokens.into_iter().map(|t| t.text).collect::<Vec<_>>()),
            Some(vec![
                "metadata".to_owned(),
                "annotations".to_owned(),
                "example.com/a~b".to_owned()
            ])
        );
        assert_eq!(IgnorePath::parse("").map(|p| p.depth()), Ok(0));
    }

    #[test]
    fn rejects_invalid_pointers() {
        assert!(matches!(
            IgnorePath::parse("spec/replicas"),
            Err(DriftError::PointerStart { .. })
        ));
        assert!(matches!(
            IgnorePath::parse("/a~2b"),
            Err(DriftError::PointerEscape { .. })
        ));
        assert!(matches!(
            IgnorePath::parse("/a~"),
            Err(DriftError::PointerEscape { .. })
        ));
    }
}
