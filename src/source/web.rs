//! Links to Git: a GitSource's web URL template (`spec.webUrl`), or one derived from its `url`
//! for the Git hosts whose page layout is known, turned into a link to one line of one file at
//! the exact commit. Pure: no I/O.
//!
//! A template is validated and compiled once per configuration ([`LinkTemplate::for_source`]),
//! bound to a revision once per desired set ([`LinkTemplate::at`]); a denial then only writes
//! the file and line into the compiled parts ([`Links::link`]).
//!
//! Never a link for a host whose layout is not known, and never credentials in a link: the
//! derived link is built from the host, port and repository path alone, and a template with
//! user information is refused.

use std::fmt::Write;

use super::url::{local_path, percent_decode, redact_userinfo, split_host_port, strip_prefix_ignore_case};

/// The placeholders a template may use.
pub const PLACEHOLDERS: &str = "{repo}, {revision}, {path}, {line}";

/// Why a `webUrl` template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebUrlError {
    /// The template is malformed; the message says how (it never repeats credentials).
    #[error("webUrl {template:?}: {reason}")]
    Invalid {
        /// The template, without any user information.
        template: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Part {
    Text(String),
    Repo,
    Revision,
    Path,
    Line,
}

/// A validated web URL template with `{repo}` filled in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LinkTemplate {
    /// Up to the fragment.
    main: Vec<Part>,
    /// From `#` on; left out when it holds `{line}` and the line is unknown.
    fragment: Vec<Part>,
}

/// A template bound to one commit: what remains is the file and the line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Links {
    main: Vec<Part>,
    fragment: Vec<Part>,
    fragment_needs_line: bool,
    text_len: usize,
}

impl LinkTemplate {
    /// [`LinkTemplate::for_source`] for a cluster's GitSource `source`: a template the CRD let
    /// through but that cannot be used (`{repo}` with a local path, say) costs the links only,
    /// never the enforcement; it is logged.
    pub fn for_source_or_none(source: &str, url: &str, web_url: Option<&str>) -> Option<Self> {
        Self::for_source(url, web_url).unwrap_or_else(|error| {
            tracing::warn!(gitsource = %source, %error, "spec.webUrl cannot be used; denials carry no links");
            None
        })
    }

    /// The link template of a GitSource: `web_url` when set (validated; an empty string turns
    /// links off), else one derived from `url` ([`derive`]); `None` when there is none.
    pub fn for_source(url: &str, web_url: Option<&str>) -> Result<Option<Self>, WebUrlError> {
        match web_url {
            None => Ok(derive(url)),
            Some(template) if template.trim().is_empty() => Ok(None),
            Some(template) => {
                let repo = remote(url).and_then(|r| r.repo_path());
                parse(template, repo.as_deref(), url).map(Some)
            }
        }
    }

    /// Bind the template to `commit` (the full commit id).
    pub fn at(&self, commit: &str) -> Links {
        let bind = |parts: &[Part]| -> Vec<Part> {
            let mut out: Vec<Part> = Vec::with_capacity(parts.len());
            for part in parts {
                let part = match part {
                    Part::Revision => Part::Text(encode_segment(commit)),
                    other => other.clone(),
                };
                push(&mut out, part);
            }
            out
        };
        let (main, fragment) = (bind(&self.main), bind(&self.fragment));
        let text_len = main
            .iter()
            .chain(&fragment)
            .map(|p| match p {
                Part::Text(text) => text.len(),
                _ => 0,
            })
            .sum();
        Links {
            fragment_needs_line: fragment.contains(&Part::Line),
            main,
            fragment,
            text_len,
        }
    }
}

impl Links {
    /// The link to `line` (1-based; 0: unknown, then the link names the file alone) of `file`
    /// (repository-relative, `/`-separated), each path segment percent-encoded.
    pub fn link(&self, file: &str, line: u32) -> String {
        let mut out = String::with_capacity(self.text_len + file.len() + 16);
        self.write(&mut out, &self.main, file, line);
        if line > 0 || !self.fragment_needs_line {
            self.write(&mut out, &self.fragment, file, line);
        }
        out
    }

    fn write(&self, out: &mut String, parts: &[Part], file: &str, line: u32) {
        for part in parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Path => {
                    let mut first = true;
                    for segment in file.split('/').filter(|s| !s.is_empty()) {
                        if !first {
                            out.push('/');
                        }
                        first = false;
                        encode_into(out, segment);
                    }
                }
                // The fragment is left out above; elsewhere an unknown line is the first.
                Part::Line => {
                    let _ = write!(out, "{}", line.max(1));
                }
                Part::Repo | Part::Revision => {}
            }
        }
    }
}

fn push(parts: &mut Vec<Part>, part: Part) {
    if let (Some(Part::Text(last)), Part::Text(text)) = (parts.last_mut(), &part) {
        last.push_str(text);
        return;
    }
    if part != Part::Text(String::new()) {
        parts.push(part);
    }
}

/// Parse and validate `template`; `repo` fills `{repo}` (already percent-encoded).
fn parse(template: &str, repo: Option<&str>, url: &str) -> Result<LinkTemplate, WebUrlError> {
    let invalid = |reason: &str| WebUrlError::Invalid {
        template: redact_userinfo(template),
        reason: reason.to_owned(),
    };
    let text = template.trim();
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "contains whitespace or control characters; percent-encode them",
        ));
    }
    let rest = strip_prefix_ignore_case(text, "https://")
        .or_else(|| strip_prefix_ignore_case(text, "http://"))
        .ok_or_else(|| invalid("must start with https:// or http://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(invalid(
            "contains user information (credentials); everyone who is denied sees the link, so remove it",
        ));
    }
    if authority.contains(['{', '}']) {
        return Err(invalid("the host cannot hold placeholders"));
    }
    if split_host_port(authority).is_none_or(|(host, _)| host.is_empty()) {
        return Err(invalid("names no valid host[:port]"));
    }
    let (main, fragment) = match text.find('#') {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let mut main = placeholders(main).map_err(|reason| invalid(&reason))?;
    let mut fragment = placeholders(fragment).map_err(|reason| invalid(&reason))?;
    let all = || main.iter().chain(fragment.iter());
    if !all().any(|p| *p == Part::Revision) || !all().any(|p| *p == Part::Path) {
        return Err(invalid(
            "needs {revision} and {path}: a link points at a file at the exact commit",
        ));
    }
    if all().any(|p| *p == Part::Repo) {
        let Some(repo) = repo else {
            return Err(invalid(&format!(
                "uses {{repo}}, but the GitSource url {:?} names no repository on a Git host; write the repository's \
                 path into webUrl instead",
                redact_userinfo(url)
            )));
        };
        let fill = |parts: Vec<Part>| {
            let mut out = Vec::with_capacity(parts.len());
            for part in parts {
                push(
                    &mut out,
                    match part {
                        Part::Repo => Part::Text(repo.to_owned()),
                        other => other,
                    },
                );
            }
            out
        };
        main = fill(main);
        fragment = fill(fragment);
    }
    Ok(LinkTemplate { main, fragment })
}

/// Split `text` into literal text and placeholders.
fn placeholders(text: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find(['{', '}']) {
        let (before, from) = rest.split_at(open);
        if from.starts_with('}') {
            return Err("has a `}` without `{`".to_owned());
        }
        let close = from.find('}').ok_or_else(|| "has a `{` without `}`".to_owned())?;
        let name = from.get(..=close).unwrap_or_default();
        let part = match name {
            "{repo}" => Part::Repo,
            "{revision}" => Part::Revision,
            "{path}" => Part::Path,
            "{line}" => Part::Line,
            other => return Err(format!("unknown placeholder {other}; use {PLACEHOLDERS}")),
        };
        push(&mut parts, Part::Text(before.to_owned()));
        push(&mut parts, part);
        rest = from.get(close + 1..).unwrap_or_default();
    }
    push(&mut parts, Part::Text(rest.to_owned()));
    Ok(parts)
}

/// The Git hosts whose page layout is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forge {
    GitHub,
    GitLab,
    Bitbucket,
    Gitea,
}

/// Which forge serves `host` (lowercase), and the host its web pages are on. Known hosts by
/// name (github.com, gitlab.com, bitbucket.org, codeberg.org and their SSH aliases); a
/// self-hosted one when its name contains exactly one of `github` (GitHub Enterprise),
/// `gitlab`, `gitea` or `forgejo` (the last two: Gitea's layout). Anything else: unknown.
fn forge(host: &str) -> Option<(Forge, Option<&'static str>)> {
    let known = match host {
        "github.com" | "www.github.com" | "ssh.github.com" => Some((Forge::GitHub, "github.com")),
        "gitlab.com" | "www.gitlab.com" | "altssh.gitlab.com" => Some((Forge::GitLab, "gitlab.com")),
        "bitbucket.org" | "www.bitbucket.org" | "altssh.bitbucket.org" => Some((Forge::Bitbucket, "bitbucket.org")),
        "codeberg.org" => Some((Forge::Gitea, "codeberg.org")),
        _ => None,
    };
    if let Some((forge, web_host)) = known {
        return Some((forge, Some(web_host)));
    }
    let mut found = [
        ("github", Forge::GitHub),
        ("gitlab", Forge::GitLab),
        ("gitea", Forge::Gitea),
        ("forgejo", Forge::Gitea),
    ]
    .into_iter()
    .filter(|(word, _)| host.contains(word))
    .map(|(_, forge)| forge);
    let first = found.next()?;
    // Two names (gitlab-mirror.github.example): which layout is a guess, so no link.
    found.all(|other| other == first).then_some((first, None))
}

/// A remote URL taken apart for links.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Remote {
    /// The scheme of the web pages (https for SSH), None for git://.
    web_scheme: Option<&'static str>,
    /// Lowercase host name.
    host: String,
    /// The port of the web pages (an SSH port says nothing about them).
    web_port: Option<u16>,
    /// Decoded path segments, without `.git`.
    repo: Vec<String>,
}

impl Remote {
    /// The repository path as it appears in the host's page URLs, percent-encoded.
    fn repo_path(&self) -> Option<String> {
        (!self.repo.is_empty()).then(|| {
            let mut out = String::new();
            for (i, segment) in self.repo.iter().enumerate() {
                if i > 0 {
                    out.push('/');
                }
                encode_into(&mut out, segment);
            }
            out
        })
    }
}

/// `url` taken apart, without its user information; None for local repositories and what is
/// not a URL.
fn remote(url: &str) -> Option<Remote> {
    if local_path(url).is_ok() {
        return None;
    }
    let trimmed = url.trim();
    let (web_scheme, authority, path, ssh) = match trimmed.split_once("://") {
        Some((scheme, rest)) => {
            let (web_scheme, ssh) = match scheme.to_ascii_lowercase().as_str() {
                "https" => (Some("https"), false),
                "http" => (Some("http"), false),
                "ssh" | "ssh+git" | "git+ssh" => (Some("https"), true),
                "git" => (None, true),
                _ => return None,
            };
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            (web_scheme, authority, path, ssh)
        }
        None => {
            let (authority, path) = trimmed.split_once(':')?;
            (Some("https"), authority, path, true)
        }
    };
    if path.contains(['?', '#']) {
        return None;
    }
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let (host, port) = if ssh && !trimmed.contains("://") {
        (hostport.trim_start_matches('[').trim_end_matches(']').to_owned(), None)
    } else {
        split_host_port(hostport)?
    };
    let host = host.to_ascii_lowercase();
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
    {
        return None;
    }
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path).trim_end_matches('/');
    let repo = path
        .split('/')
        .map(|segment| {
            percent_decode(segment)
                .filter(|s| !s.is_empty() && s != "." && s != ".." && !s.starts_with('~') && !s.contains(['/', '\\']))
        })
        .collect::<Option<Vec<String>>>()?;
    Some(Remote {
        web_scheme,
        host,
        web_port: if ssh { None } else { port },
        repo,
    })
}

/// The link template for `url` on a known Git host (see [`forge`]): `https://` and
/// `http://`, `ssh://[user@]host[:port]/path` and scp-like `[user@]host:path`. Local paths,
/// `file://`, `git://` and unknown hosts have none. User information never gets into it.
pub fn derive(url: &str) -> Option<LinkTemplate> {
    let remote = remote(url)?;
    let scheme = remote.web_scheme?;
    let (forge, web_host) = forge(&remote.host)?;
    let segments = remote.repo.len();
    let fits = match forge {
        Forge::GitLab => segments >= 2,
        Forge::GitHub | Forge::Bitbucket | Forge::Gitea => segments == 2,
    };
    if !fits {
        return None;
    }
    let base = match (web_host, remote.web_port) {
        (Some(host), _) => format!("https://{host}"),
        (None, Some(port)) => format!("{scheme}://{}:{port}", remote.host),
        (None, None) => format!("{scheme}://{}", remote.host),
    };
    let layout = match forge {
        Forge::GitHub => "/{repo}/blob/{revision}/{path}#L{line}",
        Forge::GitLab => "/{repo}/-/blob/{revision}/{path}#L{line}",
        Forge::Bitbucket => "/{repo}/src/{revision}/{path}#lines-{line}",
        Forge::Gitea => "/{repo}/src/commit/{revision}/{path}#L{line}",
    };
    parse(&format!("{base}{layout}"), remote.repo_path().as_deref(), url).ok()
}

/// `segment` percent-encoded: everything but RFC 3986's unreserved characters.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    encode_into(&mut out, segment);
    out
}

fn encode_into(out: &mut String, segment: &str) {
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    fn link(url: &str, web_url: Option<&str>, file: &str, line: u32) -> Option<String> {
        LinkTemplate::for_source(url, web_url)
            .unwrap()
            .map(|t| t.at(COMMIT).link(file, line))
    }

    #[test]
    fn derived_links() {
        let c = COMMIT;
        for (url, want) in [
            (
                "https://github.com/acme/apps.git",
                format!("https://github.com/acme/apps/blob/{c}/deploy/web.yaml#L12"),
            ),
            (
                "https://github.com/acme/apps",
                format!("https://github.com/acme/apps/blob/{c}/deploy/web.yaml#L12"),
            ),
            (
                "git@github.com:acme/apps.git",
                format!("https://github.com/acme/apps/blob/{c}/deploy/web.yaml#L12"),
            ),
            (
                "ssh://git@github.com/acme/apps.git",
                format!("https://github.com/acme/apps/blob/{c}/deploy/web.yaml#L12"),
            ),
            (
                "ssh://git@ssh.github.com:443/acme/apps.git",
                format!("https://github.com/acme/apps/blob/{c}/deploy/web.yaml#L12"),
            ),
            (
                "https://GitHub.com/acme/apps.git/",
                format!("https://github.com/acme/apps/blob/{c}/deploy/web.yaml#L12"),
            ),
            (
                "https://gitlab.com/acme/platform/apps.git",
                format!("https://gitlab.com/acme/platform/apps/-/blob/{c}/deploy/web.yaml#L12"),
            ),
            (
                "git@gitlab.com:acme/apps.git",
                format!("https://gitlab.com/acme/apps/-/blob/{c}/deploy/web.yaml#L12"),
            ),
            (
                "https://gitlab.example.com:8443/a/b/c/apps.git",
                format!("https://gitlab.example.com:8443/a/b/c/apps/-/blob/{c}/deploy/web.yaml#L12"),
            ),
            (
                "ssh://git@gitlab.example.com:2222/a/apps.git",
                format!("https://gitlab.example.com/a/apps/-/blob/{c}/deploy/web.yaml#L12"),
            ),
            (
                "http://gitlab.internal/a/apps",
                format!("http://gitlab.internal/a/apps/-/blob/{c}/deploy/web.yaml#L12"),
            ),
            (
                "https://bitbucket.org/acme/apps.git",
                format!("https://bitbucket.org/acme/apps/src/{c}/deploy/web.yaml#lines-12"),
            ),
            (
                "git@bitbucket.org:acme/apps.git",
                format!("https://bitbucket.org/acme/apps/src/{c}/deploy/web.yaml#lines-12"),
            ),
            (
                "https://codeberg.org/acme/apps.git",
                format!("https://codeberg.org/acme/apps/src/commit/{c}/deploy/web.yaml#L12"),
            ),
            (
                "ssh://git@gitea.example.com:2222/acme/apps.git",
                format!("https://gitea.example.com/acme/apps/src/commit/{c}/deploy/web.yaml#L12"),
            ),
            (
                "git@forgejo.example.org:acme/apps.git",
                format!("https://forgejo.example.org/acme/apps/src/commit/{c}/deploy/web.yaml#L12"),
            ),
            (
                "https://github.example.com/acme/apps.git",
                format!("https://github.example.com/acme/apps/blob/{c}/deploy/web.yaml#L12"),
            ),
        ] {
            assert_eq!(
                link(url, None, "deploy/web.yaml", 12).as_deref(),
                Some(want.as_str()),
                "{url}"
            );
        }
    }

    #[test]
    fn no_link_for_what_cannot_be_derived() {
        for url in [
            "/srv/git/apps",
            "relative/apps",
            "file:///srv/git/apps.git",
            "git://github.com/acme/apps.git",
            "https://git.example.com/acme/apps.git",
            "https://bitbucket.example.com/scm/acme/apps.git",
            "https://192.168.1.10/acme/apps.git",
            "https://github.com/acme",
            "https://github.com/acme/apps/extra",
            "https://bitbucket.org/acme/team/apps",
            "https://gitlab.com/apps",
            "https://github.com/acme/apps?token=secret",
            "https://gitlab-mirror.github.example/acme/apps",
            "https://github.com/acme/../apps",
            "ftp://github.com/acme/apps",
            "",
        ] {
            assert_eq!(link(url, None, "deploy/web.yaml", 3), None, "{url:?}");
        }
    }

    #[test]
    fn credentials_never_reach_a_link() {
        for url in [
            "https://bot:ghp_S3CRETtoken@github.com/acme/apps.git",
            "https://oauth2:glpat-S3CRETtoken@gitlab.example.com/acme/apps.git",
            "https://x-token-auth:S3CRETtoken@bitbucket.org/acme/apps.git",
            "ssh://deploy:S3CRETtoken@gitea.example.com:2222/acme/apps.git",
            "S3CRETtoken@github.com:acme/apps.git",
            "https://S3CRETtoken@codeberg.org/acme/apps",
        ] {
            let made = link(url, None, "web.yaml", 1).unwrap_or_else(|| panic!("{url}: no link"));
            assert!(!made.contains("S3CRET") && !made.contains('@'), "{url} -> {made}");
        }
        // A template carrying credentials is refused, and the error does not repeat them.
        let err = LinkTemplate::for_source(
            "/srv/apps",
            Some("https://bot:S3CRET@git.example.com/apps/{revision}/{path}#L{line}"),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("credentials") && !text.contains("S3CRET"), "{text}");
        // {repo} from a URL with credentials: the repository path only.
        let made = link(
            "https://bot:S3CRET@git.example.com/acme/apps.git",
            Some("https://web.example.com/{repo}/{revision}/{path}"),
            "a.yaml",
            1,
        )
        .unwrap();
        assert_eq!(made, format!("https://web.example.com/acme/apps/{COMMIT}/a.yaml"));
    }

    #[test]
    fn paths_are_percent_encoded_per_segment() {
        let url = "https://github.com/acme/apps.git";
        let c = COMMIT;
        for (file, want) in [
            (
                "apps/my web/deploy #1.yaml",
                format!("https://github.com/acme/apps/blob/{c}/apps/my%20web/deploy%20%231.yaml#L4"),
            ),
            (
                "apps/ü?x=1&y.yaml",
                format!("https://github.com/acme/apps/blob/{c}/apps/%C3%BC%3Fx%3D1%26y.yaml#L4"),
            ),
            (
                "/apps//web.yaml",
                format!("https://github.com/acme/apps/blob/{c}/apps/web.yaml#L4"),
            ),
        ] {
            assert_eq!(link(url, None, file, 4).as_deref(), Some(want.as_str()), "{file}");
        }
        // The repository path: decoded from the URL, encoded once.
        assert_eq!(
            link("https://gitlab.com/acme/my%20apps.git", None, "a.yaml", 2).as_deref(),
            Some(format!("https://gitlab.com/acme/my%20apps/-/blob/{c}/a.yaml#L2").as_str())
        );
    }

    #[test]
    fn templates() {
        let c = COMMIT;
        let cases: [(&str, Option<&str>, u32, &str); 6] = [
            (
                "/srv/apps",
                Some("https://git.example.com/team/apps/blob/{revision}/{path}#L{line}"),
                7,
                "https://git.example.com/team/apps/blob/{c}/deploy/web.yaml#L7",
            ),
            // Unknown line (a generated manifest): the fragment holding it goes.
            (
                "/srv/apps",
                Some("https://git.example.com/team/apps/blob/{revision}/{path}#L{line}"),
                0,
                "https://git.example.com/team/apps/blob/{c}/deploy/web.yaml",
            ),
            (
                "https://git.example.com/scm/team/apps.git",
                Some("https://git.example.com/projects/TEAM/repos/apps/browse/{path}?at={revision}#{line}"),
                9,
                "https://git.example.com/projects/TEAM/repos/apps/browse/deploy/web.yaml?at={c}#9",
            ),
            // {line} outside the fragment: an unknown line is the first.
            (
                "https://dev.azure.com/org/proj/_git/apps",
                Some("https://dev.azure.com/org/proj/_git/apps?path=/{path}&version=GC{revision}&line={line}"),
                0,
                "https://dev.azure.com/org/proj/_git/apps?path=/deploy/web.yaml&version=GC{c}&line=1",
            ),
            // A template wins over the derived link.
            (
                "https://github.com/acme/apps.git",
                Some("https://mirror.example.com/{repo}/tree/{revision}/{path}"),
                3,
                "https://mirror.example.com/acme/apps/tree/{c}/deploy/web.yaml",
            ),
            (
                "git@git.example.com:team/apps.git",
                Some("HTTPS://git.example.com/{repo}/-/blob/{revision}/{path}#L{line}"),
                5,
                "HTTPS://git.example.com/team/apps/-/blob/{c}/deploy/web.yaml#L5",
            ),
        ];
        for (url, template, line, want) in cases {
            let want = want.replace("{c}", c);
            assert_eq!(
                link(url, template, "deploy/web.yaml", line).as_deref(),
                Some(want.as_str()),
                "{template:?}"
            );
        }
        // An empty template turns links off, even for a known host.
        assert_eq!(link("https://github.com/acme/apps", Some(""), "a.yaml", 1), None);
    }

    #[test]
    fn bad_templates_are_refused_with_a_reason() {
        for (template, reason) in [
            ("git.example.com/{revision}/{path}", "https://"),
            ("ftp://git.example.com/{revision}/{path}", "https://"),
            ("https://git.example.com/{path}#L{line}", "{revision}"),
            ("https://git.example.com/{revision}", "{path}"),
            ("https://git.example.com/{rev}/{path}", "unknown placeholder {rev}"),
            ("https://git.example.com/{revision/{path}", "unknown placeholder"),
            ("https://git.example.com/{revision}/{path", "without `}`"),
            ("https://git.example.com/revision}/{path}", "without `{`"),
            ("https://{repo}.example.com/{revision}/{path}", "host"),
            ("https:///{revision}/{path}", "host"),
            ("https://git.example.com/a b/{revision}/{path}", "whitespace"),
            ("https://user@git.example.com/{revision}/{path}", "credentials"),
            (
                "https://git.example.com/{repo}/{revision}/{path}",
                "names no repository",
            ),
        ] {
            let err = LinkTemplate::for_source("/srv/apps", Some(template)).unwrap_err();
            assert!(err.to_string().contains(reason), "{template}: {err}");
        }
    }
}
