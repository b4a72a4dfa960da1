//! The driftguard command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

use driftguard::admission::{Admission, AdmissionSettings, Admit, Webhook, service_account_username};
use driftguard::api::{GuardSpec, JsonnetRender, Mode, RenderSpec, RenderType, SourceReference};
use driftguard::audit::MemorySink;
use driftguard::config::{self, ConfigFile, Overrides};
use driftguard::desired::{
    ApiResources, DesiredCache, DesiredSet, DesiredStore, GuardId, GuardPolicy, SourceSettings, load_guard,
};
use driftguard::source::{GitReference, LocalRepository};
use driftguard::{serve, telemetry};

#[derive(Parser)]
#[command(name = "driftguard", version, about = "Keeps Kubernetes equal to Git")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the admission webhook (without --config: this repository's examples/app on
    /// https://127.0.0.1:8443 with a generated development certificate).
    Serve {
        /// YAML config file with `sources` and `guards`.
        #[arg(long, env = "DRIFTGUARD_CONFIG")]
        config: Option<PathBuf>,
        /// HTTPS address of the webhook.
        #[arg(long, env = "DRIFTGUARD_LISTEN")]
        listen: Option<std::net::SocketAddr>,
        /// Plain-HTTP address of /metrics.
        #[arg(long, env = "DRIFTGUARD_METRICS_LISTEN")]
        metrics_listen: Option<std::net::SocketAddr>,
        /// Serving certificate (PEM chain).
        #[arg(long, env = "DRIFTGUARD_CERT_FILE", requires = "key_file")]
        cert_file: Option<PathBuf>,
        /// Serving key (PEM).
        #[arg(long, env = "DRIFTGUARD_KEY_FILE", requires = "cert_file")]
        key_file: Option<PathBuf>,
        /// Enforce against the cluster: Guards and GitSources from its API, the leader applies,
        /// prunes and heals, every replica serves admission.
        #[arg(long, env = "DRIFTGUARD_CLUSTER")]
        cluster: bool,
        /// kubeconfig file for --cluster (default: KUBECONFIG, ~/.kube/config, in-cluster).
        #[arg(long, env = "DRIFTGUARD_KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        /// Plain-HTTP address of the push receiver (POST /hooks/<namespace>/<source>).
        #[arg(long, env = "DRIFTGUARD_HOOKS_LISTEN")]
        hooks_listen: Option<std::net::SocketAddr>,
    },
    /// Decide one AdmissionReview offline and print the response review.
    /// Exit status: 0 allowed, 1 denied, 2 error.
    Check {
        #[command(flatten)]
        git: GitArgs,
        /// Admission mode of the Guard (default: the --guard-file's, else deny).
        #[arg(long, value_parser = config::parse_mode)]
        mode: Option<Mode>,
        /// Which webhook to ask. By default both, as the API server would: the mutating one,
        /// then the validating one on the mutated object.
        #[arg(long, value_enum)]
        webhook: Option<WebhookArg>,
        /// The AdmissionReview JSON file (`-` for stdin).
        #[arg(long)]
        review: PathBuf,
    },
    /// Show where the cluster differs from Git on declared fields, what is missing, and what a
    /// sync would prune. `--guard NS/NAME` alone reads that Guard and its GitSource from the
    /// cluster; `--repo` renders a local repository instead.
    /// Exit status: 0 no differences, 1 differences, 2 error.
    Diff {
        #[command(flatten)]
        args: DiffArgs,
    },
    /// Print the normalized desired objects as YAML.
    Render {
        #[command(flatten)]
        git: GitArgs,
    },
    /// Print the GitSource and Guard CustomResourceDefinitions as YAML
    /// (`driftguard crds | kubectl apply -f -`).
    Crds,
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Certificate tools.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Webhook configuration tools.
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Write a CA and a serving certificate for a Service's DNS names (<service>,
    /// <service>.<namespace>, <service>.<namespace>.svc, <service>.<namespace>.svc.cluster.local)
    /// into --out as ca.crt, ca.key, tls.crt, tls.key (keys mode 0600), and print the base64
    /// caBundle for the webhook configurations (the chart's certs.files.caBundle).
    Generate {
        /// The Service kube-apiserver calls.
        #[arg(long, default_value = "driftguard")]
        service: String,
        /// Its namespace.
        #[arg(long, default_value = "driftguard")]
        namespace: String,
        /// Directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Lifetime of the CA (Go duration).
        #[arg(long, default_value = "87600h", value_parser = parse_duration)]
        ca_validity: std::time::Duration,
        /// Lifetime of the serving certificate (Go duration).
        #[arg(long, default_value = "8760h", value_parser = parse_duration)]
        validity: std::time::Duration,
        /// Replace files that already exist in --out.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum WebhooksCommand {
    /// Delete the ValidatingWebhookConfiguration and the MutatingWebhookConfiguration NAME
    /// (absent ones are fine). The Helm chart's pre-delete hook runs this, so an uninstall
    /// never leaves a webhook pointing at a Service that is gone.
    Delete {
        /// Name of both configurations.
        name: String,
        /// kubeconfig file (default: KUBECONFIG, ~/.kube/config, or in-cluster config).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    driftguard::api::GoDuration::parse(text)
        .map(|d| d.0)
        .map_err(|e| e.to_string())
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check audit records: split by chain (replica), each chain's order, links and hashes, its
    /// signed digests (with --public-key or --from-cluster) and, given the cluster's anchors,
    /// that no chain was cut short. Rotated files may be given in any order; `-` reads stdin (a
    /// mixed stream, e.g. a SIEM export of JSON lines). Dropped-event gaps, a chain that starts
    /// after seq 1 and records after the last digest (unsigned tail) are reported as warnings.
    /// Exit status: 0 intact, 1 broken (the first broken record is reported), 2 unreadable.
    Verify(AuditVerifyArgs),
    /// Print the public key (PEM) of an audit signing key file, for `audit verify --public-key`.
    PublicKey {
        /// The signing key (`audit.signingKeyFile`).
        #[arg(long)]
        signing_key_file: PathBuf,
    },
}

#[derive(clap::Args)]
struct GitArgs {
    /// Repository (local path or file:// URL).
    #[arg(long)]
    repo: String,
    /// Branch, tag or commit (HEAD when omitted).
    #[arg(long = "ref", default_value = "HEAD")]
    reference: String,
    /// Directory inside the repository (default: the --guard-file's spec.path, else the root).
    #[arg(long)]
    path: Option<String>,
    /// Namespace for namespaced objects that declare none (default: the --guard-file's, else
    /// "default").
    #[arg(long)]
    target_namespace: Option<String>,
    /// The Guard these manifests belong to, as NAMESPACE/NAME (stamped into the
    /// driftguard.io/guard annotation, as the enforcer does; default: the --guard-file's
    /// metadata, else default/cli).
    #[arg(long = "guard")]
    guard: Option<String>,
    /// Renderer: auto (a kustomization: kustomize; Chart.yaml: helm; --jsonnet-entry:
    /// jsonnet; else plain), plain, kustomize, helm or jsonnet.
    #[arg(long, value_parser = parse_render_type)]
    render: Option<RenderType>,
    /// Jsonnet entry file, relative to --path.
    #[arg(long)]
    jsonnet_entry: Option<String>,
    #[command(flatten)]
    offline: OfflineArgs,
}

/// What offline commands take instead of a cluster.
#[derive(clap::Args, Clone, Default)]
struct OfflineArgs {
    /// A Guard manifest (YAML): its spec (path, render options such as Helm values and release
    /// and the jsonnet entry, targetNamespace, mode, ignore rules, exemptions, prune) and name
    /// are used as the cluster would use them; flags given as well win.
    #[arg(long)]
    guard_file: Option<PathBuf>,
    /// Scope and plural of custom kinds: the output of `kubectl api-resources -o wide` (or
    /// without -o). Kinds whose CRD is in the same render need none.
    #[arg(long)]
    api_resources: Option<PathBuf>,
}

impl OfflineArgs {
    /// The Guard of --guard-file, if given.
    fn guard(&self) -> Result<Option<driftguard::api::Guard>> {
        let Some(path) = &self.guard_file else {
            return Ok(None);
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read --guard-file {}", path.display()))?;
        let guard: driftguard::api::Guard = serde_saphyr::from_str(&text)
            .with_context(|| format!("--guard-file {} is not a Guard manifest", path.display()))?;
        Ok(Some(guard))
    }

    /// The kinds of --api-resources (none without it).
    fn kinds(&self) -> Result<ApiResources> {
        let Some(path) = &self.api_resources else {
            return Ok(ApiResources::default());
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read --api-resources {}", path.display()))?;
        ApiResources::parse_table(&text).with_context(|| format!("--api-resources {}", path.display()))
    }
}

fn parse_render_type(text: &str) -> Result<RenderType, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| format!("{text:?} is not one of auto, plain, kustomize, helm, jsonnet"))
}

/// `driftguard diff`: either a Guard in the cluster, or a local repository (`--repo`).
#[derive(clap::Args)]
struct DiffArgs {
    /// Repository (local path or file:// URL). Without it, the Guard named by --guard is read
    /// from the cluster and its GitSource, path, render settings, ignore rules and
    /// targetNamespace are used.
    #[arg(long, required_unless_present = "guard")]
    repo: Option<String>,
    /// Branch, tag or commit of --repo (HEAD when omitted).
    #[arg(long = "ref", requires = "repo")]
    reference: Option<String>,
    /// Directory inside --repo.
    #[arg(long, requires = "repo")]
    path: Option<String>,
    /// Namespace for namespaced objects that declare none (with --repo; default "default").
    #[arg(long, requires = "repo")]
    target_namespace: Option<String>,
    /// The Guard, as NAMESPACE/NAME. Alone: compare that Guard's Git state with the cluster.
    /// With --repo: the owner stamped into the manifests (default default/cli), and if that
    /// Guard exists in the cluster, its inventory and prune settings say what would be pruned.
    #[arg(long = "guard")]
    guard: Option<String>,
    /// kubeconfig file (default: KUBECONFIG, ~/.kube/config, or in-cluster config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    offline: OfflineArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum WebhookArg {
    Validate,
    Mutate,
}

fn main() -> ExitCode {
    telemetry::init_tracing();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve {
            config,
            listen,
            metrics_listen,
            cert_file,
            key_file,
            cluster,
            kubeconfig,
            hooks_listen,
        } => run_serve(
            config,
            Overrides {
                listen,
                metrics_listen,
                cert_file,
                key_file,
                cluster,
                kubeconfig,
                hooks_listen,
            },
        ),
        Command::Check {
            git,
            mode,
            webhook,
            review,
        } => run_check(&git, mode, webhook, &review),
        Command::Diff { args } => run_diff(&args),
        Command::Render { git } => run_render(&git),
        Command::Crds => run_crds(),
        Command::Audit {
            command: AuditCommand::Verify(args),
        } => run_audit_verify(args),
        Command::Audit {
            command: AuditCommand::PublicKey { signing_key_file },
        } => run_audit_public_key(&signing_key_file),
        Command::Certs {
            command:
                CertsCommand::Generate {
                    service,
                    namespace,
                    out,
                    ca_validity,
                    validity,
                    force,
                },
        } => run_certs_generate(&service, &namespace, &out, ca_validity, validity, force),
        Command::Webhooks {
            command: WebhooksCommand::Delete { name, kubeconfig },
        } => run_webhooks_delete(&name, kubeconfig.as_deref()),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("driftguard: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run_certs_generate(
    service: &str,
    namespace: &str,
    out: &Path,
    ca_validity: std::time::Duration,
    validity: std::time::Duration,
    force: bool,
) -> Result<ExitCode> {
    use base64::Engine as _;
    let hosts = driftguard::certs::rotation::RotationPolicy::service_hosts(service, namespace);
    let paths = driftguard::certs::generate_certs(out, &hosts, ca_validity, validity, force)?;
    let ca = std::fs::read(&paths.ca_cert).with_context(|| format!("cannot read back {}", paths.ca_cert.display()))?;
    eprintln!(
        "wrote {}, {}, {} and {} for {}",
        paths.ca_cert.display(),
        paths.ca_key.display(),
        paths.cert.display(),
        paths.key.display(),
        hosts.join(", ")
    );
    eprintln!(
        "create the Secret: kubectl -n {namespace} create secret tls {service}-tls --cert={} --key={}",
        paths.cert.display(),
        paths.key.display()
    );
    eprintln!("caBundle (certs.files.caBundle):");
    println!("{}", base64::engine::general_purpose::STANDARD.encode(ca));
    Ok(ExitCode::SUCCESS)
}

fn run_webhooks_delete(name: &str, kubeconfig: Option<&Path>) -> Result<ExitCode> {
    use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let (client, url) = connect(kubeconfig).await?;
        let params = kube::api::DeleteParams::default();
        let validating = kube::Api::<ValidatingWebhookConfiguration>::all(client.clone());
        let mutating = kube::Api::<MutatingWebhookConfiguration>::all(client);
        let outcomes = [
            (
                "ValidatingWebhookConfiguration",
                validating.delete(name, &params).await.map(|_| ()),
            ),
            (
                "MutatingWebhookConfiguration",
                mutating.delete(name, &params).await.map(|_| ()),
            ),
        ];
        for (kind, outcome) in outcomes {
            match outcome {
                Ok(()) => println!("deleted {kind} {name}"),
                Err(kube::Error::Api(status)) if status.code == 404 => println!("{kind} {name} was already gone"),
                Err(error) => return Err(error).with_context(|| format!("cannot delete {kind} {name} at {url}")),
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn run_audit_public_key(file: &Path) -> Result<ExitCode> {
    let text = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let key =
        driftguard::audit::signing::SigningKey::from_pem(&zeroize::Zeroizing::new(text), &file.display().to_string())?;
    print!("{}", key.public().to_pem());
    eprintln!("key id {}", key.key_id());
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
struct AuditVerifyArgs {
    /// The hash the last record must have (one chain only; proves the end was not cut off).
    #[arg(long)]
    expect_head: Option<String>,
    /// Public keys (PEM, any number per file, or an exported key ConfigMap); repeatable.
    #[arg(long = "public-key", value_name = "FILE")]
    public_keys: Vec<PathBuf>,
    /// Cluster anchors: an exported anchor ConfigMap or List (`kubectl get cm -l
    /// driftguard.io/audit-anchors -o json`), or JSON lines of anchors; repeatable.
    #[arg(long, value_name = "FILE")]
    anchors: Vec<PathBuf>,
    /// Read the public keys (ConfigMap NAME, default driftguard-audit-keys) and the anchors
    /// (ConfigMaps labelled driftguard.io/audit-anchors) from namespace NAMESPACE.
    #[arg(long, value_name = "NAMESPACE[/NAME]")]
    from_cluster: Option<String>,
    /// kubeconfig for --from-cluster (default: KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Order each chain's records by seq and drop exact duplicates (a log store that
    /// reorders or delivers twice).
    #[arg(long)]
    any_order: bool,
    /// Audit files or `-` for stdin (e.g. audit.log audit.log.1 ...).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

fn run_audit_verify(args: AuditVerifyArgs) -> Result<ExitCode> {
    use driftguard::audit::digest::Anchor;
    use driftguard::audit::signing::PublicKeys;
    use driftguard::audit::verify::{VerifyError, VerifyOptions, verify_paths};
    let mut keys: Option<PublicKeys> = None;
    for path in &args.public_keys {
        let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        keys.get_or_insert_with(PublicKeys::default)
            .extend(PublicKeys::parse(&text, &path.display().to_string())?);
    }
    let mut anchors: Vec<Anchor> = Vec::new();
    for path in &args.anchors {
        let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        anchors.extend(Anchor::parse_all(&text, &path.display().to_string()).map_err(anyhow::Error::msg)?);
    }
    if let Some(target) = &args.from_cluster {
        let (namespace, name) = match target.split_once('/') {
            Some((namespace, name)) => (namespace.to_owned(), name.to_owned()),
            None => (
                target.clone(),
                driftguard::audit::cluster::DEFAULT_KEYS_CONFIG_MAP.to_owned(),
            ),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let (cluster_keys, cluster_anchors) = runtime.block_on(async {
            let (client, url) = connect(args.kubeconfig.as_deref()).await?;
            driftguard::audit::cluster::read_evidence(&client, &namespace, &name)
                .await
                .with_context(|| format!("cannot read the audit keys and anchors at {url}"))
        })?;
        keys.get_or_insert_with(PublicKeys::default).extend(cluster_keys);
        anchors.extend(cluster_anchors);
    }
    let options = VerifyOptions {
        expect_head: args.expect_head.as_deref(),
        public_keys: keys.as_ref(),
        anchors: &anchors,
        any_order: args.any_order,
    };
    Ok(match verify_paths(&args.files, options) {
        Ok(report) => {
            for warning in &report.warnings {
                println!("warning: {warning}");
            }
            if report.chains.len() == 1 {
                println!(
                    "ok: {} records in {} files, seq {}..{}, head {}",
                    report.records,
                    report.files.len(),
                    report.first_seq,
                    report.last_seq,
                    report.head
                );
            } else {
                println!(
                    "ok: {} records in {} chains in {} files",
                    report.records,
                    report.chains.len(),
                    report.files.len()
                );
            }
            for chain in report.chains.iter().filter(|c| !c.chain.is_empty()) {
                let signatures = if chain.signatures_checked {
                    "signatures checked"
                } else {
                    "signatures NOT checked"
                };
                println!(
                    "  chain {} (replica {}): {} records, seq {}..{}, head {}, {} digests ({signatures}; keys {}), signed through seq {}, unsigned tail {}, {} cluster anchors matched",
                    chain.chain,
                    chain.replica,
                    chain.records,
                    chain.first_seq,
                    chain.last_seq,
                    chain.head,
                    chain.digests,
                    chain.key_ids.iter().cloned().collect::<Vec<_>>().join(" "),
                    chain.signed_through,
                    chain.unsigned_tail,
                    chain.anchors
                );
            }
            ExitCode::SUCCESS
        }
        Err(error @ VerifyError::Broken { .. }) => {
            println!("broken: {error}");
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("driftguard: {error}");
            ExitCode::from(2)
        }
    })
}

fn run_serve(config: Option<PathBuf>, overrides: Overrides) -> Result<ExitCode> {
    let cluster = overrides.cluster || overrides.kubeconfig.is_some();
    let (file, base_dir) = match &config {
        Some(path) => {
            let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
            (ConfigFile::read(path)?, base)
        }
        None if cluster => {
            let cwd = std::env::current_dir().context("cannot read the current directory")?;
            (ConfigFile::cluster_default(&cwd), cwd)
        }
        None => {
            let cwd = std::env::current_dir().context("cannot read the current directory")?;
            let root = config::find_repo_root(&cwd)
                .or_else(|| config::find_repo_root(Path::new(env!("CARGO_MANIFEST_DIR"))))
                .context("the embedded default serves this repository's examples/app: run it inside a driftguard checkout, or pass --config")?;
            (ConfigFile::embedded_default(&root), root)
        }
    };
    let settings = file.validate(&base_dir, &overrides)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve::run(settings, config.is_none() && !cluster))?;
    Ok(ExitCode::SUCCESS)
}

/// Try the text as a branch, then a tag, then a commit.
fn resolve_reference(repo: &str, text: &str) -> Result<GitReference> {
    if text == "HEAD" {
        return Ok(GitReference::Head);
    }
    let repository = LocalRepository::open(repo)?;
    let candidates = [
        GitReference::Branch(text.to_owned()),
        GitReference::Tag(text.to_owned()),
        GitReference::Commit(text.to_owned()),
    ];
    candidates
        .into_iter()
        .find(|candidate| repository.resolve(candidate).is_ok())
        .with_context(|| format!("{text:?} is neither a branch, a tag nor a commit of {repo}"))
}

/// `NAMESPACE/NAME` as given to `--guard`.
fn parse_guard(text: &str) -> Result<GuardId> {
    let (namespace, name) = text
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
        .with_context(|| format!("--guard {text:?} must be written NAMESPACE/NAME"))?;
    Ok(GuardId {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// The Guard spec and id an offline command works with: --guard-file's, with the flags given
/// on top.
fn offline_guard(git: &GitArgs, mode: Option<Mode>) -> Result<(GuardId, GuardSpec)> {
    let file = git.offline.guard()?;
    let mut spec = match &file {
        Some(guard) => guard.spec.clone(),
        None => GuardSpec {
            source_ref: SourceReference {
                name: "cli".into(),
                namespace: None,
            },
            path: String::new(),
            render: RenderSpec::default(),
            target_namespace: None,
            mode: Mode::Deny,
            self_heal: true,
            prune: Default::default(),
            interval: driftguard::api::GoDuration::five_minutes(),
            ignore: Vec::new(),
            exemptions: Default::default(),
            delegate: Vec::new(),
            break_glass: None,
            suspend: false,
            service_account_name: None,
        },
    };
    if let Some(path) = &git.path {
        spec.path = path.clone();
    }
    if let Some(render) = git.render {
        spec.render.kind = render;
    }
    if let Some(entry) = &git.jsonnet_entry {
        spec.render.jsonnet.get_or_insert_with(JsonnetRender::default).entry = entry.clone();
    }
    if let Some(namespace) = &git.target_namespace {
        spec.target_namespace = Some(namespace.clone());
    }
    spec.target_namespace.get_or_insert_with(|| "default".to_owned());
    if let Some(mode) = mode {
        spec.mode = mode;
    }
    let id = match (&git.guard, &file) {
        (Some(text), _) => parse_guard(text)?,
        (None, Some(guard)) => GuardId {
            namespace: guard.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned()),
            name: guard
                .metadata
                .name
                .clone()
                .context("--guard-file: the Guard has no metadata.name")?,
        },
        (None, None) => parse_guard("default/cli")?,
    };
    Ok((id, spec))
}

fn load(git: &GitArgs, mode: Option<Mode>) -> Result<Arc<DesiredSet>> {
    let reference = resolve_reference(&git.repo, &git.reference)?;
    let (id, spec) = offline_guard(git, mode)?;
    let policy = Arc::new(GuardPolicy::new(id, &spec, &git.repo)?);
    let source = SourceSettings {
        id: "default/cli".into(),
        url: git.repo.clone(),
        reference,
    };
    let kinds = git.offline.kinds()?;
    // Objects left out (hooks, generateName) are logged as warnings by load_guard.
    Ok(load_guard(policy, &source, &DesiredCache::new(u64::MAX), &kinds)?)
}

fn run_check(git: &GitArgs, mode: Option<Mode>, webhook: Option<WebhookArg>, review: &Path) -> Result<ExitCode> {
    let body = if review == Path::new("-") {
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut body).context("cannot read the review from stdin")?;
        body
    } else {
        std::fs::read(review).with_context(|| format!("cannot read review {}", review.display()))?
    };
    let set = load(git, mode)?;
    // Delegate rules with `bounds: {fromHPA: true}` are judged by the HPAs Git declares.
    let hpa = declared_hpas(&set);
    let store = Arc::new(DesiredStore::new());
    store.publish(vec![set], true);
    let audit = Arc::new(MemorySink::new());
    let admission = Admission::new(
        store,
        AdmissionSettings {
            own_username: service_account_username("driftguard/driftguard"),
            hpa,
        },
        audit.clone(),
    );
    let decided = |reply: driftguard::admission::Reply| -> Result<driftguard::admission::Reply> {
        if reply.status != 200 {
            bail!(
                "the review was not decided (HTTP {}): {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            );
        }
        Ok(reply)
    };
    let (body, denied) = match webhook {
        Some(WebhookArg::Validate) => {
            let reply = decided(admission.admit(Webhook::Validate, &body))?;
            (reply.body, reply.decision == "denied")
        }
        Some(WebhookArg::Mutate) => {
            let reply = decided(admission.admit(Webhook::Mutate, &body))?;
            (reply.body, reply.decision == "denied")
        }
        // As the API server calls them: mutating first, then validating on the mutated object.
        None => {
            let mutated = decided(admission.admit(Webhook::Mutate, &body))?;
            if mutated.decision == "denied" {
                (mutated.body, true)
            } else {
                let patched = apply_mutation(&body, &mutated.body)?;
                let validated = decided(admission.admit(Webhook::Validate, &patched))?;
                if validated.decision == "denied" {
                    (validated.body, true)
                } else {
                    (merge_warnings(&mutated.body, &validated.body)?, false)
                }
            }
        }
    };
    println!("{}", String::from_utf8_lossy(&body));
    for event in audit.events() {
        eprintln!("{}", serde_json::to_string(&event)?);
    }
    Ok(if denied { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The HorizontalPodAutoscalers among `set`'s objects, as delegate rules with `fromHPA` read
/// them.
fn declared_hpas(set: &DesiredSet) -> driftguard::desired::HpaBounds {
    let table = driftguard::desired::HpaBounds::default();
    for object in &set.objects {
        if object.group == "autoscaling"
            && object.kind == "HorizontalPodAutoscaler"
            && let Ok(value) = object.value()
            && let Some((namespace, entry)) = driftguard::desired::HpaBounds::entry_of(&value)
        {
            table.upsert(&namespace, entry);
        }
    }
    table
}

/// [`declared_hpas`], overridden by the HorizontalPodAutoscalers the cluster has (when it lets
/// them be listed).
async fn cluster_hpas(client: &kube::Client, set: &DesiredSet) -> driftguard::desired::HpaBounds {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    let table = declared_hpas(set);
    match kube::Api::<HorizontalPodAutoscaler>::all(client.clone())
        .list(&Default::default())
        .await
    {
        Ok(list) => {
            for hpa in list.items {
                if let Some((namespace, entry)) = serde_json::to_value(&hpa)
                    .ok()
                    .as_ref()
                    .and_then(driftguard::desired::HpaBounds::entry_of)
                {
                    table.upsert(&namespace, entry);
                }
            }
        }
        Err(error) => eprintln!(
            "driftguard: note: cannot list HorizontalPodAutoscalers ({error}); delegate rules with fromHPA use those Git declares"
        ),
    }
    table
}

/// The review `body` with the JSON patch of the mutating `reply` applied to `request.object`.
fn apply_mutation(body: &[u8], reply: &[u8]) -> Result<Vec<u8>> {
    use base64::Engine as _;
    let mut review: serde_json::Value = serde_json::from_slice(body).context("the review is not JSON")?;
    let reply: serde_json::Value = serde_json::from_slice(reply).context("the mutating answer is not JSON")?;
    if let Some(patch) = reply.pointer("/response/patch").and_then(serde_json::Value::as_str) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .context("the mutating answer's patch is not base64")?;
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).context("the mutating answer's patch")?;
        if let Some(object) = review.pointer_mut("/request/object") {
            json_patch::patch(object, &patch).context("the mutating answer's patch does not apply")?;
        }
    }
    Ok(serde_json::to_vec(&review)?)
}

/// The mutating answer with the validating answer's warnings added (kubectl shows both).
fn merge_warnings(mutated: &[u8], validated: &[u8]) -> Result<Vec<u8>> {
    let mut answer: serde_json::Value = serde_json::from_slice(mutated)?;
    let validated: serde_json::Value = serde_json::from_slice(validated)?;
    let more = validated
        .pointer("/response/warnings")
        .and_then(serde_json::Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !more.is_empty()
        && let Some(response) = answer.get_mut("response").and_then(serde_json::Value::as_object_mut)
    {
        let warnings = response
            .entry("warnings")
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if let Some(list) = warnings.as_array_mut() {
            list.extend(more);
        }
    }
    Ok(serde_json::to_vec(&answer)?)
}

/// A client for the cluster `kubeconfig` (or the inferred configuration) names, and the URL
/// it talks to (for error messages).
async fn connect(kubeconfig: Option<&Path>) -> Result<(kube::Client, String)> {
    Ok(driftguard::serve::connect(kubeconfig).await?)
}

/// The Guard `id` from the cluster, or None when there is none of that name (or the Guard CRD
/// is not installed).
///
/// Without the CRD, kube-apiserver answers the GET with a plain-text `404 page not found`, not a
/// NotFound Status, so kube's `get_opt` does not take it for a missing object: any 404 is one.
async fn read_guard(client: &kube::Client, id: &GuardId) -> Result<Option<driftguard::api::Guard>> {
    match kube::Api::<driftguard::api::Guard>::namespaced(client.clone(), &id.namespace)
        .get(&id.name)
        .await
    {
        Ok(guard) => Ok(Some(guard)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(error) => Err(error).with_context(|| format!("cannot read Guard {id} from the cluster")),
    }
}

/// The desired state a sync of `guard` would apply, with error messages that say what to fix.
async fn load_guard_desired(
    guard: &driftguard::api::Guard,
    id: &GuardId,
    client: &kube::Client,
) -> Result<Arc<DesiredSet>> {
    use driftguard::reconcile::controller::{ReconcileError, load_desired};
    let fetcher = driftguard::source::Fetcher::new(driftguard::config::default_git_cache_dir());
    let kinds = driftguard::reconcile::kinds::ClusterKinds::new(client.clone());
    let tenancy = driftguard::reconcile::tenancy::TenancySettings::default();
    match load_desired(guard, client, &DesiredCache::new(u64::MAX), &fetcher, &kinds, &tenancy).await {
        Ok(set) => Ok(set),
        Err(ReconcileError::MissingSource(source)) => {
            let namespace = source.split_once('/').map_or(id.namespace.as_str(), |(ns, _)| ns);
            bail!(
                "Guard {id}: its spec.sourceRef names GitSource {source}, which is not in the cluster \
                 (list them with `kubectl get gitsources.driftguard.io -n {namespace}`)"
            )
        }
        Err(error) => Err(anyhow::Error::new(error).context(format!("cannot load the desired state of Guard {id}"))),
    }
}

fn run_diff(args: &DiffArgs) -> Result<ExitCode> {
    use driftguard::reconcile::{PlanFacts, apply::Applier, diff, plan};
    // Check what needs no cluster first: the Guard's name, and with --repo, the manifests.
    let guard_id = args.guard.as_deref().map(parse_guard).transpose()?;
    let local = match &args.repo {
        Some(repo) => {
            let git = GitArgs {
                repo: repo.clone(),
                reference: args.reference.clone().unwrap_or_else(|| "HEAD".to_owned()),
                path: args.path.clone(),
                target_namespace: args.target_namespace.clone(),
                guard: args.guard.clone(),
                render: None,
                jsonnet_entry: None,
                offline: args.offline.clone(),
            };
            Some(load(&git, None)?)
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (set, report) = runtime.block_on(async {
        let (client, url) = connect(args.kubeconfig.as_deref()).await?;
        let applier = Applier::new(client.clone(), std::time::Duration::from_secs(10))
            .await
            .with_context(|| format!("cannot reach the Kubernetes API at {url}"))?;
        let guard = match &guard_id {
            Some(id) => read_guard(&client, id).await?,
            None => None,
        };
        let (set, guard) = match (local, guard) {
            (Some(set), guard) => {
                if let (None, Some(id)) = (&guard, &guard_id) {
                    eprintln!(
                        "driftguard: note: Guard {id} is not in the cluster, so nothing is known to be prunable"
                    );
                }
                (set, guard)
            }
            (None, Some(guard)) => {
                // Validated above: without --repo, clap requires --guard.
                let id = guard_id.as_ref().context("--guard is required without --repo")?;
                let set = load_guard_desired(&guard, id, &client).await?;
                println!(
                    "Guard {id}: Git {} (path {:?})",
                    set.revision.reference, guard.spec.path
                );
                (set, Some(guard))
            }
            (None, None) => {
                let id = guard_id.as_ref().context("--guard is required without --repo")?;
                bail!(
                    "Guard {id} not found: there is no Guard {} in namespace {} of {url} \
                     (list them with `kubectl get guards.driftguard.io -A`; are driftguard's CRDs installed?)",
                    id.name,
                    id.namespace
                );
            }
        };
        // Without the Guard in the cluster, nothing is known to be prunable.
        let (inventory, prune) = match &guard {
            Some(guard) => {
                if guard.spec.suspend {
                    eprintln!(
                        "driftguard: note: Guard {} is suspended: a sync applies and prunes nothing until spec.suspend is false",
                        set.guard.id
                    );
                }
                (
                    guard.status.as_ref().map(|s| s.inventory.clone()).unwrap_or_default(),
                    guard.spec.prune.clone(),
                )
            }
            None => (
                Vec::new(),
                driftguard::api::PruneSpec {
                    enabled: false,
                    allow_empty: false,
                },
            ),
        };
        let live = applier.snapshot(&set.objects, &inventory).await;
        let established = applier.served_custom_kinds(&set.objects).await;
        let hpa = cluster_hpas(&client, &set).await;
        let facts = PlanFacts {
            guard: &set.guard.id,
            established: &established,
            prune: &prune,
            held: &Default::default(),
            detached: &Default::default(),
            hpa: &hpa,
        };
        let report = diff::report(&plan(&set.objects, &inventory, &live, &facts), &live);
        anyhow::Ok((set, report))
    })?;
    for line in &report.lines {
        println!("{line}");
    }
    if report.differences == 0 {
        println!(
            "no differences: the cluster matches Git for all {} objects",
            set.objects.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}

fn run_render(git: &GitArgs) -> Result<ExitCode> {
    let set = load(git, None)?;
    let mut out = String::new();
    for object in &set.objects {
        out.push_str("---\n");
        out.push_str(&format!("# Source: {}\n", object.origin));
        out.push_str(&serde_saphyr::to_string(&object.value()?).context("cannot print an object as YAML")?);
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn run_crds() -> Result<ExitCode> {
    print!("{}", driftguard::api::crds_yaml()?);
    Ok(ExitCode::SUCCESS)
}
