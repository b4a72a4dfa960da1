//! The driftguard command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

use driftguard::admission::{Admission, AdmissionSettings, Admit, Webhook, service_account_username};
use driftguard::api::{GuardSpec, Mode, SourceReference};
use driftguard::audit::MemorySink;
use driftguard::config::{self, ConfigFile, Overrides};
use driftguard::desired::{DesiredCache, DesiredSet, DesiredStore, GuardId, GuardPolicy, SourceSettings, load_guard};
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
    },
    /// Decide one AdmissionReview offline and print the response review.
    /// Exit status: 0 allowed, 1 denied, 2 error.
    Check {
        #[command(flatten)]
        git: GitArgs,
        /// Admission mode of the Guard.
        #[arg(long, default_value = "deny", value_parser = config::parse_mode)]
        mode: Mode,
        /// Which webhook to ask; by default `mutate` in revert mode, `validate` otherwise.
        #[arg(long, value_enum)]
        webhook: Option<WebhookArg>,
        /// The AdmissionReview JSON file (`-` for stdin).
        #[arg(long)]
        review: PathBuf,
    },
    /// Show where the cluster differs from Git on declared fields, and what is missing.
    /// Exit status: 0 no differences, 1 differences, 2 error.
    Diff {
        #[command(flatten)]
        git: GitArgs,
        /// kubeconfig file (default: KUBECONFIG, ~/.kube/config, or in-cluster config).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
    /// Print the normalized desired objects as YAML.
    Render {
        #[command(flatten)]
        git: GitArgs,
    },
    /// Print the GitSource and Guard CustomResourceDefinitions as YAML
    /// (`driftguard crds | kubectl apply -f -`).
    Crds,
}

#[derive(clap::Args)]
struct GitArgs {
    /// Repository (local path or file:// URL).
    #[arg(long)]
    repo: String,
    /// Branch, tag or commit (HEAD when omitted).
    #[arg(long = "ref", default_value = "HEAD")]
    reference: String,
    /// Directory inside the repository.
    #[arg(long, default_value = "")]
    path: String,
    /// Namespace for namespaced objects that declare none.
    #[arg(long, default_value = "default")]
    target_namespace: String,
    /// The Guard these manifests belong to, as NAMESPACE/NAME (stamped into the
    /// driftguard.io/guard annotation, as the enforcer does).
    #[arg(long = "guard", default_value = "default/cli")]
    guard: String,
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
        } => run_serve(
            config,
            Overrides {
                listen,
                metrics_listen,
                cert_file,
                key_file,
            },
        ),
        Command::Check {
            git,
            mode,
            webhook,
            review,
        } => run_check(&git, mode, webhook, &review),
        Command::Diff { git, kubeconfig } => run_diff(&git, kubeconfig.as_deref()),
        Command::Render { git } => run_render(&git),
        Command::Crds => run_crds(),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("driftguard: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run_serve(config: Option<PathBuf>, overrides: Overrides) -> Result<ExitCode> {
    let (file, base_dir) = match &config {
        Some(path) => {
            let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
            (ConfigFile::read(path)?, base)
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
    runtime.block_on(serve::run(settings, config.is_none()))?;
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

fn load(git: &GitArgs, mode: Mode) -> Result<Arc<DesiredSet>> {
    let reference = resolve_reference(&git.repo, &git.reference)?;
    let spec = GuardSpec {
        source_ref: SourceReference {
            name: "cli".into(),
            namespace: None,
        },
        path: git.path.clone(),
        render: Default::default(),
        target_namespace: Some(git.target_namespace.clone()),
        mode,
        self_heal: true,
        prune: Default::default(),
        interval: driftguard::api::GoDuration::five_minutes(),
        ignore: Vec::new(),
        exemptions: Default::default(),
        break_glass: None,
        suspend: false,
    };
    let (namespace, name) = git
        .guard
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
        .with_context(|| format!("--guard {:?} must be written NAMESPACE/NAME", git.guard))?;
    let id = GuardId {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    let policy = Arc::new(GuardPolicy::new(id, &spec, &git.repo)?);
    let source = SourceSettings {
        id: "default/cli".into(),
        url: git.repo.clone(),
        reference,
    };
    Ok(load_guard(policy, &source, &DesiredCache::new(u64::MAX))?)
}

fn run_check(git: &GitArgs, mode: Mode, webhook: Option<WebhookArg>, review: &Path) -> Result<ExitCode> {
    let body = if review == Path::new("-") {
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut body).context("cannot read the review from stdin")?;
        body
    } else {
        std::fs::read(review).with_context(|| format!("cannot read review {}", review.display()))?
    };
    let set = load(git, mode)?;
    let store = Arc::new(DesiredStore::new());
    store.publish(vec![set], true);
    let audit = Arc::new(MemorySink::new());
    let admission = Admission::new(
        store,
        AdmissionSettings {
            own_username: service_account_username("driftguard/driftguard"),
        },
        audit.clone(),
    );
    let webhook = match (webhook, mode) {
        (Some(WebhookArg::Validate), _) => Webhook::Validate,
        (Some(WebhookArg::Mutate), _) | (None, Mode::Revert) => Webhook::Mutate,
        (None, _) => Webhook::Validate,
    };
    let reply = admission.admit(webhook, &body);
    println!("{}", String::from_utf8_lossy(&reply.body));
    for event in audit.events() {
        eprintln!("{}", serde_json::to_string(&event)?);
    }
    if reply.status != 200 {
        bail!(
            "the review was not decided (HTTP {}): {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
    }
    Ok(if reply.decision == "denied" {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn run_diff(git: &GitArgs, kubeconfig: Option<&Path>) -> Result<ExitCode> {
    use driftguard::reconcile::{PlanFacts, apply::Applier, diff, plan};
    let set = load(git, Mode::Deny)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(async {
        let config = match kubeconfig {
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(file, &Default::default()).await?
            }
            None => kube::Config::infer()
                .await
                .context("no cluster configured: pass --kubeconfig, set KUBECONFIG, or run in a cluster")?,
        };
        let client = kube::Client::try_from(config)?;
        let applier = Applier::new(client, std::time::Duration::from_secs(10)).await?;
        let live = applier.snapshot(&set.objects, &[]).await;
        let established = applier.served_custom_kinds(&set.objects).await;
        // Without a Guard's inventory nothing is known to be prunable.
        let prune = driftguard::api::PruneSpec {
            enabled: false,
            allow_empty: false,
        };
        let facts = PlanFacts {
            guard: &set.guard.id,
            established: &established,
            prune: &prune,
            held: &Default::default(),
        };
        let plan = plan(&set.objects, &[], &live, &facts);
        anyhow::Ok(diff::report(&plan, &live))
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
    let set = load(git, Mode::Deny)?;
    let mut out = String::new();
    for object in &set.objects {
        out.push_str("---\n");
        out.push_str(&format!("# Source: {}\n", object.origin));
        out.push_str(&serde_saphyr::to_string(&object.object).context("cannot print an object as YAML")?);
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn run_crds() -> Result<ExitCode> {
    print!("{}", driftguard::api::crds_yaml()?);
    Ok(ExitCode::SUCCESS)
}
