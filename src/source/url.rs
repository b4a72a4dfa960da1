//! GitSource URL classification: which URLs name a local repository, and where.

use std::path::PathBuf;

use super::SourceError;

/// Maps a GitSource `url` to the local path it names, or says why it cannot.
///
/// Follows Git's own rules so a URL means the same here as for `git clone`: `scheme://` is a
/// transport, `host:path` with no slash before the colon is scp-like SSH, anything else is a
/// path.
pub(crate) fn local_path(url: &str) -> Result<PathBuf, SourceError> {
    let trimmed = url.trim();
    if trimmed.is_empty() {
        return Err(invalid(url, "the URL is empty"));
    }
    if let Some(rest) = strip_prefix_ignore_case(trimmed, "file://") {
        return file_url_path(url, rest);
    }
    if let Some((scheme, _)) = trimmed.split_once("://")
        && is_scheme(scheme)
    {
        return Err(SourceError::Unsupported { url: url.to_owned() });
    }
    if let Some((before, _)) = trimmed.split_once(':')
        && !before.is_empty()
        && !before.contains('/')
    {
        return Err(SourceError::Unsupported { url: url.to_owned() });
    }
    Ok(PathBuf::from(trimmed))
}

fn file_url_path(url: &str, rest: &str) -> Result<PathBuf, SourceError> {
    // `file://localhost/x` is the same as `file:///x`; any other host cannot be local.
    let path = if rest.starts_with('/') {
        rest
    } else if strip_prefix_ignore_case(rest, "localhost/").is_some() {
        // Drop the host, keep the slash that starts the path.
        rest.get("localhost".len()..).unwrap_or(rest)
    } else {
        return Err(invalid(
            url,
            "a file:// URL must name an absolute local path, e.g. file:///srv/git/repo",
        ));
    };
    let decoded = percent_decode(path).ok_or_else(|| invalid(url, "percent-encoded bytes do not form UTF-8"))?;
    Ok(PathBuf::from(decoded))
}

fn invalid(url: &str, reason: &str) -> SourceError {
    SourceError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// RFC 3986 scheme: a letter, then letters, digits, `+`, `-`, `.`.
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits is kept literally, as browsers
/// and Git do.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = if b == b'%' {
            match (
                bytes.get(i + 1).and_then(|h| hex_value(*h)),
                bytes.get(i + 2).and_then(|l| hex_value(*l)),
            ) {
                (Some(high), Some(low)) => Some(high * 16 + low),
                _ => None,
            }
        } else {
            None
        };
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_forms() {
        for (url, want) in [
            ("/srv/git/repo", "/srv/git/repo"),
            ("relative/repo", "relative/repo"),
            ("./repo", "./repo"),
            ("file:///srv/git/repo", "/srv/git/repo"),
            ("FILE:///srv/git/repo", "/srv/git/repo"),
            ("file://localhost/srv/repo", "/srv/repo"),
            ("file:///tmp/my%20repo", "/tmp/my repo"),
            ("file:///tmp/100%", "/tmp/100%"),
            ("file:///tmp/%e2%9c%93", "/tmp/\u{2713}"),
            ("/tmp/a:b", "/tmp/a:b"),
        ] {
            assert_eq!(local_path(url).unwrap(), PathBuf::from(want), "url {url}");
        }
    }

    #[test]
    fn remote_forms_are_unsupported() {
        for url in [
            "https://github.com/org/repo.git",
            "http://example.com/repo",
            "ssh://git@github.com/org/repo.git",
            "git://example.com/repo",
            "git@github.com:org/repo.git",
            "github.com:org/repo.git",
        ] {
            let err = local_path(url).unwrap_err();
            assert!(matches!(err, SourceError::Unsupported { .. }), "{url}: {err}");
            assert!(err.to_string().contains("later release"), "{err}");
        }
    }

    #[test]
    fn bad_file_urls() {
        for url in ["", "  ", "file://server/share/repo", "file:///tmp/%ff"] {
            let err = local_path(url).unwrap_err();
            assert!(matches!(err, SourceError::InvalidUrl { .. }), "{url}: {err}");
        }
    }
}
