//! Credentials of a GitSource, read from a Kubernetes Secret (`spec.secretRef`) or, in
//! standalone mode, from a directory holding one file per key. The key names are Flux's, so an
//! existing Flux Secret works as is:
//!
//! | keys | credentials |
//! | --- | --- |
//! | `username` + `password` | HTTPS basic authentication |
//! | `bearerToken` | HTTPS `Authorization: Bearer` |
//! | `identity` + `known_hosts` (+ `password` = key passphrase, + `username`) | SSH |
//!
//! Secret values never leave this module in readable form except to libgit2: `Debug` redacts
//! them, errors name keys, never values, and the values are wiped from memory on drop.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use zeroize::Zeroizing;

use super::SourceError;

/// Secret key: user name (HTTPS basic; SSH user when the URL names none).
pub const KEY_USERNAME: &str = "username";
/// Secret key: HTTPS password, or the passphrase of `identity`.
pub const KEY_PASSWORD: &str = "password";
/// Secret key: HTTPS bearer token.
pub const KEY_BEARER_TOKEN: &str = "bearerToken";
/// Secret key: SSH private key (PEM or OpenSSH format).
pub const KEY_IDENTITY: &str = "identity";
/// Secret key: SSH known_hosts lines for the Git host.
pub const KEY_KNOWN_HOSTS: &str = "known_hosts";

/// The SSH user when neither the URL nor the Secret names one.
pub const DEFAULT_SSH_USER: &str = "git";

/// How to authenticate to a Git server.
#[derive(Clone, Default)]
pub enum Credentials {
    /// Anonymous access.
    #[default]
    None,
    /// HTTPS basic authentication.
    Basic {
        /// User name.
        username: String,
        /// Password or personal access token.
        password: Zeroizing<String>,
    },
    /// HTTPS `Authorization: Bearer <token>`.
    Bearer(Zeroizing<String>),
    /// SSH public-key authentication with a pinned host key.
    Ssh {
        /// SSH user (default `git`); a user in the URL takes precedence.
        username: String,
        /// The private key, PEM or OpenSSH format.
        private_key: Zeroizing<String>,
        /// Passphrase of the private key, if it is encrypted.
        passphrase: Option<Zeroizing<String>>,
        /// known_hosts lines; the server's host key must match one of them.
        known_hosts: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const REDACTED: &str = "<redacted>";
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &format_args!("{REDACTED}"))
                .finish(),
            Credentials::Bearer(_) => f.debug_tuple("Bearer").field(&format_args!("{REDACTED}")).finish(),
            Credentials::Ssh {
                username,
                passphrase,
                known_hosts,
                ..
            } => f
                .debug_struct("Ssh")
                .field("username", username)
                .field("private_key", &format_args!("{REDACTED}"))
                .field(
                    "passphrase",
                    &format_args!("{}", if passphrase.is_some() { REDACTED } else { "None" }),
                )
                .field(
                    "known_hosts",
                    &format_args!("{} lines", known_hosts.lines().filter(|l| !l.trim().is_empty()).count()),
                )
                .finish(),
        }
    }
}

impl Credentials {
    /// Credentials from the data of a Secret (Flux key names, see the module docs).
    ///
    /// No keys at all means anonymous access. Combinations that cannot be meant (a user name
    /// without a password, a token and a password, an identity without known_hosts) are
    /// errors naming the keys; values are never quoted. Trailing line breaks of single-line
    /// values are dropped (files written by editors and `echo` end with one).
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Self, SourceError> {
        let text = |key: &str| -> Result<Option<Zeroizing<String>>, SourceError> {
            data.get(key)
                .map(|bytes| {
                    String::from_utf8(bytes.clone()).map(Zeroizing::new).map_err(|error| {
                        // The error holds the bytes: wipe them.
                        drop(Zeroizing::new(error.into_bytes()));
                        invalid(format!("the value of {key:?} is not UTF-8 text"))
                    })
                })
                .transpose()
        };
        let line = |key: &str| -> Result<Option<Zeroizing<String>>, SourceError> {
            Ok(text(key)?.map(|value| Zeroizing::new(value.trim_end_matches(['\r', '\n']).to_owned())))
        };
        let username = line(KEY_USERNAME)?;
        let password = line(KEY_PASSWORD)?;
        let bearer = line(KEY_BEARER_TOKEN)?;
        let identity = text(KEY_IDENTITY)?;
        let known_hosts = text(KEY_KNOWN_HOSTS)?;
        let present = |v: &Option<Zeroizing<String>>| v.as_ref().is_some_and(|v| !v.trim().is_empty());

        if present(&identity) {
            if present(&bearer) {
                return Err(invalid(format!(
                    "{KEY_IDENTITY:?} (SSH) and {KEY_BEARER_TOKEN:?} (HTTPS) are both set; keep the one that \
                     matches the URL"
                )));
            }
            let Some(known_hosts) = known_hosts.filter(|k| !k.trim().is_empty()) else {
                return Err(invalid(format!(
                    "{KEY_KNOWN_HOSTS:?} is required with {KEY_IDENTITY:?}: driftguard never trusts an SSH host \
                     key on first use; add the host's public keys, e.g. the output of `ssh-keyscan <host>` \
                     (`ssh-keyscan -p <port> <host>` for another port)"
                )));
            };
            let private_key = identity.unwrap_or_default();
            if !looks_like_private_key(&private_key) {
                return Err(invalid(format!(
                    "{KEY_IDENTITY:?} is not a PEM or OpenSSH private key (it must start with \"-----BEGIN\" \
                     and contain \"PRIVATE KEY\")"
                )));
            }
            return Ok(Credentials::Ssh {
                username: username
                    .filter(|u| !u.trim().is_empty())
                    .map_or_else(|| DEFAULT_SSH_USER.to_owned(), |u| u.trim().to_owned()),
                private_key,
                passphrase: password.filter(|p| !p.is_empty()),
                known_hosts: known_hosts.to_string(),
            });
        }
        if present(&known_hosts) {
            return Err(invalid(format!(
                "{KEY_KNOWN_HOSTS:?} is set without {KEY_IDENTITY:?}; SSH needs the private key in \
                 {KEY_IDENTITY:?} too"
            )));
        }
        if present(&bearer) {
            if present(&username) || present(&password) {
                return Err(invalid(format!(
                    "set either {KEY_BEARER_TOKEN:?} or {KEY_USERNAME:?} + {KEY_PASSWORD:?}, not both"
                )));
            }
            let token = bearer.unwrap_or_default();
            if token.bytes().any(|b| b.is_ascii_control()) {
                return Err(invalid(format!(
                    "{KEY_BEARER_TOKEN:?} contains control characters (a line break inside the token?)"
                )));
            }
            return Ok(Credentials::Bearer(Zeroizing::new(token.trim().to_owned())));
        }
        match (username, password) {
            (Some(username), Some(password)) if !username.trim().is_empty() && !password.is_empty() => {
                Ok(Credentials::Basic {
                    username: username.trim().to_owned(),
                    password,
                })
            }
            (Some(username), _) if !username.trim().is_empty() => Err(invalid(format!(
                "{KEY_USERNAME:?} is set without {KEY_PASSWORD:?}; HTTPS basic authentication needs both"
            ))),
            (_, Some(password)) if !password.is_empty() => Err(invalid(format!(
                "{KEY_PASSWORD:?} is set without {KEY_USERNAME:?} (HTTPS) or {KEY_IDENTITY:?} (SSH)"
            ))),
            _ => Ok(Credentials::None),
        }
    }

    /// Credentials from a directory with one file per Secret key (`username`, `password`,
    /// `bearerToken`, `identity`, `known_hosts`), as a mounted Secret looks. Other files are
    /// ignored; the directory must exist.
    pub fn from_files(dir: impl AsRef<Path>) -> Result<Self, SourceError> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(invalid(format!(
                "credentials directory {} does not exist or is not a directory",
                dir.display()
            )));
        }
        let mut data = BTreeMap::new();
        for key in [
            KEY_USERNAME,
            KEY_PASSWORD,
            KEY_BEARER_TOKEN,
            KEY_IDENTITY,
            KEY_KNOWN_HOSTS,
        ] {
            let path = dir.join(key);
            match std::fs::read(&path) {
                Ok(bytes) => {
                    data.insert(key.to_owned(), bytes);
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    wipe(&mut data);
                    return Err(invalid(format!("cannot read {}: {error}", path.display())));
                }
            }
        }
        let credentials = Self::from_secret_data(&data);
        wipe(&mut data);
        credentials
    }

    /// A short name of the kind, for logs and messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Credentials::None => "none",
            Credentials::Basic { .. } => "basic",
            Credentials::Bearer(_) => "bearer token",
            Credentials::Ssh { .. } => "SSH key",
        }
    }

    /// The secret strings, for scrubbing any text that might echo one.
    pub(crate) fn secrets(&self) -> Vec<&str> {
        let mut secrets = Vec::new();
        match self {
            Credentials::None => {}
            Credentials::Basic { password, .. } => secrets.push(password.as_str()),
            Credentials::Bearer(token) => secrets.push(token.as_str()),
            Credentials::Ssh {
                private_key,
                passphrase,
                ..
            } => {
                secrets.extend(private_key.lines().map(str::trim).filter(|l| l.len() >= 16));
                if let Some(passphrase) = passphrase {
                    secrets.push(passphrase.as_str());
                }
            }
        }
        secrets.retain(|s| !s.is_empty());
        secrets
    }
}

/// Replaces every occurrence of a secret in `text` (defence in depth for messages that come
/// from libgit2 or a server).
pub(crate) fn scrub(text: &str, credentials: &Credentials) -> String {
    let mut out = text.to_owned();
    for secret in credentials.secrets() {
        if out.contains(secret) {
            out = out.replace(secret, "<redacted>");
        }
    }
    out
}

fn looks_like_private_key(text: &str) -> bool {
    let text = text.trim_start();
    text.starts_with("-----BEGIN ") && text.contains("PRIVATE KEY-----")
}

fn wipe(data: &mut BTreeMap<String, Vec<u8>>) {
    for (_, value) in std::mem::take(data) {
        drop(Zeroizing::new(value));
    }
}

fn invalid(reason: String) -> SourceError {
    SourceError::InvalidCredentials { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----\n";
    const HOSTS: &str = "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJTfJd8j19oT4NtgkZ9spu2FReaOFfjRrQI4Cg6gSsiq\n";

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn flux_keys_map_to_kinds() {
        assert!(matches!(
            Credentials::from_secret_data(&data(&[])).unwrap(),
            Credentials::None
        ));
        match Credentials::from_secret_data(&data(&[("username", "bot\n"), ("password", "s3cret\n")])).unwrap() {
            Credentials::Basic { username, password } => {
                assert_eq!(username, "bot");
                assert_eq!(password.as_str(), "s3cret");
            }
            other => panic!("{other:?}"),
        }
        match Credentials::from_secret_data(&data(&[("bearerToken", "tok-123\n")])).unwrap() {
            Credentials::Bearer(token) => assert_eq!(token.as_str(), "tok-123"),
            other => panic!("{other:?}"),
        }
        match Credentials::from_secret_data(&data(&[("identity", KEY), ("known_hosts", HOSTS)])).unwrap() {
            Credentials::Ssh {
                username,
                passphrase,
                known_hosts,
                private_key,
            } => {
                assert_eq!(username, "git");
                assert!(passphrase.is_none());
                assert_eq!(known_hosts, HOSTS);
                assert_eq!(private_key.as_str(), KEY);
            }
            other => panic!("{other:?}"),
        }
        match Credentials::from_secret_data(&data(&[
            ("identity", KEY),
            ("known_hosts", HOSTS),
            ("password", "pass phrase"),
            ("username", "deploy"),
        ]))
        .unwrap()
        {
            Credentials::Ssh {
                username, passphrase, ..
            } => {
                assert_eq!(username, "deploy");
                assert_eq!(passphrase.unwrap().as_str(), "pass phrase");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn incomplete_or_ambiguous_secrets_are_refused_without_values() {
        for (pairs, needle) in [
            (vec![("identity", KEY)], "\"known_hosts\" is required"),
            (
                vec![("identity", KEY), ("known_hosts", "  \n")],
                "never trusts an SSH host key",
            ),
            (
                vec![("identity", "hunter2-not-a-key"), ("known_hosts", HOSTS)],
                "not a PEM",
            ),
            (vec![("known_hosts", HOSTS)], "without \"identity\""),
            (vec![("username", "bot")], "without \"password\""),
            (vec![("password", "hunter2")], "without \"username\""),
            (
                vec![("bearerToken", "hunter2"), ("username", "bot"), ("password", "hunter2")],
                "not both",
            ),
            (vec![("bearerToken", "hunter2\nx")], "control characters"),
            (
                vec![("identity", KEY), ("known_hosts", HOSTS), ("bearerToken", "hunter2")],
                "both set",
            ),
        ] {
            let err = Credentials::from_secret_data(&data(&pairs)).unwrap_err().to_string();
            assert!(err.contains(needle), "{pairs:?}: {err}");
            assert!(!err.contains("hunter2") && !err.contains("b3BlbnNzaC1rZXkt"), "{err}");
        }
        let mut binary = BTreeMap::new();
        binary.insert("password".to_owned(), vec![0xff, 0xfe]);
        binary.insert("username".to_owned(), b"bot".to_vec());
        let err = Credentials::from_secret_data(&binary).unwrap_err().to_string();
        assert!(err.contains("\"password\" is not UTF-8"), "{err}");
    }

    #[test]
    fn debug_redacts_every_secret() {
        let all = [
            Credentials::Basic {
                username: "bot".into(),
                password: Zeroizing::new("hunter2".into()),
            },
            Credentials::Bearer(Zeroizing::new("hunter2".into())),
            Credentials::Ssh {
                username: "git".into(),
                private_key: Zeroizing::new(KEY.into()),
                passphrase: Some(Zeroizing::new("hunter2".into())),
                known_hosts: HOSTS.into(),
            },
        ];
        for credentials in all {
            let debug = format!("{credentials:?} {credentials:#?}");
            assert!(debug.contains("<redacted>"), "{debug}");
            assert!(
                !debug.contains("hunter2") && !debug.contains("b3BlbnNzaC1rZXkt"),
                "{debug}"
            );
        }
        assert_eq!(format!("{:?}", Credentials::None), "None");
    }

    #[test]
    fn scrub_replaces_secrets() {
        let credentials = Credentials::Basic {
            username: "bot".into(),
            password: Zeroizing::new("hunter2".into()),
        };
        assert_eq!(
            scrub("server said hunter2 is wrong", &credentials),
            "server said <redacted> is wrong"
        );
    }

    #[test]
    fn from_files_reads_a_mounted_secret() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Credentials::from_files(dir.path()).unwrap(),
            Credentials::None
        ));
        std::fs::write(dir.path().join("username"), "bot\n").unwrap();
        std::fs::write(dir.path().join("password"), "s3cret\n").unwrap();
        std::fs::write(dir.path().join("unrelated"), "x").unwrap();
        match Credentials::from_files(dir.path()).unwrap() {
            Credentials::Basic { username, password } => {
                assert_eq!((username.as_str(), password.as_str()), ("bot", "s3cret"));
            }
            other => panic!("{other:?}"),
        }
        let err = Credentials::from_files(dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
    }
}
