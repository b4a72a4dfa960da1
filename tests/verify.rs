//! Signature verification against commits and tags signed by the real tools: `gpg` (OpenPGP)
//! and `ssh-keygen` (SSH, `gpg.format=ssh`), each test with its own keys in a temp dir.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use driftguard::source::verify::{TrustedKeys, VerifyError, VerifyMode, verify_revision};
use driftguard::source::{GitReference, LocalRepository, Revision};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pgp,
    Ssh,
}

/// A signing key of one kind, made for one test.
struct Signer {
    kind: Kind,
    dir: tempfile::TempDir,
    /// What `user.signingkey` names: the OpenPGP fingerprint or the SSH private key file.
    signing_key: String,
    /// The public key as it goes into the Secret.
    public: String,
    /// How verification names the key: the OpenPGP fingerprint or the SSH SHA256 fingerprint.
    id: String,
}

fn run(command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

impl Signer {
    fn new(kind: Kind) -> Self {
        let dir = tempfile::tempdir().unwrap();
        match kind {
            Kind::Pgp => {
                let home = dir.path().join("gnupg");
                std::fs::create_dir(&home).unwrap();
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
                }
                let gpg = |args: &[&str]| run(Command::new("gpg").env("GNUPGHOME", &home).args(args));
                gpg(&[
                    "--batch",
                    "--passphrase",
                    "",
                    "--quick-gen-key",
                    "Test <t@example.com>",
                    "ed25519",
                    "sign",
                    "never",
                ]);
                let listing = gpg(&["--batch", "--list-keys", "--with-colons"]);
                let fingerprint = listing
                    .lines()
                    .find_map(|l| l.strip_prefix("fpr:"))
                    .and_then(|l| l.split(':').find(|f| f.len() == 40))
                    .expect("gpg lists the new key's fingerprint")
                    .to_owned();
                let public = gpg(&["--batch", "--armor", "--export", &fingerprint]);
                assert!(public.contains("BEGIN PGP PUBLIC KEY BLOCK"), "{public}");
                Signer {
                    kind,
                    dir,
                    signing_key: fingerprint.clone(),
                    public,
                    id: fingerprint,
                }
            }
            Kind::Ssh => {
                let key = dir.path().join("key");
                run(Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", "t@example.com", "-f"])
                    .arg(&key));
                let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
                let listing = run(Command::new("ssh-keygen").arg("-lf").arg(key.with_extension("pub")));
                let id = listing.split_whitespace().nth(1).unwrap().to_owned();
                assert!(id.starts_with("SHA256:"), "{listing}");
                Signer {
                    kind,
                    dir,
                    signing_key: key.to_string_lossy().into_owned(),
                    public,
                    id,
                }
            }
        }
    }

    fn gnupg_home(&self) -> PathBuf {
        self.dir.path().join("gnupg")
    }

    /// Runs git in `repo` with this key as the signing key.
    fn git(&self, repo: &Path, args: &[&str]) -> String {
        let format = match self.kind {
            Kind::Pgp => "gpg.format=openpgp",
            Kind::Ssh => "gpg.format=ssh",
        };
        let signing_key = format!("user.signingkey={}", self.signing_key);
        let mut all = vec!["-c", format, "-c", "gpg.program=gpg", "-c", &signing_key];
        all.extend_from_slice(args);
        let home = self.gnupg_home();
        support::git_with_env(repo, &[("GNUPGHOME", home.as_os_str())], &all)
    }

    /// Trusted keys holding only this key.
    fn secret_keys(&self) -> TrustedKeys {
        keys(&[self])
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        if self.kind == Kind::Pgp {
            // Each GNUPGHOME gets its own gpg-agent; stop it with the test.
            let _ = Command::new("gpgconf")
                .env("GNUPGHOME", self.gnupg_home())
                .args(["--kill", "gpg-agent"])
                .output();
        }
    }
}

fn secret(signers: &[&Signer]) -> BTreeMap<String, Vec<u8>> {
    signers
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("key-{i}"), s.public.clone().into_bytes()))
        .collect()
}

fn keys(signers: &[&Signer]) -> TrustedKeys {
    TrustedKeys::from_secret_data(&secret(signers)).unwrap()
}

fn open(repo: &Path) -> LocalRepository {
    LocalRepository::open(repo.to_str().unwrap()).unwrap()
}

fn resolve(repo: &LocalRepository, reference: GitReference) -> Revision {
    repo.resolve(&reference).unwrap()
}

fn verify_branch(dir: &Path, mode: VerifyMode, keys: &TrustedKeys) -> Result<String, VerifyError> {
    let repo = open(dir);
    let revision = resolve(&repo, GitReference::Branch("main".into()));
    verify_revision(&repo, &revision, None, mode, keys).map(|v| v.signer)
}

fn verify_tag(dir: &Path, tag: &str, mode: VerifyMode, keys: &TrustedKeys) -> Result<String, VerifyError> {
    let repo = open(dir);
    let revision = resolve(&repo, GitReference::Tag(tag.into()));
    verify_revision(&repo, &revision, Some(tag), mode, keys).map(|v| v.signer)
}

/// Adds a commit signed by `signer` on main; returns its id.
fn signed_commit(dir: &Path, signer: &Signer, message: &str) -> String {
    signer.git(dir, &["commit", "-q", "--allow-empty", "-S", "-m", message]);
    support::git(dir, &["rev-parse", "HEAD"])
}

/// Rewrites `object` (a commit or tag) with `from` replaced by `to` in its text, keeping the
/// signature; returns the new object's id.
fn tamper(dir: &Path, kind: &str, object: &str, from: &str, to: &str) -> String {
    let text = support::git(dir, &["cat-file", kind, object]);
    assert!(text.contains(from), "{text}");
    let forged = dir.join("forged-object");
    std::fs::write(&forged, format!("{}\n", text.replacen(from, to, 1))).unwrap();
    let id = support::git(dir, &["hash-object", "-t", kind, "-w", forged.to_str().unwrap()]);
    std::fs::remove_file(&forged).unwrap();
    id
}

fn expect_err(result: Result<String, VerifyError>) -> VerifyError {
    match result {
        Ok(signer) => panic!("verification passed (signed by {signer}) but must be refused"),
        Err(e) => e,
    }
}

// ----- commits (mode HEAD) -----

fn signed_commit_is_accepted(kind: Kind) {
    let signer = Signer::new(kind);
    let (repo, _) = support::example_repo();
    let commit = signed_commit(repo.path(), &signer, "signed");
    let by = verify_branch(repo.path(), VerifyMode::Head, &keys(&[&signer])).unwrap();
    assert!(by.contains(&format!("commit {}", &commit[..12])), "{by}");
    assert!(by.contains(&signer.id), "{by} names {}", signer.id);
}

#[test]
fn pgp_signed_commit_is_accepted() {
    signed_commit_is_accepted(Kind::Pgp);
}

#[test]
fn ssh_signed_commit_is_accepted() {
    signed_commit_is_accepted(Kind::Ssh);
}

fn unsigned_commit_is_refused(kind: Kind) {
    let signer = Signer::new(kind);
    let (repo, commit) = support::example_repo();
    let err = expect_err(verify_branch(repo.path(), VerifyMode::Head, &keys(&[&signer])));
    assert!(
        matches!(&err, VerifyError::Unsigned { what } if what.contains(&commit[..12])),
        "{err:?}"
    );
    assert_eq!(err.reason(), "unsigned");
    assert!(err.to_string().contains("is not signed"), "{err}");
}

#[test]
fn pgp_unsigned_commit_is_refused() {
    unsigned_commit_is_refused(Kind::Pgp);
}

#[test]
fn ssh_unsigned_commit_is_refused() {
    unsigned_commit_is_refused(Kind::Ssh);
}

fn commit_by_unknown_key_is_refused(kind: Kind) {
    let stranger = Signer::new(kind);
    let trusted = Signer::new(kind);
    let (repo, _) = support::example_repo();
    signed_commit(repo.path(), &stranger, "signed by a stranger");
    let err = expect_err(verify_branch(repo.path(), VerifyMode::Head, &keys(&[&trusted])));
    assert!(
        matches!(&err, VerifyError::UnknownKey { key_id, .. } if key_id.contains(&stranger.id)),
        "{err:?}"
    );
    assert_eq!(err.reason(), "unknown_key");
    let message = err.to_string();
    assert!(message.contains("not among the trusted keys"), "{message}");
    // The message names the key by fingerprint only.
    let longest = stranger.public.split_whitespace().max_by_key(|t| t.len()).unwrap();
    let material: String = longest.chars().skip(20).take(20).collect();
    assert_eq!(material.len(), 20);
    assert!(!message.contains(&material), "{message}");
}

#[test]
fn pgp_commit_by_unknown_key_is_refused() {
    commit_by_unknown_key_is_refused(Kind::Pgp);
}

#[test]
fn ssh_commit_by_unknown_key_is_refused() {
    commit_by_unknown_key_is_refused(Kind::Ssh);
}

fn tampered_commit_is_refused(kind: Kind) {
    let signer = Signer::new(kind);
    let (repo, _) = support::example_repo();
    let commit = signed_commit(repo.path(), &signer, "replicas: 2");
    let forged = tamper(repo.path(), "commit", &commit, "replicas: 2", "replicas: 200");
    assert_ne!(forged, commit);
    support::git(repo.path(), &["update-ref", "refs/heads/main", &forged]);
    let err = expect_err(verify_branch(repo.path(), VerifyMode::Head, &keys(&[&signer])));
    assert!(matches!(err, VerifyError::BadSignature { .. }), "{err:?}");
    assert_eq!(err.reason(), "bad_signature");
    assert!(err.to_string().contains("changed after signing"), "{err}");
}

#[test]
fn pgp_tampered_commit_is_refused() {
    tampered_commit_is_refused(Kind::Pgp);
}

#[test]
fn ssh_tampered_commit_is_refused() {
    tampered_commit_is_refused(Kind::Ssh);
}

// ----- tags (mode Tag) -----

fn signed_tag_is_accepted(kind: Kind) {
    let signer = Signer::new(kind);
    let (repo, _) = support::example_repo();
    // The commit itself is unsigned: mode Tag checks the tag only.
    signer.git(repo.path(), &["tag", "-s", "-m", "release 2", "v2"]);
    let keys = keys(&[&signer]);
    let by = verify_tag(repo.path(), "v2", VerifyMode::Tag, &keys).unwrap();
    assert!(by.starts_with("tag \"v2\" signed by"), "{by}");
    assert!(by.contains(&signer.id), "{by}");
    // The full reference name works too.
    let repository = open(repo.path());
    let revision = resolve(&repository, GitReference::Tag("v2".into()));
    verify_revision(&repository, &revision, Some("refs/tags/v2"), VerifyMode::Tag, &keys).unwrap();
}

#[test]
fn pgp_signed_tag_is_accepted_in_mode_tag() {
    signed_tag_is_accepted(Kind::Pgp);
}

#[test]
fn ssh_signed_tag_is_accepted_in_mode_tag() {
    signed_tag_is_accepted(Kind::Ssh);
}

fn unsigned_tags_are_refused(kind: Kind) {
    let signer = Signer::new(kind);
    let (repo, _) = support::example_repo();
    let keys = keys(&[&signer]);
    // example_repo tags v1 lightweight.
    let err = expect_err(verify_tag(repo.path(), "v1", VerifyMode::Tag, &keys));
    assert!(
        matches!(&err, VerifyError::Unsigned { what } if what == "lightweight tag \"v1\""),
        "{err:?}"
    );
    // An annotated tag without a signature.
    support::git(repo.path(), &["tag", "-a", "-m", "release 3", "v3"]);
    let err = expect_err(verify_tag(repo.path(), "v3", VerifyMode::Tag, &keys));
    assert!(
        matches!(&err, VerifyError::Unsigned { what } if what == "tag \"v3\""),
        "{err:?}"
    );
    // A signed tag by a key that is not trusted.
    let stranger = Signer::new(kind);
    stranger.git(repo.path(), &["tag", "-s", "-m", "release 4", "v4"]);
    let err = expect_err(verify_tag(repo.path(), "v4", VerifyMode::Tag, &keys));
    assert!(
        matches!(&err, VerifyError::UnknownKey { key_id, .. } if key_id.contains(&stranger.id)),
        "{err:?}"
    );
}

#[test]
fn pgp_lightweight_unsigned_and_untrusted_tags_are_refused() {
    unsigned_tags_are_refused(Kind::Pgp);
}

#[test]
fn ssh_lightweight_unsigned_and_untrusted_tags_are_refused() {
    unsigned_tags_are_refused(Kind::Ssh);
}

fn tampered_tag_is_refused(kind: Kind) {
    let signer = Signer::new(kind);
    let (repo, _) = support::example_repo();
    signer.git(repo.path(), &["tag", "-s", "-m", "reviewed release", "v2"]);
    let tag = support::git(repo.path(), &["rev-parse", "refs/tags/v2"]);
    let forged = tamper(repo.path(), "tag", &tag, "reviewed release", "unreviewed release");
    support::git(repo.path(), &["update-ref", "refs/tags/v2", &forged]);
    let err = expect_err(verify_tag(repo.path(), "v2", VerifyMode::Tag, &keys(&[&signer])));
    assert!(matches!(err, VerifyError::BadSignature { .. }), "{err:?}");
    assert!(err.to_string().contains("changed after signing"), "{err}");
}

#[test]
fn pgp_tampered_tag_is_refused() {
    tampered_tag_is_refused(Kind::Pgp);
}

#[test]
fn ssh_tampered_tag_is_refused() {
    tampered_tag_is_refused(Kind::Ssh);
}

#[test]
fn a_signed_tag_published_under_another_name_is_refused() {
    let signer = Signer::new(Kind::Ssh);
    let (repo, _) = support::example_repo();
    signer.git(repo.path(), &["tag", "-s", "-m", "old release", "v0.1.0"]);
    let tag = support::git(repo.path(), &["rev-parse", "refs/tags/v0.1.0"]);
    support::git(repo.path(), &["update-ref", "refs/tags/v2.0.0", &tag]);
    let err = expect_err(verify_tag(repo.path(), "v2.0.0", VerifyMode::Tag, &keys(&[&signer])));
    assert!(matches!(err, VerifyError::BadSignature { .. }), "{err:?}");
    assert!(err.to_string().contains("named \"v0.1.0\""), "{err}");
}

#[test]
fn a_tag_that_moved_since_resolving_is_refused() {
    let signer = Signer::new(Kind::Ssh);
    let (repo, _) = support::example_repo();
    signer.git(repo.path(), &["tag", "-s", "-m", "release", "v2"]);
    let repository = open(repo.path());
    let revision = resolve(&repository, GitReference::Tag("v2".into()));
    signed_commit(repo.path(), &signer, "next");
    signer.git(repo.path(), &["tag", "-f", "-s", "-m", "release again", "v2"]);
    let err = verify_revision(&repository, &revision, Some("v2"), VerifyMode::Tag, &keys(&[&signer])).unwrap_err();
    assert!(matches!(err, VerifyError::TagMoved { .. }), "{err:?}");
    assert_eq!(err.reason(), "tag_moved");
}

#[test]
fn tag_modes_on_a_branch_are_not_a_tag() {
    let signer = Signer::new(Kind::Ssh);
    let (repo, _) = support::example_repo();
    signed_commit(repo.path(), &signer, "signed");
    for mode in [VerifyMode::Tag, VerifyMode::TagAndHead] {
        let err = expect_err(verify_branch(repo.path(), mode, &keys(&[&signer])));
        assert!(matches!(err, VerifyError::NotATag { .. }), "{err:?}");
        assert_eq!(err.reason(), "not_a_tag");
        assert!(err.to_string().contains("verify.mode HEAD"), "{err}");
    }
}

// ----- both (mode TagAndHEAD) -----

fn tag_and_head_needs_both(kind: Kind) {
    let signer = Signer::new(kind);
    let (repo, _) = support::example_repo();
    let keys = keys(&[&signer]);
    // A signed tag on the unsigned example commit: the commit fails.
    signer.git(repo.path(), &["tag", "-s", "-m", "release 2", "v2"]);
    let err = expect_err(verify_tag(repo.path(), "v2", VerifyMode::TagAndHead, &keys));
    assert!(
        matches!(&err, VerifyError::Unsigned { what } if what.starts_with("commit ")),
        "{err:?}"
    );
    // An unsigned annotated tag on a signed commit: the tag fails.
    let commit = signed_commit(repo.path(), &signer, "signed");
    support::git(repo.path(), &["tag", "-a", "-m", "release 3", "v3"]);
    let err = expect_err(verify_tag(repo.path(), "v3", VerifyMode::TagAndHead, &keys));
    assert!(
        matches!(&err, VerifyError::Unsigned { what } if what == "tag \"v3\""),
        "{err:?}"
    );
    // Both signed: accepted, naming both.
    signer.git(repo.path(), &["tag", "-s", "-m", "release 4", "v4"]);
    let by = verify_tag(repo.path(), "v4", VerifyMode::TagAndHead, &keys).unwrap();
    assert!(by.contains("tag \"v4\" signed by"), "{by}");
    assert!(by.contains(&format!("commit {} signed by", &commit[..12])), "{by}");
    // Mode HEAD on the tag checks the commit only.
    verify_tag(repo.path(), "v3", VerifyMode::Head, &keys).unwrap();
}

#[test]
fn pgp_tag_and_head_needs_both() {
    tag_and_head_needs_both(Kind::Pgp);
}

#[test]
fn ssh_tag_and_head_needs_both() {
    tag_and_head_needs_both(Kind::Ssh);
}

#[test]
fn mixed_keys_verify_a_pgp_tag_on_an_ssh_commit() {
    let pgp = Signer::new(Kind::Pgp);
    let ssh = Signer::new(Kind::Ssh);
    let (repo, _) = support::example_repo();
    signed_commit(repo.path(), &ssh, "signed with ssh");
    pgp.git(repo.path(), &["tag", "-s", "-m", "signed with gpg", "v2"]);
    // One Secret, one value holding both kinds, as an operator might paste them.
    let mut data = BTreeMap::new();
    data.insert(
        "team".to_owned(),
        format!("{}\n{}", pgp.public, ssh.public).into_bytes(),
    );
    let keys = TrustedKeys::from_secret_data(&data).unwrap();
    let by = verify_tag(repo.path(), "v2", VerifyMode::TagAndHead, &keys).unwrap();
    assert!(by.contains(&pgp.id) && by.contains(&ssh.id), "{by}");
    // Each key alone is not enough.
    for only in [&pgp, &ssh] {
        let err = expect_err(verify_tag(
            repo.path(),
            "v2",
            VerifyMode::TagAndHead,
            &only.secret_keys(),
        ));
        assert!(matches!(err, VerifyError::UnknownKey { .. }), "{err:?}");
    }
}

#[test]
fn an_empty_secret_refuses_everything() {
    let signer = Signer::new(Kind::Ssh);
    let (repo, _) = support::example_repo();
    signed_commit(repo.path(), &signer, "signed");
    let keys = TrustedKeys::from_secret_data(&BTreeMap::new()).unwrap();
    assert!(keys.is_empty());
    let err = expect_err(verify_branch(repo.path(), VerifyMode::Head, &keys));
    assert!(matches!(err, VerifyError::UnknownKey { .. }), "{err:?}");
}

#[test]
fn the_gitsource_spec_takes_the_verify_modes() {
    for mode in ["HEAD", "Tag", "TagAndHEAD"] {
        let spec: driftguard::api::GitSourceSpec = serde_json::from_value(serde_json::json!({
            "url": "https://git.example.com/platform.git",
            "ref": { "tag": "v1" },
            "verify": { "mode": mode, "secretRef": { "name": "trusted-keys" } },
        }))
        .unwrap();
        assert_eq!(spec.verify.unwrap().mode.as_str(), mode);
    }
    let err = serde_json::from_value::<driftguard::api::GitSourceSpec>(serde_json::json!({
        "url": "https://git.example.com/platform.git",
        "verify": { "mode": "both", "secretRef": { "name": "trusted-keys" } },
    }))
    .unwrap_err();
    assert!(err.to_string().contains("unknown variant"), "{err}");
}

#[test]
fn a_standalone_config_with_verify_parses() {
    let text = r#"
sources:
  - name: platform
    url: /srv/git/platform
    ref: { semver: ">=1.0.0" }
    verify: { mode: TagAndHEAD, secretRef: { name: release-keys } }
guards:
  - name: apps
    sourceRef: { name: platform }
    path: clusters/prod
"#;
    let file = driftguard::config::ConfigFile::parse(text, "test").unwrap();
    let verify = file.sources[0].spec.verify.as_ref().unwrap();
    assert_eq!(verify.mode, VerifyMode::TagAndHead);
    assert_eq!(verify.secret_ref.name, "release-keys");
    let err = driftguard::config::ConfigFile::parse(&text.replace("TagAndHEAD", "tagandhead"), "test").unwrap_err();
    assert!(err.to_string().contains("tagandhead"), "{err}");
}
