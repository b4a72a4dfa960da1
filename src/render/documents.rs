//! Splitting a YAML stream into its documents, remembering where each sits in the file.
//!
//! Each document is parsed on its own so that one broken document does not hide the errors
//! of the others, and so that parser positions (relative to the document) map back to file
//! lines. YAML forbids `---` and `...` at the start of a line inside any content, so a
//! line-based split finds exactly the parser's document boundaries.

/// One document of a YAML stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Document<'a> {
    /// The document's text, including its directives and `---`/`...` markers (the parser
    /// accepts them), so parser line `n` is file line `first_line + n - 1`.
    pub text: &'a str,
    /// File line (1-based) of the first line of `text`.
    pub first_line: u32,
    /// File line where the content starts: the first line that is not blank, a comment, a
    /// directive or a bare `---`. `None` for an empty or comment-only document.
    pub content_line: Option<u32>,
}

/// What is known about the document being collected.
struct Open {
    start: usize,
    first_line: u32,
    has_marker: bool,
    content_line: Option<u32>,
}

impl Open {
    fn new(start: usize, first_line: u32) -> Self {
        Open {
            start,
            first_line,
            has_marker: false,
            content_line: None,
        }
    }

    fn close<'a>(&self, text: &'a str, end: usize, out: &mut Vec<Document<'a>>) {
        if let Some(chunk) = text.get(self.start..end)
            && !chunk.is_empty()
        {
            out.push(Document {
                text: chunk,
                first_line: self.first_line,
                content_line: self.content_line,
            });
        }
    }
}

/// Splits `text` into documents. Empty and comment-only documents are returned too (with
/// `content_line: None`) so callers decide; concatenating all `text`s gives back the input.
pub(super) fn split(text: &str) -> Vec<Document<'_>> {
    let mut out = Vec::new();
    let mut open = Open::new(0, 1);
    let mut offset = 0usize;
    let mut line_no = 0u32;
    for raw in text.split_inclusive('\n') {
        line_no = line_no.saturating_add(1);
        let line_start = offset;
        offset += raw.len();
        let line = raw.trim_end_matches(['\n', '\r']);

        if let Some(rest) = marker_rest(line, "---") {
            // Directives and comments before the first `---` belong to its document.
            if open.has_marker || open.content_line.is_some() {
                open.close(text, line_start, &mut out);
                open = Open::new(line_start, line_no);
            }
            open.has_marker = true;
            if !is_blank_or_comment(rest) {
                open.content_line = Some(line_no);
            }
        } else if marker_rest(line, "...").is_some() {
            open.close(text, offset, &mut out);
            open = Open::new(offset, line_no.saturating_add(1));
        } else if open.content_line.is_none() && !is_blank_or_comment(line) {
            // `%` lines before the `---` are directives; after it, content.
            let directive = line.starts_with('%') && !open.has_marker;
            if !directive {
                open.content_line = Some(line_no);
            }
        }
    }
    open.close(text, text.len(), &mut out);
    out
}

/// If `line` is the marker (`---` or `...` alone or followed by white space), what follows it.
fn marker_rest<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(marker)?;
    if rest.is_empty() || rest.starts_with([' ', '\t']) {
        Some(rest)
    } else {
        None
    }
}

fn is_blank_or_comment(s: &str) -> bool {
    let trimmed = s.trim_start();
    trimmed.is_empty() || trimmed.starts_with('#')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(text: &str) -> Vec<(u32, Option<u32>)> {
        let docs = split(text);
        let joined: String = docs.iter().map(|d| d.text).collect();
        assert_eq!(joined, text, "documents must cover the input exactly");
        docs.iter().map(|d| (d.first_line, d.content_line)).collect()
    }

    #[test]
    fn single_document_with_leading_comments() {
        assert_eq!(summary("# header\n\na: 1\nb: 2\n"), vec![(1, Some(3))]);
    }

    #[test]
    fn separators_and_empty_documents() {
        let text = "---\na: 1\n---\n# only a comment\n---\n\n---\nb: 2\n";
        assert_eq!(summary(text), vec![(1, Some(2)), (3, None), (5, None), (7, Some(8))]);
    }

    #[test]
    fn leading_separator_after_comments_is_one_document() {
        assert_eq!(summary("# c\n---\n# c\nkind: A\n"), vec![(1, Some(4))]);
    }

    #[test]
    fn content_on_the_marker_line() {
        assert_eq!(
            summary("a: 1\n--- {b: 2}\n--- # note\nc: 3\n"),
            vec![(1, Some(1)), (2, Some(2)), (3, Some(4))]
        );
    }

    #[test]
    fn directives_stay_with_their_document() {
        assert_eq!(
            summary("a: 1\n...\n%YAML 1.2\n---\nb: 2\n"),
            vec![(1, Some(1)), (3, Some(5))]
        );
    }

    #[test]
    fn markers_need_a_boundary() {
        // `----` and `---x` are content, not separators; indented `---` is block content.
        assert_eq!(summary("a: |\n  ---\n  x\nb: ----\n---x: 1\n"), vec![(1, Some(1))]);
    }

    #[test]
    fn crlf_and_missing_final_newline() {
        assert_eq!(summary("a: 1\r\n---\r\nb: 2"), vec![(1, Some(1)), (2, Some(3))]);
    }

    #[test]
    fn empty_input() {
        assert_eq!(summary(""), vec![]);
    }
}
