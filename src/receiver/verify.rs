//! PURE: is a webhook delivery signed with the shared secret? No I/O, no clients.
//!
//! Three kinds, told apart by the headers present ([`HookKind::detect`]):
//!
//! | kind | detected by | proof |
//! | --- | --- | --- |
//! | GitHub (and Gitea/Forgejo, which send GitHub's headers) | `X-GitHub-Event` | `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>` |
//! | GitLab | `X-Gitlab-Event` or `X-Gitlab-Token` | `X-Gitlab-Token: <secret>` |
//! | generic | neither | `X-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>` |
//!
//! For the generic kind any sender works that can compute an HMAC, e.g.
//! `printf %s "$BODY" | openssl dgst -sha256 -hmac "$SECRET"` gives the hex digest.
//!
//! Every comparison of secret-derived bytes is constant-time ([`subtle`]). GitLab's token is
//! compared through SHA-256 digests of both sides so that not even its length leaks.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// GitHub's event header (`push`, `ping`, ...).
pub const GITHUB_EVENT: &str = "x-github-event";
/// GitHub's signature header: `sha256=<hex HMAC-SHA256 of the body>`.
pub const GITHUB_SIGNATURE: &str = "x-hub-signature-256";
/// GitHub's delivery id (logged, never trusted).
pub const GITHUB_DELIVERY: &str = "x-github-delivery";
/// GitLab's event header (`Push Hook`, `Tag Push Hook`, ...).
pub const GITLAB_EVENT: &str = "x-gitlab-event";
/// GitLab's secret token header: the shared secret itself.
pub const GITLAB_TOKEN: &str = "x-gitlab-token";
/// The generic signature header: `sha256=<hex HMAC-SHA256 of the body>`, as GitHub's.
pub const GENERIC_SIGNATURE: &str = "x-signature-256";

/// Length of a SHA-256 digest in bytes.
const SHA256_LEN: usize = 32;

/// Which sender's scheme a delivery uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookKind {
    /// `X-Hub-Signature-256` HMAC.
    GitHub,
    /// `X-Gitlab-Token` shared token.
    GitLab,
    /// `X-Signature-256` HMAC.
    Generic,
}

impl HookKind {
    /// The kind whose headers are present: GitHub's event header first, then GitLab's event or
    /// token header, otherwise generic.
    pub fn detect(headers: &HeaderMap) -> HookKind {
        if headers.contains_key(GITHUB_EVENT) {
            HookKind::GitHub
        } else if headers.contains_key(GITLAB_EVENT) || headers.contains_key(GITLAB_TOKEN) {
            HookKind::GitLab
        } else {
            HookKind::Generic
        }
    }

    /// `github`, `gitlab` or `generic` (for logs).
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::GitHub => "github",
            HookKind::GitLab => "gitlab",
            HookKind::Generic => "generic",
        }
    }
}

/// Why a delivery is not accepted. Logged for operators; callers only ever see "unauthorized".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The kind's signature or token header is absent (or given more than once).
    #[error("no {0} header")]
    Missing(&'static str),
    /// The header is not `sha256=<64 hex digits>` (or not visible ASCII).
    #[error("malformed {0} header")]
    Malformed(&'static str),
    /// Well-formed, but not made with this secret over this body.
    #[error("{0} does not match")]
    Mismatch(&'static str),
    /// The configured secret is empty: nothing can be verified against it.
    #[error("the shared secret is empty")]
    EmptySecret,
}

/// Checks that `body` was sent by someone holding `secret`, by `kind`'s scheme (see the
/// module docs). Constant-time in everything derived from the secret.
pub fn verify(kind: HookKind, headers: &HeaderMap, body: &[u8], secret: &[u8]) -> Result<(), Rejected> {
    if secret.is_empty() {
        return Err(Rejected::EmptySecret);
    }
    match kind {
        HookKind::GitHub => verify_hmac(headers, GITHUB_SIGNATURE, body, secret),
        HookKind::Generic => verify_hmac(headers, GENERIC_SIGNATURE, body, secret),
        HookKind::GitLab => {
            let token = single_header(headers, GITLAB_TOKEN)?;
            let given = Sha256::digest(token);
            let wanted = Sha256::digest(secret);
            if bool::from(given.as_slice().ct_eq(wanted.as_slice())) {
                Ok(())
            } else {
                Err(Rejected::Mismatch(GITLAB_TOKEN))
            }
        }
    }
}

/// The hex HMAC-SHA256 of `body` under `secret`, as the signature headers carry it after
/// `sha256=` (for senders, tests and documentation).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mac = hmac_sha256(secret, body);
    let mut hex = String::with_capacity(SHA256_LEN * 2);
    for byte in mac {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    hex
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hmac_sha256(secret: &[u8], body: &[u8]) -> [u8; SHA256_LEN] {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return [0; SHA256_LEN];
    };
    mac.update(body);
    mac.finalize().into_bytes().into()
}

fn verify_hmac(headers: &HeaderMap, header: &'static str, body: &[u8], secret: &[u8]) -> Result<(), Rejected> {
    let value = single_header(headers, header)?;
    let hex = value.strip_prefix(b"sha256=").ok_or(Rejected::Malformed(header))?;
    let given = decode_hex(hex).ok_or(Rejected::Malformed(header))?;
    let wanted = hmac_sha256(secret, body);
    if bool::from(given.ct_eq(&wanted)) {
        Ok(())
    } else {
        Err(Rejected::Mismatch(header))
    }
}

/// The one value of `name`: absent or repeated is [`Rejected::Missing`] (two signatures would
/// leave open which one was checked).
fn single_header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a [u8], Rejected> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Ok(value.as_bytes()),
        _ => Err(Rejected::Missing(name)),
    }
}

/// 64 hex digits (either case) to 32 bytes. The input is the caller's, not secret.
fn decode_hex(hex: &[u8]) -> Option<[u8; SHA256_LEN]> {
    if hex.len() != SHA256_LEN * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; SHA256_LEN];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn sign_matches_the_rfc_4231_test_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn github_example_from_the_documentation_verifies() {
        // GitHub's "Validating webhook deliveries" example.
        let h = headers(&[
            (GITHUB_EVENT, "push"),
            (
                GITHUB_SIGNATURE,
                "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            ),
        ]);
        assert_eq!(HookKind::detect(&h), HookKind::GitHub);
        assert_eq!(
            verify(HookKind::GitHub, &h, b"Hello, World!", b"It's a Secret to Everybody"),
            Ok(())
        );
        assert_eq!(
            verify(HookKind::GitHub, &h, b"Hello, World?", b"It's a Secret to Everybody"),
            Err(Rejected::Mismatch(GITHUB_SIGNATURE))
        );
    }

    #[test]
    fn hmac_headers_accept_either_case_and_reject_malformed_values() {
        let sig = sign(b"s3cret", b"{}");
        for value in [format!("sha256={sig}"), format!("sha256={}", sig.to_uppercase())] {
            let h = headers(&[(GENERIC_SIGNATURE, &value)]);
            assert_eq!(verify(HookKind::Generic, &h, b"{}", b"s3cret"), Ok(()));
        }
        for bad in [
            sig.clone(),
            format!("sha1={sig}"),
            format!("sha256={}", &sig[..62]),
            format!("sha256={sig}00"),
            format!("sha256={}zz", &sig[..62]),
        ] {
            let h = headers(&[(GENERIC_SIGNATURE, &bad)]);
            assert_eq!(
                verify(HookKind::Generic, &h, b"{}", b"s3cret"),
                Err(Rejected::Malformed(GENERIC_SIGNATURE)),
                "{bad}"
            );
        }
    }

    #[test]
    fn missing_or_repeated_signatures_are_rejected() {
        let sig = format!("sha256={}", sign(b"s3cret", b"{}"));
        assert_eq!(
            verify(HookKind::GitHub, &headers(&[(GITHUB_EVENT, "push")]), b"{}", b"s3cret"),
            Err(Rejected::Missing(GITHUB_SIGNATURE))
        );
        let twice = headers(&[(GITHUB_SIGNATURE, &sig), (GITHUB_SIGNATURE, &sig)]);
        assert_eq!(
            verify(HookKind::GitHub, &twice, b"{}", b"s3cret"),
            Err(Rejected::Missing(GITHUB_SIGNATURE))
        );
        // A GitHub signature does not satisfy the generic scheme, and vice versa.
        let github_only = headers(&[(GITHUB_SIGNATURE, &sig)]);
        assert_eq!(HookKind::detect(&github_only), HookKind::Generic);
        assert_eq!(
            verify(HookKind::Generic, &github_only, b"{}", b"s3cret"),
            Err(Rejected::Missing(GENERIC_SIGNATURE))
        );
    }

    #[test]
    fn gitlab_tokens_must_equal_the_secret() {
        let h = headers(&[(GITLAB_EVENT, "Push Hook"), (GITLAB_TOKEN, "s3cret")]);
        assert_eq!(HookKind::detect(&h), HookKind::GitLab);
        assert_eq!(verify(HookKind::GitLab, &h, b"{}", b"s3cret"), Ok(()));
        for secret in [&b"s3cret!"[..], b"s3cre", b"S3CRET"] {
            assert_eq!(
                verify(HookKind::GitLab, &h, b"{}", secret),
                Err(Rejected::Mismatch(GITLAB_TOKEN))
            );
        }
        let token_only = headers(&[(GITLAB_TOKEN, "s3cret")]);
        assert_eq!(HookKind::detect(&token_only), HookKind::GitLab);
        assert_eq!(
            verify(
                HookKind::GitLab,
                &headers(&[(GITLAB_EVENT, "Push Hook")]),
                b"{}",
                b"s3cret"
            ),
            Err(Rejected::Missing(GITLAB_TOKEN))
        );
    }

    #[test]
    fn an_empty_secret_verifies_nothing() {
        let h = headers(&[(GENERIC_SIGNATURE, &format!("sha256={}", sign(b"", b"{}")))]);
        assert_eq!(verify(HookKind::Generic, &h, b"{}", b""), Err(Rejected::EmptySecret));
        let h = headers(&[(GITLAB_TOKEN, "")]);
        assert_eq!(verify(HookKind::GitLab, &h, b"{}", b""), Err(Rejected::EmptySecret));
    }
}
