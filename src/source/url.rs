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

/// Where a GitSource `url` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// A repository on this machine (a path or a `file://` URL).
    Local(PathBuf),
    /// A repository on a Git server.
    Remote(RemoteUrl),
}

/// The network transport of a remote URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// `http://` (smart HTTP, libgit2's own client).
    Http,
    /// `https://`.
    Https,
    /// `ssh://` or scp-like `user@host:path`.
    Ssh,
    /// `git://` (unauthenticated git daemon).
    Git,
}

/// A remote URL taken apart enough to authenticate and to check an SSH host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteUrl {
    /// The URL handed to libgit2 (as given, trimmed; it holds no password).
    pub url: String,
    /// The URL for messages: any userinfo removed.
    pub display: String,
    /// The transport.
    pub transport: Transport,
    /// Host name or address, without brackets.
    pub host: String,
    /// Port, when the URL names one.
    pub port: Option<u16>,
    /// User from the URL (`git` in `git@host:path`).
    pub username: Option<String>,
}

impl RemoteUrl {
    /// The host as known_hosts names it: `host` on port 22, else `[host]:port`.
    pub fn known_hosts_name(&self) -> String {
        match self.port {
            None | Some(22) => self.host.to_ascii_lowercase(),
            Some(port) => format!("[{}]:{port}", self.host.to_ascii_lowercase()),
        }
    }
}

/// Classifies a GitSource `url`: a local repository, or a remote one with the parts the
/// fetcher needs. A password in the URL is refused (it would end up in status and logs; put
/// it in the secretRef), and so are transports libgit2 cannot fetch from.
pub(crate) fn classify(url: &str) -> Result<Location, SourceError> {
    match local_path(url) {
        Ok(path) => return Ok(Location::Local(path)),
        Err(SourceError::Unsupported { .. }) => {}
        Err(other) => return Err(other),
    }
    let trimmed = url.trim();
    if let Some((scheme, rest)) = trimmed.split_once("://") {
        let transport = match scheme.to_ascii_lowercase().as_str() {
            "http" => Transport::Http,
            "https" => Transport::Https,
            "ssh" | "ssh+git" | "git+ssh" => Transport::Ssh,
            "git" => Transport::Git,
            _ => {
                return Err(SourceError::InvalidUrl {
                    url: redact_userinfo(trimmed),
                    reason: format!(
                        "the {scheme}:// transport is not supported; use https://, http://, ssh://, git:// \
                         or user@host:path"
                    ),
                });
            }
        };
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let display = format!("{scheme}://{hostport}/{path}");
        let username = match userinfo {
            Some(userinfo) if userinfo.contains(':') => {
                return Err(SourceError::InvalidUrl {
                    url: display,
                    reason: "the URL contains a password; remove it from the URL and put the credentials in \
                             the GitSource secretRef (username/password or bearerToken)"
                        .to_owned(),
                });
            }
            Some(user) if !user.is_empty() => percent_decode(user),
            _ => None,
        };
        let (host, port) = split_host_port(hostport).ok_or_else(|| SourceError::InvalidUrl {
            url: display.clone(),
            reason: "the host or port is not valid".to_owned(),
        })?;
        if host.is_empty() {
            return Err(SourceError::InvalidUrl {
                url: display,
                reason: "the URL names no host".to_owned(),
            });
        }
        return Ok(Location::Remote(RemoteUrl {
            url: trimmed.to_owned(),
            display,
            transport,
            host,
            port,
            username,
        }));
    }
    // scp-like: [user@]host:path (local_path already decided it is not a path).
    let Some((before, path)) = trimmed.split_once(':') else {
        return Err(invalid(url, "not a URL or path"));
    };
    let (username, host) = match before.rsplit_once('@') {
        Some((user, host)) => (Some(user.to_owned()).filter(|u| !u.is_empty()), host),
        None => (None, before),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    if host.is_empty() || path.is_empty() {
        return Err(invalid(
            &redact_userinfo(trimmed),
            "an scp-like SSH URL is user@host:path/to/repo.git",
        ));
    }
    Ok(Location::Remote(RemoteUrl {
        url: trimmed.to_owned(),
        display: format!("{host}:{path}"),
        transport: Transport::Ssh,
        host,
        port: None,
        username,
    }))
}

/// `url` without any `user[:password]@` part, for messages.
pub(crate) fn redact_userinfo(url: &str) -> String {
    let trimmed = url.trim();
    if let Some((scheme, rest)) = trimmed.split_once("://") {
        let (authority, path) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        return match path {
            Some(path) => format!("{scheme}://{hostport}/{path}"),
            None => format!("{scheme}://{hostport}"),
        };
    }
    if let Some((before, path)) = trimmed.split_once(':')
        && !before.contains('/')
        && let Some((_, host)) = before.rsplit_once('@')
    {
        return format!("{host}:{path}");
    }
    trimmed.to_owned()
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
pub(super) fn split_host_port(hostport: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            other => Some(other.strip_prefix(':')?.parse().ok()?),
        };
        return Some((host.to_owned(), port));
    }
    match hostport.rsplit_once(':') {
        Some((host, "")) => Some((host.to_owned(), None)),
        Some((host, port)) => Some((host.to_owned(), Some(port.parse().ok()?))),
        None => Some((hostport.to_owned(), None)),
    }
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

pub(super) fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// RFC 3986 scheme: a letter, then letters, digits, `+`, `-`, `.`.
pub(super) fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits is kept literally, as browsers
/// and Git do.
pub(super) fn percent_decode(s: &str) -> Option<String> {
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
            assert!(err.to_string().contains("clone it and pass its path"), "{err}");
        }
    }

    #[test]
    fn remote_forms_are_classified() {
        let remote = |url: &str| match classify(url).unwrap() {
            Location::Remote(remote) => remote,
            Location::Local(path) => panic!("{url} is local: {}", path.display()),
        };
        let r = remote("https://git.example.com/org/repo.git");
        assert_eq!(
            (r.transport, r.host.as_str(), r.port, r.username.as_deref()),
            (Transport::Https, "git.example.com", None, None)
        );
        assert_eq!(r.display, "https://git.example.com/org/repo.git");
        let r = remote("ssh://git@127.0.0.1:2222/srv/repo.git");
        assert_eq!(
            (r.transport, r.host.as_str(), r.port, r.username.as_deref()),
            (Transport::Ssh, "127.0.0.1", Some(2222), Some("git"))
        );
        assert_eq!(r.display, "ssh://127.0.0.1:2222/srv/repo.git");
        assert_eq!(r.known_hosts_name(), "[127.0.0.1]:2222");
        let r = remote("git@github.com:org/repo.git");
        assert_eq!(
            (r.transport, r.host.as_str(), r.port, r.username.as_deref()),
            (Transport::Ssh, "github.com", None, Some("git"))
        );
        assert_eq!(r.display, "github.com:org/repo.git");
        assert_eq!(r.known_hosts_name(), "github.com");
        let r = remote("ssh://[::1]:22/repo");
        assert_eq!((r.host.as_str(), r.port), ("::1", Some(22)));
        assert_eq!(r.known_hosts_name(), "::1");
        let r = remote("git://127.0.0.1:9418/repo.git");
        assert_eq!((r.transport, r.port), (Transport::Git, Some(9418)));
        let r = remote("https://bot@git.example.com/repo");
        assert_eq!(r.username.as_deref(), Some("bot"));
        assert_eq!(r.display, "https://git.example.com/repo");
        assert!(matches!(classify("/srv/repo").unwrap(), Location::Local(_)));
        assert!(matches!(classify("file:///srv/repo").unwrap(), Location::Local(_)));
    }

    #[test]
    fn passwords_in_urls_are_refused_without_echoing_them() {
        let err = classify("https://bot:hunter2@git.example.com/repo").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, SourceError::InvalidUrl { .. }), "{text}");
        assert!(text.contains("secretRef") && !text.contains("hunter2"), "{text}");
        for url in ["ftp://host/repo", "https://host:notaport/repo", "https:///repo"] {
            assert!(matches!(classify(url), Err(SourceError::InvalidUrl { .. })), "{url}");
        }
        assert_eq!(redact_userinfo("https://a:b@h/x"), "https://h/x");
        assert_eq!(redact_userinfo("git@h:x"), "h:x");
        assert_eq!(redact_userinfo("/srv/x"), "/srv/x");
    }

    #[test]
    fn bad_file_urls() {
        for url in ["", "  ", "file://server/share/repo", "file:///tmp/%ff"] {
            let err = local_path(url).unwrap_err();
            assert!(matches!(err, SourceError::InvalidUrl { .. }), "{url}: {err}");
        }
    }
}
