//! SSH host key pinning against the known_hosts lines of a GitSource's Secret (PURE).
//!
//! The process user's `~/.ssh/known_hosts` is never consulted: a host is trusted exactly when
//! the key it presents is listed for it here. Supported: plain and hashed (`|1|salt|hash`) host
//! names, `*`/`?` wildcards, `!` negations, `[host]:port` for other ports, and `@revoked`.
//! `@cert-authority` lines are ignored (host certificates are not checked), so a host needs
//! its own key listed.

use ssh_key::known_hosts::{Entry, HostPatterns, KnownHosts, Marker};
use ssh_key::{HashAlg, PublicKey};

/// Parsed known_hosts lines.
#[derive(Debug, Clone)]
pub(crate) struct KnownHostsSet {
    entries: Vec<Entry>,
    /// Lines that could not be parsed (reported when nothing matches).
    skipped: usize,
}

/// Why a host key was refused; the message says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused(pub String);

impl KnownHostsSet {
    /// Parses known_hosts text. Unparseable lines are skipped but counted; no usable entry at
    /// all is an error (there would be nothing to trust).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        let mut skipped = 0;
        for entry in KnownHosts::new(text) {
            match entry {
                Ok(entry) => entries.push(entry),
                Err(_) => skipped += 1,
            }
        }
        if entries.is_empty() {
            return Err(if skipped == 0 {
                "known_hosts is empty; driftguard never trusts an SSH host key on first use: add the host's \
                 public keys (the output of `ssh-keyscan <host>`, or `ssh-keyscan -p <port> <host>`)"
                    .to_owned()
            } else {
                format!(
                    "none of the {skipped} known_hosts lines could be parsed; each line is \
                     `<host patterns> <key type> <base64 key>` as `ssh-keyscan` prints it"
                )
            });
        }
        Ok(KnownHostsSet { entries, skipped })
    }

    /// Checks the host key (SSH wire encoding, as libssh2 reports it) presented by `host`
    /// (`name` or `[name]:port`, see `RemoteUrl::known_hosts_name`).
    pub fn check(&self, host: &str, raw_key: &[u8]) -> Result<(), Refused> {
        let presented = PublicKey::from_bytes(raw_key)
            .map_err(|e| Refused(format!("the server sent a host key that cannot be decoded ({e})")))?;
        let describe = || {
            format!(
                "{} {}",
                presented.algorithm().as_str(),
                presented.fingerprint(HashAlg::Sha256)
            )
        };
        let for_host: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| host_matches(e.host_patterns(), host))
            .collect();
        if for_host
            .iter()
            .any(|e| e.marker() == Some(&Marker::Revoked) && e.public_key().key_data() == presented.key_data())
        {
            return Err(Refused(format!(
                "{host} presented {}, which known_hosts marks @revoked",
                describe()
            )));
        }
        let pinned: Vec<&&Entry> = for_host.iter().filter(|e| e.marker().is_none()).collect();
        if pinned.iter().any(|e| e.public_key().key_data() == presented.key_data()) {
            return Ok(());
        }
        let skipped = if self.skipped > 0 {
            format!(" ({} unparseable lines were ignored)", self.skipped)
        } else {
            String::new()
        };
        if pinned.is_empty() {
            let ca_only = if for_host.is_empty() {
                ""
            } else {
                " (only @cert-authority or @revoked lines, which do not pin a key)"
            };
            return Err(Refused(format!(
                "known_hosts has no key for {host}{ca_only}{skipped}; the server presented {}. Add the host's \
                 keys (`ssh-keyscan{} {}`) after checking them against the fingerprints your Git host \
                 publishes",
                describe(),
                port_flag(host),
                bare_host(host),
            )));
        }
        let mut types: Vec<String> = pinned
            .iter()
            .map(|e| e.public_key().algorithm().as_str().to_owned())
            .collect();
        types.sort_unstable();
        types.dedup();
        Err(Refused(format!(
            "{host} presented {}, which matches none of the {} known_hosts keys for it ({}){skipped}. If the \
             host's key changed on purpose, update known_hosts; otherwise someone may be intercepting the \
             connection",
            describe(),
            pinned.len(),
            types.join(", "),
        )))
    }
}

fn port_flag(host: &str) -> String {
    host.rsplit_once("]:")
        .map_or_else(String::new, |(_, port)| format!(" -p {port}"))
}

fn bare_host(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.rsplit_once("]:"))
        .map_or(host, |(h, _)| h)
}

/// OpenSSH semantics: any negated pattern that matches excludes the line; otherwise any
/// positive pattern must match. Names compare case-insensitively.
fn host_matches(patterns: &HostPatterns, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    match patterns {
        HostPatterns::Patterns(patterns) => {
            let mut matched = false;
            for pattern in patterns {
                let pattern = pattern.to_ascii_lowercase();
                if let Some(negated) = pattern.strip_prefix('!') {
                    if glob(negated.as_bytes(), host.as_bytes()) {
                        return false;
                    }
                } else if glob(pattern.as_bytes(), host.as_bytes()) {
                    matched = true;
                }
            }
            matched
        }
        HostPatterns::HashedName { salt, hash } => hmac_sha1(salt, host.as_bytes()) == *hash,
    }
}

/// `*` matches any run, `?` any one byte.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || Some(&c) == text.get(t) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern.get(p..).is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

/// HMAC-SHA1, as OpenSSH hashes known_hosts names (`ssh-keygen -H`). SHA-1 is fine here: the
/// hash only hides host names; trust comes from comparing the full public key.
fn hmac_sha1(key: &[u8], message: &[u8]) -> [u8; 20] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..20].copy_from_slice(&sha1(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Vec::with_capacity(BLOCK + message.len());
    inner.extend(block.iter().map(|b| b ^ 0x36));
    inner.extend_from_slice(message);
    let mut outer = Vec::with_capacity(BLOCK + 20);
    outer.extend(block.iter().map(|b| b ^ 0x5c));
    outer.extend_from_slice(&sha1(&inner));
    sha1(&outer)
}

/// SHA-1 (FIPS 180-4), only for [`hmac_sha1`].
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];
    let bit_len = (data.len() as u64).wrapping_mul(8);
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&bit_len.to_be_bytes());
    for chunk in message.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in chunk.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, &word) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let temp = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(word);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = temp;
        }
        for (state, value) in h.iter_mut().zip([a, b, c, d, e]) {
            *state = state.wrapping_add(value);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two throwaway ed25519 host keys (public halves only).
    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJTfJd8j19oT4NtgkZ9spu2FReaOFfjRrQI4Cg6gSsiq";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJsFCkQW9EfJtbXCZfNFrNfZp/dZrNhJ92+Ix60AwcOR";

    fn raw(key: &str) -> Vec<u8> {
        PublicKey::from_openssh(&format!("ssh-ed25519 {key}"))
            .unwrap()
            .to_bytes()
            .unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha1_and_hmac_known_answers() {
        assert_eq!(hex(&sha1(b"abc")), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        let long = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(hex(&sha1(long)), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
        // RFC 2202 test case 2.
        assert_eq!(
            hex(&hmac_sha1(b"Jefe", b"what do ya want for nothing?")),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }

    #[test]
    fn plain_wildcard_negated_and_port_patterns() {
        let set = KnownHostsSet::parse(&format!(
            "# comment\n\
             git.example.com,10.0.0.1 ssh-ed25519 {KEY_A}\n\
             *.internal,!evil.internal ssh-ed25519 {KEY_A}\n\
             [127.0.0.1]:2222 ssh-ed25519 {KEY_B}\n"
        ))
        .unwrap();
        assert_eq!(set.check("git.example.com", &raw(KEY_A)), Ok(()));
        assert_eq!(set.check("GIT.example.com", &raw(KEY_A)), Ok(()));
        assert_eq!(set.check("10.0.0.1", &raw(KEY_A)), Ok(()));
        assert_eq!(set.check("repo.internal", &raw(KEY_A)), Ok(()));
        assert_eq!(set.check("[127.0.0.1]:2222", &raw(KEY_B)), Ok(()));

        let wrong = set.check("git.example.com", &raw(KEY_B)).unwrap_err().0;
        assert!(wrong.contains("matches none of the 1 known_hosts keys"), "{wrong}");
        assert!(wrong.contains("ssh-ed25519 SHA256:"), "{wrong}");
        let negated = set.check("evil.internal", &raw(KEY_A)).unwrap_err().0;
        assert!(negated.contains("no key for evil.internal"), "{negated}");
        let other_port = set.check("127.0.0.1", &raw(KEY_B)).unwrap_err().0;
        assert!(other_port.contains("no key for 127.0.0.1"), "{other_port}");
        let unknown = set.check("[127.0.0.1]:2200", &raw(KEY_B)).unwrap_err().0;
        assert!(unknown.contains("ssh-keyscan -p 2200 127.0.0.1"), "{unknown}");
    }

    #[test]
    fn hashed_names_match() {
        // A line hashed the way `ssh-keygen -H` does, for a name with a port.
        let salt: Vec<u8> = (0u8..20).collect();
        let hash = hmac_sha1(&salt, b"[127.0.0.1]:2222");
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let line = format!("|1|{}|{} ssh-ed25519 {KEY_A}", b64.encode(&salt), b64.encode(hash));
        let set = KnownHostsSet::parse(&line).unwrap();
        assert_eq!(set.check("[127.0.0.1]:2222", &raw(KEY_A)), Ok(()));
        assert!(set.check("127.0.0.1", &raw(KEY_A)).is_err());
    }

    #[test]
    fn openssh_hashed_line_matches() {
        // Produced by `ssh-keygen -H -f known_hosts` for "github.com".
        let line = format!("|1|gR8tY0FhyEWiXV0+xS82rL/aUa4=|bcqdbfiDWAk6wB0FRgtQmQ7syOE= ssh-ed25519 {KEY_A}");
        let set = KnownHostsSet::parse(&line).unwrap();
        assert_eq!(set.check("github.com", &raw(KEY_A)), Ok(()));
    }

    #[test]
    fn revoked_and_cert_authority() {
        let set = KnownHostsSet::parse(&format!(
            "@revoked git.example.com ssh-ed25519 {KEY_A}\n\
             git.example.com ssh-ed25519 {KEY_A}\n\
             @cert-authority *.example.org ssh-ed25519 {KEY_B}\n"
        ))
        .unwrap();
        let revoked = set.check("git.example.com", &raw(KEY_A)).unwrap_err().0;
        assert!(revoked.contains("@revoked"), "{revoked}");
        let ca = set.check("git.example.org", &raw(KEY_B)).unwrap_err().0;
        assert!(ca.contains("@cert-authority"), "{ca}");
    }

    #[test]
    fn empty_or_garbage_known_hosts_is_an_error() {
        let empty = KnownHostsSet::parse("\n# nothing\n").unwrap_err();
        assert!(empty.contains("known_hosts is empty"), "{empty}");
        let garbage = KnownHostsSet::parse("not a known_hosts line\n").unwrap_err();
        assert!(garbage.contains("none of the 1 known_hosts lines"), "{garbage}");
    }

    #[test]
    fn glob_semantics() {
        for (pattern, text, want) in [
            ("*", "anything", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbbd", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*.example.com", "git.example.com", true),
            ("*.example.com", "example.com", false),
            ("[10.0.0.*]:22*", "[10.0.0.7]:2222", true),
        ] {
            assert_eq!(glob(pattern.as_bytes(), text.as_bytes()), want, "{pattern} {text}");
        }
    }
}
