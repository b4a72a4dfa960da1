//! A GitSource's tracked revision: fetch it (or open it in place, for a local repository),
//! then check the source's signature policy. Blocking (libgit2); callers run it on a blocking
//! thread. A refused revision is never handed on: the caller keeps serving the last good one.

use super::verify::{TrustedKeys, VerifyError, VerifyMode, verify_revision};
use super::{FetchRequest, FetchStats, Fetcher, GitReference, LocalRepository, Revision, SourceError};

/// Ready reason when the repository could not be fetched or the ref not resolved.
pub const REASON_FETCH_FAILED: &str = "FetchFailed";
/// Ready reason when a fetched revision failed signature verification.
pub const REASON_VERIFICATION_FAILED: &str = "VerificationFailed";

/// A GitSource's `verify` policy, with its trusted keys read.
#[derive(Debug, Clone)]
pub struct Verification {
    /// What has to be signed.
    pub mode: VerifyMode,
    /// Who may have signed it.
    pub keys: TrustedKeys,
}

/// A revision fetched and, when asked for, verified.
#[derive(Debug)]
pub struct Tracked {
    /// The revision the ref names now.
    pub revision: Revision,
    /// Where to read it from (the mirror, or the local repository itself).
    pub repository: LocalRepository,
    /// What the fetch transferred.
    pub stats: FetchStats,
    /// Who signed it, when verification was asked for.
    pub signer: Option<String>,
}

/// Why no new revision came out of a fetch.
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    /// Fetching or resolving failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The revision was fetched but its signatures do not satisfy the policy.
    #[error("{revision} refused: {error}")]
    Verify {
        /// The refused revision.
        revision: Revision,
        /// Why.
        error: VerifyError,
    },
}

impl TrackError {
    /// The GitSource's Ready reason (and the `reason` label of fetch error metrics).
    pub fn reason(&self) -> &'static str {
        match self {
            TrackError::Verify { .. } => REASON_VERIFICATION_FAILED,
            TrackError::Source(SourceError::InvalidCredentials { .. }) => "InvalidCredentials",
            TrackError::Source(SourceError::Authentication { .. }) => "AuthenticationFailed",
            TrackError::Source(SourceError::HostKey { .. }) => "HostKeyRejected",
            TrackError::Source(SourceError::Timeout { .. }) => "Timeout",
            TrackError::Source(_) => REASON_FETCH_FAILED,
        }
    }
}

/// Fetch what `request` tracks and verify it when `verification` is given.
pub fn track(
    fetcher: &Fetcher,
    request: &FetchRequest<'_>,
    verification: Option<&Verification>,
) -> Result<Tracked, TrackError> {
    let fetched = fetcher.fetch(request)?;
    let signer = match verification {
        None => None,
        Some(policy) => {
            let tag = tag_of(request.reference, &fetched.revision);
            match verify_revision(
                &fetched.repository,
                &fetched.revision,
                tag.as_deref(),
                policy.mode,
                &policy.keys,
            ) {
                Ok(verified) => Some(verified.signer),
                Err(error) => {
                    return Err(TrackError::Verify {
                        revision: fetched.revision,
                        error,
                    });
                }
            }
        }
    };
    Ok(Tracked {
        revision: fetched.revision,
        repository: fetched.repository,
        stats: fetched.stats,
        signer,
    })
}

/// The tag a revision came from: the pinned tag, or the one a semver range picked (its
/// revision reads `<tag>@sha1:<commit>`).
fn tag_of(reference: &GitReference, revision: &Revision) -> Option<String> {
    match reference {
        GitReference::Tag(tag) => Some(tag.clone()),
        GitReference::Semver(_) => revision.reference.split_once("@sha1:").map(|(tag, _)| tag.to_owned()),
        GitReference::Head | GitReference::Branch(_) | GitReference::Commit(_) => None,
    }
}

/// The commit of a revision as status records it (`<ref>@sha1:<commit>` or `sha1:<commit>`).
pub fn commit_of(reference: &str) -> Option<&str> {
    let (_, commit) = reference.rsplit_once("sha1:")?;
    (commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit())).then_some(commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn the_tag_to_verify_comes_from_the_ref() {
        let revision = Revision {
            commit: C.into(),
            reference: format!("v1.4.2@sha1:{C}"),
        };
        assert_eq!(
            tag_of(&GitReference::Semver("^1".into()), &revision).as_deref(),
            Some("v1.4.2")
        );
        assert_eq!(
            tag_of(&GitReference::Tag("v1".into()), &revision).as_deref(),
            Some("v1")
        );
        assert_eq!(tag_of(&GitReference::Branch("main".into()), &revision), None);
    }

    #[test]
    fn commits_are_read_back_from_status() {
        assert_eq!(commit_of(&format!("main@sha1:{C}")), Some(C));
        assert_eq!(commit_of(&format!("sha1:{C}")), Some(C));
        assert_eq!(commit_of("main@sha1:abc"), None);
        assert_eq!(commit_of("main"), None);
    }
}
