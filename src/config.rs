//! Typed settings: a YAML config file (or the embedded default) plus command-line overrides,
//! validated once at start so nothing downstream handles half-checked strings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::admission::service_account_username;
use crate::api::{GitRefSpec, GitSourceSpec, GoDuration, GuardSpec, Mode, SourceReference};
use crate::audit::{AuditConfig, FsyncPolicy};
use crate::desired::{DesiredError, GuardId, GuardPolicy, SourceSettings};
use crate::reconcile::selfheal::HealSettings;
use crate::reconcile::tenancy::TenancySettings;
use crate::source::{GitReference, LinkTemplate};

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {error}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        error: std::io::Error,
    },
    /// The YAML does not match the schema.
    #[error("config file {path}: {error}")]
    Parse {
        /// File.
        path: String,
        /// Cause, with line and column.
        error: String,
    },
    /// A value is out of range or inconsistent.
    #[error("config: {0}")]
    Invalid(String),
    /// An ignore rule does not compile.
    #[error("config: {0}")]
    Guard(#[from] DesiredError),
}

/// TLS material for the webhook port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsFile {
    /// PEM certificate chain (reloaded when it changes).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key (reloaded when it changes).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Generate a development CA and serving certificate here when no files are given.
    #[serde(default)]
    pub dev_certs_dir: Option<PathBuf>,
    /// Cluster mode: keep the CA and serving certificate in a Secret and inject the CA into
    /// the webhook configurations (the chart's `certs.mode: self`).
    #[serde(default)]
    pub managed: Option<ManagedTlsFile>,
    /// PEM CA bundle of the client certificates kube-apiserver presents to webhooks (its
    /// AdmissionConfiguration kubeConfigFile): when set, `/validate` and `/mutate` answer only
    /// callers with a certificate from it (401 otherwise); probes stay open.
    #[serde(default, rename = "clientCAFile")]
    pub client_ca_file: Option<PathBuf>,
}

/// `server.tls.managed:` self-managed certificates.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManagedTlsFile {
    /// The Secret (in driftguard's namespace) holding `ca.crt`, `ca.key`, `tls.crt`, `tls.key`.
    #[serde(default = "default_managed_secret")]
    pub secret_name: String,
    /// The Service kube-apiserver calls; the certificate is valid for its DNS names.
    #[serde(default = "default_managed_name")]
    pub service_name: String,
    /// Name of both the Validating- and the MutatingWebhookConfiguration to inject into.
    #[serde(default = "default_managed_name")]
    pub webhook_configuration: String,
    /// Lifetime of a new CA (default 10 years).
    #[serde(default = "default_ca_validity")]
    pub ca_validity: GoDuration,
    /// Lifetime of a new serving certificate (default 1 year).
    #[serde(default = "default_serving_validity")]
    pub serving_validity: GoDuration,
    /// Renew a certificate this long before it expires (default 30 days).
    #[serde(default = "default_renew_before")]
    pub renew_before: GoDuration,
    /// After a CA rotation, how long both CAs are trusted before the serving certificate moves
    /// to the new one (default 2m).
    #[serde(default = "default_ca_overlap")]
    pub ca_overlap: GoDuration,
    /// How often the leader checks the Secret and the caBundles with nothing changed (default 1m).
    #[serde(default = "default_check_interval")]
    pub check_interval: GoDuration,
}

fn default_managed_secret() -> String {
    "driftguard-tls".to_owned()
}
fn default_managed_name() -> String {
    "driftguard".to_owned()
}
fn default_ca_validity() -> GoDuration {
    GoDuration(crate::certs::DEFAULT_CA_VALIDITY)
}
fn default_serving_validity() -> GoDuration {
    GoDuration(crate::certs::DEFAULT_SERVING_VALIDITY)
}
fn default_renew_before() -> GoDuration {
    GoDuration(Duration::from_secs(30 * 24 * 3600))
}
fn default_ca_overlap() -> GoDuration {
    GoDuration(Duration::from_secs(120))
}
fn default_check_interval() -> GoDuration {
    GoDuration(Duration::from_secs(60))
}

/// Validated `server.tls.managed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedTls {
    /// Secret name (namespace: the cluster's lease namespace, driftguard's own).
    pub secret_name: String,
    /// Service name.
    pub service_name: String,
    /// Webhook configurations' name.
    pub webhook_configuration: String,
    /// CA lifetime.
    pub ca_validity: Duration,
    /// Serving lifetime.
    pub serving_validity: Duration,
    /// Renewal margin.
    pub renew_before: Duration,
    /// CA overlap.
    pub ca_overlap: Duration,
    /// Leader's check period.
    pub check_interval: Duration,
}

impl ManagedTlsFile {
    fn validate(self) -> Result<ManagedTls, ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(format!("server.tls.managed: {m}")));
        for (field, value) in [
            ("secretName", &self.secret_name),
            ("serviceName", &self.service_name),
            ("webhookConfiguration", &self.webhook_configuration),
        ] {
            if value.is_empty() {
                return invalid(format!("{field} must not be empty"));
            }
        }
        let (ca, serving, renew) = (self.ca_validity.0, self.serving_validity.0, self.renew_before.0);
        // A margin as long as a lifetime would renew on every check.
        if renew.is_zero() || renew >= serving || renew >= ca {
            return invalid(format!(
                "renewBefore ({renew:?}) must be positive and shorter than servingValidity ({serving:?}) and caValidity ({ca:?})"
            ));
        }
        if self.check_interval.0 < Duration::from_millis(100) {
            return invalid("checkInterval must be at least 100ms".to_owned());
        }
        Ok(ManagedTls {
            secret_name: self.secret_name,
            service_name: self.service_name,
            webhook_configuration: self.webhook_configuration,
            ca_validity: ca,
            serving_validity: serving,
            renew_before: renew,
            ca_overlap: self.ca_overlap.0,
            check_interval: self.check_interval.0,
        })
    }
}

/// `server:` section of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerFile {
    /// HTTPS address of the webhook.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Plain-HTTP address of `/metrics`; none disables it.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: Option<SocketAddr>,
    /// Certificates.
    #[serde(default)]
    pub tls: TlsFile,
    /// How often certificate files are re-read.
    #[serde(default = "default_reload")]
    pub reload_interval: GoDuration,
    /// Largest accepted review body.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Reviews decided at once; more wait briefly, then get 503.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How long shutdown waits for in-flight requests.
    #[serde(default = "default_grace")]
    pub shutdown_grace: GoDuration,
    /// How long, once shutdown starts, `/readyz` answers 503 while everything is still served
    /// (so endpoints drop the pod before it stops accepting); at most 5m.
    #[serde(default = "default_drain_delay")]
    pub drain_delay: GoDuration,
    /// Plain-HTTP address of the push receiver (`POST /hooks/<namespace>/<source>`); none
    /// (the default) disables it. Put an Ingress with TLS in front of it.
    #[serde(default)]
    pub hooks_listen: Option<SocketAddr>,
    /// Standalone mode: directory of receiver secrets, one folder per `receiver.secretRef.name`
    /// holding a file `token` (the layout of a mounted Secret); relative to the config file.
    #[serde(default)]
    pub hooks_secrets_dir: Option<PathBuf>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}
fn default_metrics_listen() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 9090)))
}
fn default_reload() -> GoDuration {
    GoDuration(Duration::from_secs(5))
}
fn default_max_body() -> usize {
    8 * 1024 * 1024
}
fn default_max_in_flight() -> usize {
    64
}
fn default_grace() -> GoDuration {
    GoDuration(Duration::from_secs(20))
}
fn default_drain_delay() -> GoDuration {
    GoDuration(crate::server::DEFAULT_DRAIN_DELAY)
}

impl Default for ServerFile {
    fn default() -> Self {
        ServerFile {
            listen: default_listen(),
            metrics_listen: default_metrics_listen(),
            tls: TlsFile::default(),
            reload_interval: default_reload(),
            max_body_bytes: default_max_body(),
            max_in_flight: default_max_in_flight(),
            shutdown_grace: default_grace(),
            drain_delay: default_drain_delay(),
            hooks_listen: None,
            hooks_secrets_dir: None,
        }
    }
}

/// A named GitSource entry: `name`, `namespace` and the CRD spec fields side by side.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "serde_json::Map<String, serde_json::Value>")]
pub struct SourceEntry {
    /// Name.
    pub name: String,
    /// Namespace (default `default`).
    pub namespace: String,
    /// The CRD spec fields.
    pub spec: GitSourceSpec,
}

/// A named Guard entry: `name`, `namespace` and the CRD spec fields side by side.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "serde_json::Map<String, serde_json::Value>")]
pub struct GuardEntry {
    /// Name.
    pub name: String,
    /// Namespace (default `default`).
    pub namespace: String,
    /// The CRD spec fields.
    pub spec: GuardSpec,
}

/// Split `name`/`namespace` off an entry and read the rest strictly as a spec. (serde's
/// `flatten` would silently accept misspelled spec fields.)
fn split_entry<S: serde::de::DeserializeOwned>(
    what: &str,
    mut map: serde_json::Map<String, serde_json::Value>,
) -> Result<(String, String, S), String> {
    let text = |v: Option<serde_json::Value>, field: &str| -> Result<Option<String>, String> {
        match v {
            None => Ok(None),
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(Some(s)),
            Some(other) => Err(format!("{what} {field} must be a non-empty string, got {other}")),
        }
    };
    let name = text(map.remove("name"), "name")?.ok_or_else(|| format!("a {what} entry has no name"))?;
    let namespace = text(map.remove("namespace"), "namespace")?.unwrap_or_else(default_namespace);
    let spec = serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| format!("{what} {namespace}/{name}: {e}"))?;
    Ok((name, namespace, spec))
}

impl TryFrom<serde_json::Map<String, serde_json::Value>> for SourceEntry {
    type Error = String;
    fn try_from(map: serde_json::Map<String, serde_json::Value>) -> Result<Self, String> {
        let (name, namespace, spec) = split_entry("source", map)?;
        Ok(SourceEntry { name, namespace, spec })
    }
}

impl TryFrom<serde_json::Map<String, serde_json::Value>> for GuardEntry {
    type Error = String;
    fn try_from(map: serde_json::Map<String, serde_json::Value>) -> Result<Self, String> {
        let (name, namespace, spec) = split_entry("guard", map)?;
        Ok(GuardEntry { name, namespace, spec })
    }
}

fn default_namespace() -> String {
    "default".to_owned()
}

fn default_service_account() -> String {
    "driftguard/driftguard".to_owned()
}

/// Where mirrors of remote GitSources live unless `gitCacheDir` says otherwise. Keep it on a
/// persistent volume to fetch incrementally across restarts.
pub fn default_git_cache_dir() -> PathBuf {
    std::env::temp_dir().join("driftguard-git")
}

fn default_cache_bytes() -> u64 {
    256 * 1024 * 1024
}

/// `cluster.selfHeal:` when a writer counts as fighting.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelfHealFile {
    /// More than this many corrections against one writer within `window` is a fight.
    #[serde(default = "default_max_flips")]
    pub max_flips: usize,
    /// The window flips are counted in.
    #[serde(default = "default_flip_window")]
    pub window: GoDuration,
}

fn default_max_flips() -> usize {
    HealSettings::default().max_flips
}
fn default_flip_window() -> GoDuration {
    GoDuration(HealSettings::default().window)
}

impl Default for SelfHealFile {
    fn default() -> Self {
        SelfHealFile {
            max_flips: default_max_flips(),
            window: default_flip_window(),
        }
    }
}

/// `cluster:` section: enforce against a Kubernetes cluster, with Guards and GitSources from
/// its API instead of this file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterFile {
    /// kubeconfig file; default: `KUBECONFIG`, `~/.kube/config`, or the in-cluster config.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the leader Lease; default `POD_NAMESPACE`, else the service account's.
    #[serde(default)]
    pub lease_namespace: Option<String>,
    /// Name of the leader Lease.
    #[serde(default)]
    pub lease_name: Option<String>,
    /// How long a leader's Lease lasts without renewal.
    #[serde(default)]
    pub lease_duration: Option<GoDuration>,
    /// This replica's name in the Lease and Events; default `POD_NAME`, else host and pid.
    #[serde(default)]
    pub identity: Option<String>,
    /// Bound on every single API read or write of the enforcer.
    #[serde(default)]
    pub api_timeout: Option<GoDuration>,
    /// Fight detection.
    #[serde(default)]
    pub self_heal: SelfHealFile,
    /// Multi-tenancy lockdown (README "Multi-tenancy").
    #[serde(default)]
    pub tenancy: TenancyFile,
}

/// `cluster.tenancy:` who Guards act as, and which references they may make.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenancyFile {
    /// Service account (in the Guard's namespace) of Guards without `serviceAccountName`:
    /// lockdown. Omitted: such Guards act as driftguard itself.
    #[serde(default)]
    pub default_service_account: Option<String>,
    /// Namespaces whose Guards without `serviceAccountName` act as driftguard itself.
    #[serde(default)]
    pub privileged_namespaces: Vec<String>,
    /// Refuse every GitSource reference across namespaces.
    #[serde(default)]
    pub no_cross_namespace_refs: bool,
}

/// The config file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigFile {
    /// Enforce against a cluster (Guards come from its API).
    #[serde(default)]
    pub cluster: Option<ClusterFile>,
    /// Webhook server.
    #[serde(default)]
    pub server: ServerFile,
    /// driftguard's own service account (`namespace/name`); its writes are exempt.
    #[serde(default = "default_service_account")]
    pub service_account: String,
    /// Bound on cached desired state, in bytes.
    #[serde(default = "default_cache_bytes")]
    pub desired_cache_bytes: u64,
    /// Mirrors of remote repositories (default: `driftguard-git` in the temp directory).
    #[serde(default)]
    pub git_cache_dir: Option<PathBuf>,
    /// Standalone: credentials and trusted keys, one directory per `secretRef.name` holding a
    /// file per Secret key (as a mounted Secret looks).
    #[serde(default)]
    pub secrets_dir: Option<PathBuf>,
    /// GitSources (standalone mode).
    #[serde(default)]
    pub sources: Vec<SourceEntry>,
    /// Guards (standalone mode).
    #[serde(default)]
    pub guards: Vec<GuardEntry>,
    /// Audit log.
    #[serde(default)]
    pub audit: AuditFile,
}

/// `audit:` section of the config file. Events always go to stdout; with `file` they are also
/// appended to that file, rotated by size (`audit.log` → `audit.log.1` ... `audit.log.<keepFiles>`),
/// as one hash chain (see `driftguard::audit::chain`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditFile {
    /// Append-only audit file (relative to the config file's directory); none: stdout only.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Rotate before a record would take the file over this size (default 100 MiB, at least 1024).
    #[serde(default)]
    pub max_file_bytes: Option<u64>,
    /// Rotated files kept (default 10).
    #[serde(default)]
    pub keep_files: Option<usize>,
    /// `always` (fsync after each record) or a duration such as `1s` or `200ms` (at most that
    /// long after a record; default 1s).
    #[serde(default)]
    pub fsync: Option<String>,
    /// Events that may wait for the writer before further ones are dropped (default 16384).
    #[serde(default)]
    pub queue_capacity: Option<usize>,
    /// Bytes of records kept in memory for the file while it cannot be written (disk full);
    /// past this, records are dropped from the file only (default 64 MiB, at least 64 KiB).
    #[serde(default)]
    pub file_backlog_bytes: Option<u64>,
    /// How often each replica appends a signed digest (and at shutdown): a Go duration,
    /// default 5m, at least 100ms.
    #[serde(default)]
    pub digest_interval: Option<GoDuration>,
    /// Standalone: the Ed25519 signing key (PKCS#8 PEM), generated with mode 0600 when missing
    /// (default `audit-signing.key` beside the config file; `*.key` is git-ignored). Cluster
    /// mode uses the Secret below instead.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    /// Cluster mode: the Secret holding the signing key (created by the leader).
    #[serde(default)]
    pub signing_key_secret: Option<String>,
    /// Cluster mode: the ConfigMap publishing the public keys (old ones kept).
    #[serde(default)]
    pub public_keys_config_map: Option<String>,
    /// Cluster mode: name prefix of the per-replica anchor ConfigMaps.
    #[serde(default)]
    pub anchors_config_map_prefix: Option<String>,
}

/// Where the audit digests are signed and anchored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSigning {
    /// Standalone: the key file.
    pub key_file: PathBuf,
    /// Cluster mode: the key Secret.
    pub key_secret: String,
    /// Cluster mode: the public key ConfigMap.
    pub keys_config_map: String,
    /// Cluster mode: the anchor ConfigMaps' prefix.
    pub anchors_prefix: String,
}

impl AuditFile {
    /// Validate into sink settings; `file` is resolved against `base_dir`.
    pub fn validate(&self, base_dir: &Path) -> Result<AuditConfig, ConfigError> {
        let defaults = AuditConfig::default();
        let max_file_bytes = self.max_file_bytes.unwrap_or(defaults.max_file_bytes);
        if max_file_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "audit.maxFileBytes must be at least 1024".to_owned(),
            ));
        }
        let fsync = match self.fsync.as_deref().map(str::trim) {
            None => defaults.fsync,
            Some("always") => FsyncPolicy::Always,
            Some(text) => {
                let every = GoDuration::parse(text)
                    .map_err(|e| ConfigError::Invalid(format!("audit.fsync must be `always` or a duration: {e}")))?;
                if every.0.is_zero() {
                    FsyncPolicy::Always
                } else {
                    FsyncPolicy::Every(every.0)
                }
            }
        };
        let queue_capacity = self.queue_capacity.unwrap_or(defaults.queue_capacity);
        if queue_capacity == 0 {
            return Err(ConfigError::Invalid(
                "audit.queueCapacity must be at least 1".to_owned(),
            ));
        }
        let file_backlog_bytes = self.file_backlog_bytes.unwrap_or(defaults.file_backlog_bytes);
        if file_backlog_bytes < 64 * 1024 {
            return Err(ConfigError::Invalid(
                "audit.fileBacklogBytes must be at least 65536".to_owned(),
            ));
        }
        let digest_interval = self.digest_interval.as_ref().map_or(defaults.digest_interval, |d| d.0);
        if digest_interval < Duration::from_millis(100) {
            return Err(ConfigError::Invalid(
                "audit.digestInterval must be at least 100ms".to_owned(),
            ));
        }
        Ok(AuditConfig {
            file: self.file.as_ref().map(|f| base_dir.join(f)),
            max_file_bytes,
            keep_files: self.keep_files.unwrap_or(defaults.keep_files),
            fsync,
            queue_capacity,
            file_backlog_bytes,
            digest_interval,
        })
    }

    /// Where digests are signed and anchored; the key file is resolved against `base_dir`.
    pub fn signing(&self, base_dir: &Path) -> AuditSigning {
        use crate::audit::cluster::{DEFAULT_ANCHORS_PREFIX, DEFAULT_KEY_SECRET, DEFAULT_KEYS_CONFIG_MAP};
        AuditSigning {
            key_file: base_dir.join(
                self.signing_key_file
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("audit-signing.key")),
            ),
            key_secret: self
                .signing_key_secret
                .clone()
                .unwrap_or_else(|| DEFAULT_KEY_SECRET.to_owned()),
            keys_config_map: self
                .public_keys_config_map
                .clone()
                .unwrap_or_else(|| DEFAULT_KEYS_CONFIG_MAP.to_owned()),
            anchors_prefix: self
                .anchors_config_map_prefix
                .clone()
                .unwrap_or_else(|| DEFAULT_ANCHORS_PREFIX.to_owned()),
        }
    }
}

/// How the webhook gets its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// Files provisioned by someone else (cert-manager, a Secret mount).
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
    /// A development CA and certificate generated into this directory.
    Dev(PathBuf),
    /// Cluster mode: a Secret the leader keeps, followed by every replica.
    Managed(ManagedTls),
}

/// Validated server settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// HTTPS address.
    pub listen: SocketAddr,
    /// Metrics address.
    pub metrics_listen: Option<SocketAddr>,
    /// Certificates.
    pub tls: TlsSource,
    /// Certificate re-read period.
    pub reload_interval: Duration,
    /// Body limit.
    pub max_body_bytes: usize,
    /// Concurrency bound.
    pub max_in_flight: usize,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
    /// Not-ready-but-serving time before the listener closes.
    pub drain_delay: Duration,
    /// CA of the callers allowed on the webhook routes (None: no client authentication).
    pub client_ca_file: Option<PathBuf>,
    /// Push receiver address (None: disabled).
    pub hooks_listen: Option<SocketAddr>,
}

/// A validated GitSource.
#[derive(Debug, Clone)]
pub struct Source {
    /// Where and what.
    pub settings: SourceSettings,
    /// Fetch period.
    pub interval: Duration,
    /// Standalone push receiver: the file holding the shared secret (None: no receiver).
    pub receiver_secret: Option<PathBuf>,
    /// `<secretsDir>/<secretRef.name>`: one file per credential key (None: anonymous).
    pub credentials_dir: Option<PathBuf>,
    /// Signature policy: what must be signed, and `<secretsDir>/<verify.secretRef.name>` with
    /// the trusted keys.
    pub verify: Option<(crate::api::VerifyMode, PathBuf)>,
    /// Bound on one fetch.
    pub timeout: Duration,
}

/// A validated Guard and its source.
#[derive(Debug, Clone)]
pub struct Guard {
    /// Compiled policy.
    pub policy: Arc<GuardPolicy>,
    /// Position in [`Settings::sources`].
    pub source: usize,
}

/// Validated cluster settings.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// kubeconfig file (None: infer).
    pub kubeconfig: Option<PathBuf>,
    /// Lease namespace.
    pub lease_namespace: String,
    /// Lease name.
    pub lease_name: String,
    /// Lease duration.
    pub lease_duration: Duration,
    /// This replica's identity.
    pub identity: String,
    /// Per-request bound for the enforcer.
    pub api_timeout: Duration,
    /// Fight detection.
    pub self_heal: HealSettings,
    /// Multi-tenancy lockdown.
    pub tenancy: TenancySettings,
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Cluster mode (None: standalone, Guards from this file).
    pub cluster: Option<ClusterSettings>,
    /// Mirrors of remote repositories.
    pub git_cache_dir: PathBuf,
    /// Server.
    pub server: ServerSettings,
    /// driftguard's own username.
    pub own_username: String,
    /// Cache bound in bytes.
    pub desired_cache_bytes: u64,
    /// Sources.
    pub sources: Vec<Source>,
    /// Guards.
    pub guards: Vec<Guard>,
    /// Audit sink.
    pub audit: AuditConfig,
    /// Signed digests: key and anchors.
    pub audit_signing: AuditSigning,
}

/// Command-line overrides (flags and `DRIFTGUARD_*` variables).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--metrics-listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// `--cert-file`.
    pub cert_file: Option<PathBuf>,
    /// `--key-file`.
    pub key_file: Option<PathBuf>,
    /// `--cluster`: enforce against the cluster.
    pub cluster: bool,
    /// `--kubeconfig` (implies `--cluster`).
    pub kubeconfig: Option<PathBuf>,
    /// `--hooks-listen`.
    pub hooks_listen: Option<SocketAddr>,
}

impl ConfigFile {
    /// Parse YAML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            error: e.to_string(),
        })
    }

    /// Read and parse a file.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The embedded default: this repository's `examples/app` at HEAD, denied drift, served on
    /// https://127.0.0.1:8443 with development certificates in `certs/`. No drain delay: no
    /// Service routes to a local try-out, so Ctrl-C stops it at once.
    pub fn embedded_default(repo_root: &Path) -> Self {
        let repo = repo_root.display().to_string();
        let text = format!(
            r#"
server:
  drainDelay: 0s
  tls:
    devCertsDir: {dir:?}
sources:
  - name: driftguard-examples
    url: {repo:?}
guards:
  - name: example-app
    sourceRef: {{ name: driftguard-examples }}
    path: examples/app
    mode: deny
"#,
            dir = repo_root.join("certs").display().to_string(),
        );
        // The text above is a constant shape; a parse failure would be a bug caught by tests.
        Self::parse(&text, "embedded default").unwrap_or_else(|_| ConfigFile {
            cluster: None,
            git_cache_dir: None,
            secrets_dir: None,
            server: ServerFile::default(),
            service_account: default_service_account(),
            desired_cache_bytes: default_cache_bytes(),
            sources: Vec::new(),
            guards: Vec::new(),
            audit: AuditFile::default(),
        })
    }

    /// Cluster mode without a config file: development certificates in `dir` unless
    /// `--cert-file`/`--key-file` are given.
    pub fn cluster_default(dir: &Path) -> Self {
        let mut server = ServerFile::default();
        server.tls.dev_certs_dir = Some(dir.join("certs"));
        ConfigFile {
            cluster: Some(ClusterFile::default()),
            git_cache_dir: None,
            secrets_dir: None,
            server,
            service_account: default_service_account(),
            desired_cache_bytes: default_cache_bytes(),
            sources: Vec::new(),
            guards: Vec::new(),
            audit: AuditFile::default(),
        }
    }

    /// Validate, resolving relative paths against `base_dir`.
    pub fn validate(self, base_dir: &Path, overrides: &Overrides) -> Result<Settings, ConfigError> {
        let server = validate_server(self.server.clone(), base_dir, overrides)?;
        let audit = self.audit.validate(base_dir)?;
        let audit_signing = self.audit.signing(base_dir);
        if self.service_account.split('/').count() != 2 {
            return Err(ConfigError::Invalid(format!(
                "serviceAccount {:?} must be written namespace/name",
                self.service_account
            )));
        }
        let cluster = match (&self.cluster, overrides.cluster || overrides.kubeconfig.is_some()) {
            (None, false) => None,
            (file, _) => Some(self.validate_cluster(file.clone().unwrap_or_default(), base_dir, overrides)?),
        };
        if cluster.is_none() && matches!(server.tls, TlsSource::Managed(_)) {
            return Err(ConfigError::Invalid(
                "server.tls.managed needs cluster mode (a `cluster:` section or --cluster): the certificates live in a Secret".to_owned(),
            ));
        }
        if let Some(cluster) = cluster {
            if !self.sources.is_empty() || !self.guards.is_empty() {
                return Err(ConfigError::Invalid(
                    "in cluster mode GitSources and Guards come from the cluster (kubectl apply them); remove `sources:` and `guards:` from the config file".to_owned(),
                ));
            }
            return Ok(Settings {
                git_cache_dir: self.git_cache_dir_in(base_dir),
                cluster: Some(cluster),
                server,
                own_username: service_account_username(&self.service_account),
                desired_cache_bytes: self.desired_cache_bytes,
                sources: Vec::new(),
                guards: Vec::new(),
                audit,
                audit_signing,
            });
        }
        let mut sources = Vec::with_capacity(self.sources.len());
        let mut source_ids = Vec::with_capacity(self.sources.len());
        let mut source_links = Vec::with_capacity(self.sources.len());
        for entry in &self.sources {
            let id = format!("{}/{}", entry.namespace, entry.name);
            if source_ids.contains(&id) {
                return Err(ConfigError::Invalid(format!("source {id} is declared twice")));
            }
            source_links.push(
                LinkTemplate::for_source(&entry.spec.url, entry.spec.web_url.as_deref())
                    .map_err(|e| ConfigError::Invalid(format!("source {id}: {e}")))?,
            );
            let reference = git_reference(&id, entry.spec.reference.as_ref())?;
            let receiver_secret = receiver_secret_file(&id, entry, &self.server, &server, base_dir)?;
            let secret_dir = |field: &str, name: &str| match &self.secrets_dir {
                Some(dir) => Ok(base_dir.join(dir).join(name)),
                None => Err(ConfigError::Invalid(format!(
                    "source {id}: {field} names {name:?}, so set `secretsDir` (a directory with one subdirectory per secret, one file per key)"
                ))),
            };
            let credentials_dir = match &entry.spec.secret_ref {
                Some(secret) => Some(secret_dir("secretRef", &secret.name)?),
                None => None,
            };
            let verify = match &entry.spec.verify {
                Some(verify) => Some((verify.mode, secret_dir("verify.secretRef", &verify.secret_ref.name)?)),
                None => None,
            };
            sources.push(Source {
                credentials_dir,
                verify,
                timeout: entry.spec.timeout.as_ref().map_or(Duration::from_secs(60), |t| t.0),
                settings: SourceSettings {
                    id: id.clone(),
                    url: resolve_url(&entry.spec.url, base_dir),
                    reference,
                },
                interval: entry.spec.interval.0.max(Duration::from_secs(1)),
                receiver_secret,
            });
            source_ids.push(id);
        }
        let mut guards: Vec<Guard> = Vec::with_capacity(self.guards.len());
        for entry in &self.guards {
            let id = GuardId {
                namespace: entry.namespace.clone(),
                name: entry.name.clone(),
            };
            if guards.iter().any(|g| g.policy.id == id) {
                return Err(ConfigError::Invalid(format!("guard {id} is declared twice")));
            }
            let SourceReference { name, namespace } = &entry.spec.source_ref;
            let source_id = format!("{}/{}", namespace.as_deref().unwrap_or(&entry.namespace), name);
            let source = source_ids.iter().position(|s| *s == source_id).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "guard {id}: sourceRef {source_id} does not name a source; declared sources: {}",
                    if source_ids.is_empty() {
                        "none".to_owned()
                    } else {
                        source_ids.join(", ")
                    }
                ))
            })?;
            let url = self
                .sources
                .get(source)
                .map(|s| s.spec.url.as_str())
                .unwrap_or_default();
            let links = source_links.get(source).cloned().flatten();
            let policy = GuardPolicy::new(id, &entry.spec, url)?.with_links(links);
            guards.push(Guard {
                policy: Arc::new(policy),
                source,
            });
        }
        if guards.is_empty() {
            return Err(ConfigError::Invalid(
                "no guards: declare at least one entry under `guards:` (or run with --cluster)".to_owned(),
            ));
        }
        Ok(Settings {
            git_cache_dir: self.git_cache_dir_in(base_dir),
            cluster: None,
            server,
            own_username: service_account_username(&self.service_account),
            desired_cache_bytes: self.desired_cache_bytes,
            sources,
            guards,
            audit,
            audit_signing,
        })
    }
}

impl ConfigFile {
    fn git_cache_dir_in(&self, base_dir: &Path) -> PathBuf {
        self.git_cache_dir
            .as_ref()
            .map_or_else(default_git_cache_dir, |dir| base_dir.join(dir))
    }

    fn validate_cluster(
        &self,
        file: ClusterFile,
        base_dir: &Path,
        overrides: &Overrides,
    ) -> Result<ClusterSettings, ConfigError> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let own_namespace = self.service_account.split('/').next().unwrap_or("driftguard");
        let lease_duration = file.lease_duration.map_or(Duration::from_secs(15), |d| d.0);
        if lease_duration < Duration::from_secs(1) {
            return Err(ConfigError::Invalid(
                "cluster.leaseDuration must be at least 1s".to_owned(),
            ));
        }
        if file.self_heal.max_flips == 0 {
            return Err(ConfigError::Invalid(
                "cluster.selfHeal.maxFlips must be positive".to_owned(),
            ));
        }
        let identity = file.identity.or_else(|| env("POD_NAME")).unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        });
        Ok(ClusterSettings {
            kubeconfig: overrides
                .kubeconfig
                .clone()
                .or(file.kubeconfig.map(|k| base_dir.join(k))),
            lease_namespace: file
                .lease_namespace
                .or_else(|| env("POD_NAMESPACE"))
                .unwrap_or_else(|| own_namespace.to_owned()),
            lease_name: file.lease_name.unwrap_or_else(|| "driftguard-leader".to_owned()),
            lease_duration,
            identity,
            api_timeout: file.api_timeout.map_or(Duration::from_secs(10), |d| d.0),
            self_heal: HealSettings {
                max_flips: file.self_heal.max_flips,
                window: file.self_heal.window.0,
            },
            tenancy: validate_tenancy(file.tenancy)?,
        })
    }
}

/// Names in `cluster.tenancy` must be DNS labels (service account and namespace names).
fn validate_tenancy(file: TenancyFile) -> Result<TenancySettings, ConfigError> {
    let dns_label = |name: &str| {
        !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-')
    };
    let default = file.default_service_account.filter(|name| !name.is_empty());
    if let Some(name) = default.as_deref().filter(|name| !dns_label(name)) {
        return Err(ConfigError::Invalid(format!(
            "cluster.tenancy.defaultServiceAccount {name:?} is not a service account name"
        )));
    }
    if let Some(name) = file.privileged_namespaces.iter().find(|name| !dns_label(name)) {
        return Err(ConfigError::Invalid(format!(
            "cluster.tenancy.privilegedNamespaces: {name:?} is not a namespace name"
        )));
    }
    Ok(TenancySettings {
        default_service_account: default,
        privileged_namespaces: file.privileged_namespaces,
        no_cross_namespace_refs: file.no_cross_namespace_refs,
    })
}

fn validate_server(file: ServerFile, base_dir: &Path, overrides: &Overrides) -> Result<ServerSettings, ConfigError> {
    let cert = overrides.cert_file.clone().or(file.tls.cert_file);
    let key = overrides.key_file.clone().or(file.tls.key_file);
    let client_ca_file = file.tls.client_ca_file.map(|path| base_dir.join(path));
    let tls = match (cert, key, file.tls.dev_certs_dir, file.tls.managed) {
        (None, None, None, Some(managed)) => TlsSource::Managed(managed.validate()?),
        (_, _, _, Some(_)) => {
            return Err(ConfigError::Invalid(
                "server.tls.managed cannot be combined with certFile/keyFile (or --cert-file) or devCertsDir; choose one".to_owned(),
            ));
        }
        (Some(cert), Some(key), _, None) => TlsSource::Files {
            cert: base_dir.join(cert),
            key: base_dir.join(key),
        },
        (None, None, Some(dir), None) => TlsSource::Dev(base_dir.join(dir)),
        (None, None, None, None) => {
            return Err(ConfigError::Invalid(
                "server.tls: set certFile and keyFile (or devCertsDir for a development certificate, or managed in cluster mode)".to_owned(),
            ));
        }
        _ => {
            return Err(ConfigError::Invalid(
                "server.tls: certFile and keyFile go together; set both".to_owned(),
            ));
        }
    };
    if file.max_in_flight == 0 || file.max_body_bytes == 0 {
        return Err(ConfigError::Invalid(
            "server.maxInFlight and server.maxBodyBytes must be positive".to_owned(),
        ));
    }
    if file.drain_delay.0 > crate::server::MAX_DRAIN_DELAY {
        return Err(ConfigError::Invalid(format!(
            "server.drainDelay {:?} is longer than 5m: endpoints drop a terminating pod within seconds",
            file.drain_delay.0
        )));
    }
    Ok(ServerSettings {
        listen: overrides.listen.unwrap_or(file.listen),
        metrics_listen: overrides.metrics_listen.or(file.metrics_listen),
        tls,
        reload_interval: file.reload_interval.0.max(Duration::from_millis(50)),
        max_body_bytes: file.max_body_bytes,
        max_in_flight: file.max_in_flight,
        shutdown_grace: file.shutdown_grace.0,
        drain_delay: file.drain_delay.0,
        client_ca_file,
        hooks_listen: overrides.hooks_listen.or(file.hooks_listen),
    })
}

/// Standalone: where `entry`'s receiver secret is (`<hooksSecretsDir>/<secretRef.name>/token`).
fn receiver_secret_file(
    id: &str,
    entry: &SourceEntry,
    file: &ServerFile,
    server: &ServerSettings,
    base_dir: &Path,
) -> Result<Option<PathBuf>, ConfigError> {
    let Some(receiver) = &entry.spec.receiver else {
        return Ok(None);
    };
    let name = &receiver.secret_ref.name;
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(ConfigError::Invalid(format!(
            "source {id}: receiver.secretRef.name {name:?} must be a plain Secret name"
        )));
    }
    match (&file.hooks_secrets_dir, server.hooks_listen) {
        (Some(dir), _) => Ok(Some(base_dir.join(dir).join(name).join(crate::receiver::SECRET_KEY))),
        (None, Some(_)) => Err(ConfigError::Invalid(format!(
            "source {id} has a receiver: set server.hooksSecretsDir to a directory holding {name}/{key} (its shared secret)",
            key = crate::receiver::SECRET_KEY
        ))),
        // The receiver is off: nothing reads the secret.
        (None, None) => Ok(None),
    }
}

/// Exactly one of branch, tag, semver, commit; HEAD when none is given.
pub fn git_reference(source: &str, spec: Option<&GitRefSpec>) -> Result<GitReference, ConfigError> {
    let Some(spec) = spec else {
        return Ok(GitReference::Head);
    };
    let given: Vec<&str> = [
        spec.branch.as_ref().map(|_| "branch"),
        spec.tag.as_ref().map(|_| "tag"),
        spec.semver.as_ref().map(|_| "semver"),
        spec.commit.as_ref().map(|_| "commit"),
    ]
    .into_iter()
    .flatten()
    .collect();
    match (given.as_slice(), spec) {
        (["branch"], GitRefSpec { branch: Some(b), .. }) => Ok(GitReference::Branch(b.clone())),
        (["tag"], GitRefSpec { tag: Some(t), .. }) => Ok(GitReference::Tag(t.clone())),
        (["commit"], GitRefSpec { commit: Some(c), .. }) => Ok(GitReference::Commit(c.clone())),
        (
            ["semver"],
            GitRefSpec {
                semver: Some(range), ..
            },
        ) => crate::source::semver::validate(range)
            .map(|()| GitReference::Semver(range.clone()))
            .map_err(|error| ConfigError::Invalid(format!("source {source}: ref.semver: {error}"))),
        ([], _) => Ok(GitReference::Head),
        (many, _) => Err(ConfigError::Invalid(format!(
            "source {source}: ref must set exactly one of branch, tag, semver, commit (got {})",
            many.join(" and ")
        ))),
    }
}

/// Relative local paths are relative to the config file; URLs pass through.
fn resolve_url(url: &str, base_dir: &Path) -> String {
    if url.contains("://") || url.starts_with("git@") || Path::new(url).is_absolute() {
        url.to_owned()
    } else {
        base_dir.join(url).display().to_string()
    }
}

/// The Git work tree containing `start` (walking up to a `.git` entry).
pub fn find_repo_root(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| dir.join(".git").exists())
        .map(Path::to_path_buf)
}

/// Admission modes accepted on the command line.
pub fn parse_mode(text: &str) -> Result<Mode, String> {
    match text {
        "deny" => Ok(Mode::Deny),
        "revert" => Ok(Mode::Revert),
        "audit" => Ok(Mode::Audit),
        "off" => Ok(Mode::Off),
        other => Err(format!("unknown mode {other:?}; use deny, revert, audit or off")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
server:
  listen: 0.0.0.0:9443
  tls: { certFile: /tls/tls.crt, keyFile: /tls/tls.key }
sources:
  - name: platform
    url: https://git.example.com/platform.git
    ref: { branch: main }
    interval: 30s
guards:
  - name: apps
    namespace: team-a
    sourceRef: { name: platform, namespace: default }
    path: clusters/prod
    mode: revert
    targetNamespace: team-a
    ignore:
      - kind: Deployment
        jsonPointers: [/spec/replicas]
    exemptions: { groups: [sre] }
"#;

    #[test]
    fn parses_and_validates_a_full_file() {
        let settings = ConfigFile::parse(SAMPLE, "sample")
            .unwrap()
            .validate(Path::new("/etc/driftguard"), &Overrides::default())
            .unwrap();
        assert_eq!(settings.server.listen.port(), 9443);
        assert_eq!(settings.sources[0].interval, Duration::from_secs(30));
        assert_eq!(
            settings.sources[0].settings.reference,
            GitReference::Branch("main".into())
        );
        let guard = &settings.guards[0].policy;
        assert_eq!(guard.mode, Mode::Revert);
        assert_eq!(guard.target_namespace, "team-a");
        assert_eq!(settings.own_username, "system:serviceaccount:driftguard:driftguard");
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_name() {
        let text = SAMPLE.replace("mode: revert", "mdoe: revert");
        let err = ConfigFile::parse(&text, "sample").unwrap_err().to_string();
        assert!(err.contains("mdoe"), "{err}");
    }

    #[test]
    fn managed_tls_is_for_cluster_mode_alone_and_checks_its_periods() {
        let validate = |text: &str| {
            ConfigFile::parse(text, "managed")
                .unwrap()
                .validate(Path::new("/"), &Overrides::default())
        };
        let settings = validate(
            "cluster: {}\nserver:\n  tls:\n    managed: {secretName: dg-tls, serviceName: dg, webhookConfiguration: dg, renewBefore: 48h}\n",
        )
        .unwrap();
        let TlsSource::Managed(managed) = settings.server.tls else {
            panic!("{:?}", settings.server.tls)
        };
        assert_eq!(managed.secret_name, "dg-tls");
        assert_eq!(managed.renew_before, Duration::from_secs(48 * 3600));
        assert_eq!(managed.ca_validity, crate::certs::DEFAULT_CA_VALIDITY);
        assert_eq!(managed.check_interval, Duration::from_secs(60));

        let standalone = validate("server:\n  tls:\n    managed: {}\nguards: []\n")
            .unwrap_err()
            .to_string();
        assert!(standalone.contains("cluster mode"), "{standalone}");
        let both = validate("cluster: {}\nserver:\n  tls:\n    managed: {}\n    devCertsDir: certs\n")
            .unwrap_err()
            .to_string();
        assert!(both.contains("cannot be combined"), "{both}");
        let looping = validate("cluster: {}\nserver:\n  tls:\n    managed: {servingValidity: 24h, renewBefore: 48h}\n")
            .unwrap_err()
            .to_string();
        assert!(looping.contains("renewBefore"), "{looping}");
    }

    #[test]
    fn a_dangling_source_ref_lists_the_sources() {
        let text = SAMPLE.replace("name: platform, namespace", "name: missing, namespace");
        let err = ConfigFile::parse(&text, "sample")
            .unwrap()
            .validate(Path::new("/"), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("default/missing") && err.contains("default/platform"),
            "{err}"
        );
    }

    #[test]
    fn web_urls_are_checked_when_read_and_reach_the_guards() {
        let validate = |text: &str| {
            ConfigFile::parse(text, "sample").and_then(|file| file.validate(Path::new("/"), &Overrides::default()))
        };
        // git.example.com is no host links are derived for.
        let settings = validate(SAMPLE).unwrap();
        assert!(settings.guards[0].policy.links().is_none());
        let with = |web_url: &str| {
            SAMPLE.replace(
                "    interval: 30s\n",
                &format!("    interval: 30s\n    webUrl: \"{web_url}\"\n"),
            )
        };
        let settings = validate(&with("https://git.example.com/{repo}/src/{revision}/{path}#L{line}")).unwrap();
        let links = settings.guards[0].policy.links().unwrap().at("abc");
        assert_eq!(
            links.link("a.yaml", 3),
            "https://git.example.com/platform/src/abc/a.yaml#L3"
        );
        let err = validate(&with("https://git.example.com/{repo}/{branch}/{path}"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("source default/platform: webUrl") && err.contains("unknown placeholder {branch}"),
            "{err}"
        );
    }

    #[test]
    fn ref_needs_exactly_one_selector() {
        let both = GitRefSpec {
            branch: Some("main".into()),
            tag: Some("v1".into()),
            ..Default::default()
        };
        let err = git_reference("s", Some(&both)).unwrap_err().to_string();
        assert!(err.contains("exactly one"), "{err}");
        assert_eq!(git_reference("s", None).unwrap(), GitReference::Head);
    }

    #[test]
    fn semver_ranges_are_checked_when_read() {
        let range = |r: &str| GitRefSpec {
            semver: Some(r.into()),
            ..Default::default()
        };
        assert_eq!(
            git_reference("s", Some(&range(">=1.2.0 <2"))).unwrap(),
            GitReference::Semver(">=1.2.0 <2".into())
        );
        let err = git_reference("s", Some(&range("one.two"))).unwrap_err().to_string();
        assert!(err.contains("source s: ref.semver") && err.contains("one.two"), "{err}");
    }

    #[test]
    fn overrides_win_and_relative_paths_follow_the_file() {
        let overrides = Overrides {
            listen: Some("127.0.0.1:1".parse().unwrap()),
            ..Default::default()
        };
        let text = SAMPLE.replace("https://git.example.com/platform.git", "repo");
        let settings = ConfigFile::parse(&text, "sample")
            .unwrap()
            .validate(Path::new("/etc/dg"), &overrides)
            .unwrap();
        assert_eq!(settings.server.listen.port(), 1);
        assert_eq!(settings.sources[0].settings.url, "/etc/dg/repo");
    }

    #[test]
    fn the_push_receiver_is_off_by_default_and_reads_secrets_from_the_secrets_dir() {
        let settings = ConfigFile::parse(SAMPLE, "sample")
            .unwrap()
            .validate(Path::new("/etc/dg"), &Overrides::default())
            .unwrap();
        assert_eq!(settings.server.hooks_listen, None);
        assert_eq!(settings.sources[0].receiver_secret, None);

        let text = SAMPLE
            .replace(
                "  listen: 0.0.0.0:9443\n",
                "  listen: 0.0.0.0:9443\n  hooksListen: 0.0.0.0:9292\n  hooksSecretsDir: hooks\n",
            )
            .replace(
                "    interval: 30s\n",
                "    interval: 30s\n    receiver: { secretRef: { name: platform-hook } }\n",
            );
        let settings = ConfigFile::parse(&text, "sample")
            .unwrap()
            .validate(Path::new("/etc/dg"), &Overrides::default())
            .unwrap();
        assert_eq!(settings.server.hooks_listen, Some("0.0.0.0:9292".parse().unwrap()));
        assert_eq!(
            settings.sources[0].receiver_secret,
            Some(PathBuf::from("/etc/dg/hooks/platform-hook/token"))
        );

        // A receiver with the listener on but nowhere to read its secret is an error.
        let without_dir = text.replace("  hooksSecretsDir: hooks\n", "");
        let err = ConfigFile::parse(&without_dir, "sample")
            .unwrap()
            .validate(Path::new("/etc/dg"), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("hooksSecretsDir") && err.contains("platform-hook/token"),
            "{err}"
        );

        let overrides = Overrides {
            hooks_listen: Some("127.0.0.1:7000".parse().unwrap()),
            ..Default::default()
        };
        let settings = ConfigFile::parse(&text, "sample")
            .unwrap()
            .validate(Path::new("/etc/dg"), &overrides)
            .unwrap();
        assert_eq!(settings.server.hooks_listen, overrides.hooks_listen);
    }

    #[test]
    fn embedded_default_is_valid() {
        let settings = ConfigFile::embedded_default(Path::new("/repo"))
            .validate(Path::new("/repo"), &Overrides::default())
            .unwrap();
        assert_eq!(settings.guards[0].policy.path, "examples/app");
        assert_eq!(settings.server.tls, TlsSource::Dev(PathBuf::from("/repo/certs")));
        assert_eq!(settings.sources[0].settings.reference, GitReference::Head);
        assert_eq!(settings.server.drain_delay, Duration::ZERO);
    }

    #[test]
    fn client_ca_file_is_read_relative_to_the_config_file() {
        let validate = |text: &str| {
            ConfigFile::parse(text, "sample")
                .unwrap()
                .validate(Path::new("/etc/dg"), &Overrides::default())
                .unwrap()
        };
        assert_eq!(validate(SAMPLE).server.client_ca_file, None);
        let with_ca = SAMPLE.replace(
            "keyFile: /tls/tls.key }",
            "keyFile: /tls/tls.key, clientCAFile: callers/ca.crt }",
        );
        assert_eq!(
            validate(&with_ca).server.client_ca_file,
            Some(PathBuf::from("/etc/dg/callers/ca.crt"))
        );
    }

    #[test]
    fn drain_delay_defaults_to_five_seconds_and_is_bounded() {
        let validate = |text: &str| {
            ConfigFile::parse(text, "sample")
                .unwrap()
                .validate(Path::new("/etc/dg"), &Overrides::default())
        };
        let settings = validate(SAMPLE).unwrap();
        assert_eq!(settings.server.drain_delay, Duration::from_secs(5));
        assert_eq!(settings.server.shutdown_grace, Duration::from_secs(20));
        let short = SAMPLE.replace(
            "  listen: 0.0.0.0:9443\n",
            "  listen: 0.0.0.0:9443\n  drainDelay: 250ms\n",
        );
        assert_eq!(validate(&short).unwrap().server.drain_delay, Duration::from_millis(250));
        let long = SAMPLE.replace(
            "  listen: 0.0.0.0:9443\n",
            "  listen: 0.0.0.0:9443\n  drainDelay: 10m\n",
        );
        let err = validate(&long).unwrap_err().to_string();
        assert!(err.contains("server.drainDelay"), "{err}");
        let garbage = SAMPLE.replace(
            "  listen: 0.0.0.0:9443\n",
            "  listen: 0.0.0.0:9443\n  drainDelay: soon\n",
        );
        assert!(ConfigFile::parse(&garbage, "sample").is_err());
    }
}
