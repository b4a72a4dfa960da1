//! JSON files: a stream of values (kubectl accepts several objects in one file) with the byte
//! range of each, and the positions of the elements of a top-level `items` array so that the
//! objects of a `List` get their own line.

use serde_json::Value;

/// A JSON value and where it lies in the text.
pub(super) struct Located {
    pub value: Value,
    /// Byte offset of the value's first character.
    pub start: usize,
    /// Byte offset just past the value.
    pub end: usize,
}

/// A JSON syntax error, positioned in the text.
pub(super) struct SyntaxError {
    pub line: u32,
    pub column: u64,
    /// The parser's message without its position suffix.
    pub message: String,
}

/// Parses every top-level value of `text`. Stops at the first syntax error: after one, the
/// parser cannot find where the next value starts.
pub(super) fn values(text: &str) -> (Vec<Located>, Option<SyntaxError>) {
    let mut out = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    loop {
        let start = skip_whitespace(text, stream.byte_offset());
        match stream.next() {
            None => return (out, None),
            Some(Ok(value)) => out.push(Located {
                value,
                start,
                end: stream.byte_offset(),
            }),
            Some(Err(err)) => {
                let suffix = format!(" at line {} column {}", err.line(), err.column());
                let full = err.to_string();
                let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
                let error = SyntaxError {
                    line: u32::try_from(err.line()).unwrap_or(u32::MAX).max(1),
                    column: u64::try_from(err.column()).unwrap_or(u64::MAX),
                    message,
                };
                return (out, Some(error));
            }
        }
    }
}

fn skip_whitespace(text: &str, from: usize) -> usize {
    let rest = text.get(from..).unwrap_or("");
    from + (rest.len() - rest.trim_start().len())
}

/// Byte offsets (relative to `object`) of the elements of the `items` array of the JSON
/// object `object`, which must be syntactically valid (it was parsed already). Returns an
/// empty list when there is no such array.
pub(super) fn item_offsets(object: &str) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut string_start = 0usize;
    let mut last_string: &str = "";
    let mut after_items_key = false;
    let mut in_items = false;
    let mut expect_element = false;
    for (i, b) in object.bytes().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                if depth == 1 {
                    last_string = object.get(string_start..i).unwrap_or("");
                }
            }
            continue;
        }
        if in_items && depth == 2 && expect_element && !b.is_ascii_whitespace() && b != b']' {
            offsets.push(i);
            expect_element = false;
        }
        match b {
            b'"' => {
                in_string = true;
                string_start = i + 1;
            }
            b':' if depth == 1 => after_items_key = last_string == "items",
            b',' if depth == 1 => after_items_key = false,
            b',' if in_items && depth == 2 => expect_element = true,
            b'{' | b'[' => {
                if b == b'[' && depth == 1 && after_items_key {
                    in_items = true;
                    expect_element = true;
                }
                depth += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if in_items && depth == 1 {
                    break;
                }
            }
            _ => {}
        }
    }
    offsets
}

/// Maps byte offsets to 1-based line numbers, for offsets visited in increasing order (as a
/// file is walked) so a whole file costs one pass.
pub(super) struct LineIndex<'a> {
    text: &'a str,
    offset: usize,
    line: u32,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        LineIndex {
            text,
            offset: 0,
            line: 1,
        }
    }

    /// Line of `offset`. An offset before the previous one restarts the count.
    pub fn line_at(&mut self, offset: usize) -> u32 {
        if offset < self.offset {
            self.offset = 0;
            self.line = 1;
        }
        let newlines = self
            .text
            .as_bytes()
            .get(self.offset..offset)
            .map_or(0, |skipped| skipped.iter().filter(|&&b| b == b'\n').count());
        self.line = self.line.saturating_add(u32::try_from(newlines).unwrap_or(u32::MAX));
        self.offset = offset;
        self.line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_of_values_with_ranges() {
        let text = "\n {\"a\": 1}\n\n[1, 2] \"s\"";
        let (values, error) = values(text);
        assert!(error.is_none());
        let ranges: Vec<_> = values.iter().map(|v| text.get(v.start..v.end).unwrap()).collect();
        assert_eq!(ranges, vec!["{\"a\": 1}", "[1, 2]", "\"s\""]);
    }

    #[test]
    fn syntax_error_position() {
        let (values, error) = values("{\"a\": 1}\n{\"b\":\n  }\n");
        assert_eq!(values.len(), 1);
        let error = error.unwrap();
        assert_eq!(error.line, 3);
        assert!(!error.message.contains("at line"), "{}", error.message);
    }

    #[test]
    fn items_offsets() {
        let text = r#"{"kind": "List", "x": {"items": [9]}, "s": "items", "items": [
  {"a": "]\"[,"},
  [1, {"b": 2}],
  3
], "after": [7]}"#;
        let starts: Vec<char> = item_offsets(text)
            .into_iter()
            .map(|o| text.get(o..).unwrap().chars().next().unwrap())
            .collect();
        assert_eq!(starts, vec!['{', '[', '3']);
    }

    #[test]
    fn no_items() {
        assert!(item_offsets(r#"{"items": 3, "other": [1]}"#).is_empty());
        assert!(item_offsets(r#"{"items": []}"#).is_empty());
    }

    #[test]
    fn line_index() {
        let mut index = LineIndex::new("a\nb\n\nc");
        assert_eq!(index.line_at(0), 1);
        assert_eq!(index.line_at(2), 2);
        assert_eq!(index.line_at(5), 4);
        assert_eq!(index.line_at(1), 1);
    }
}
