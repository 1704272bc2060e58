//! The `difusor` command line: `serve`, `keygen`, `verify`, `status`, `incidents`, `report`,
//! `mirror verify|sync`.
//!
//! Owns: argument parsing, logging set-up, and turning errors into a message and an exit
//! status. Must never: hold logic a test would want to reach — that lives in the library.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use difusor::config::Config;
use difusor::keys::ClientKeyType;

#[derive(Parser)]
#[command(
    name = "difusor",
    version,
    about = "Official PREP difusor: SFTP ingest and publication in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (SSH/SFTP front door). Without --config, the embedded defaults are used
    /// with paths relative to the working directory.
    Serve {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// For an operator at a terminal: the live cut and its age, the last package, incidents of
    /// the last 24 h, disk used by history vs free. Reads the data directory (works with the
    /// server stopped). Exit status 0, or 1 while cuts are missed or history would not fit.
    Status {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the incidents (rejections, late cuts, disk, certificate, notifier failures…).
    Incidents {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only from this time: 6h, 30m, 2d, 2024-06-02 or 2024-06-02T20:00:00-06:00.
        #[arg(long)]
        since: Option<String>,
        /// One JSON object per line (as stored) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check a package offline with the same checks as the pipeline; print what would be
    /// published or why it is refused. Exit status 0 (would publish) or 1 (refused).
    Verify {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The package file (.zip, .tar.gz, .tgz); a `<package>.sha256` beside it is checked.
        package: PathBuf,
    },
    /// The "memoria técnica" of a window: visitors, pages, traffic peaks, cuts received,
    /// incidents with durations, availability. HTML (self-contained), CSV or JSON.
    Report {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Start: RFC 3339, YYYY-MM-DD or YYYY-MM-DDTHH:MM (report offset). Default: the
        /// earliest data.
        #[arg(long, allow_hyphen_values = true)]
        from: Option<String>,
        /// End (excluded): as --from; a bare date means the end of that day. Default: now.
        #[arg(long, allow_hyphen_values = true)]
        to: Option<String>,
        #[arg(long, default_value = "html", value_parser = ["html", "csv", "json"])]
        format: String,
        /// Write here instead of stdout.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Hours and days at this offset (±HH:MM). Default: ingest.name_utc_offset.
        #[arg(long, allow_hyphen_values = true, value_parser = parse_utc_offset_arg)]
        utc_offset: Option<time::UtcOffset>,
    },
    /// Make a client key pair for a configured user and authorize it.
    Keygen {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The user (from the config's [[users]]; without a config, "institute").
        #[arg(long, short)]
        user: String,
        /// rsa (RSA-3072 in PEM, what institutes' tooling expects) or ed25519.
        #[arg(long = "type", short = 't', default_value = "rsa")]
        kind: String,
        /// Where to write the private key (default: <keys_dir>/<user>_id_<type>).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The object-storage mirror ([[mirror.s3]]): check or reconcile a bucket.
    Mirror {
        #[command(subcommand)]
        action: MirrorAction,
    },
}

#[derive(Subcommand)]
enum MirrorAction {
    /// Compare each target (or --target) with the live cut: objects missing, extra, or
    /// different (content SHA-256, Content-Type, Cache-Control). Exit status 0 when every
    /// target equals the live cut, 1 otherwise.
    Verify {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only this target (its `name`).
        #[arg(long)]
        target: Option<String>,
    },
    /// Full reconciliation: list the bucket, read back what is there, upload what differs
    /// (json/main.json last) and delete what the live cut lacks after the grace period. A
    /// running server that owns the target does it on request. Exit status 0 or 1.
    Sync {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        target: Option<String>,
    },
}

/// `difusor mirror verify|sync`.
async fn mirror(action: MirrorAction) -> anyhow::Result<()> {
    let (config, only, sync) = match action {
        MirrorAction::Verify { config, target } => (config, target, false),
        MirrorAction::Sync { config, target } => (config, target, true),
    };
    let cfg = load_config(config.as_deref())?;
    let targets: Vec<_> = cfg
        .mirror
        .targets
        .iter()
        .filter(|t| only.as_deref().is_none_or(|n| n == t.name))
        .collect();
    if targets.is_empty() {
        let known: Vec<&str> = cfg.mirror.targets.iter().map(|t| t.name.as_str()).collect();
        bail!(
            "no mirror target {} in the configuration (targets: {})",
            only.map(|n| format!("{n:?}")).unwrap_or_default(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        );
    }
    let store = difusor::store::Store::open(&cfg.data_dir)
        .with_context(|| format!("cannot open the data directory {}", cfg.data_dir.display()))?;
    let rules = cfg.web.cache_rules();
    let mut all_ok = true;
    for t in targets {
        if sync {
            match difusor::mirror::sync_target(&store, t, rules.clone()).await {
                Ok(v) if v["ok"] == true => println!("{}: synced {}", t.name, v),
                Ok(v) => {
                    all_ok = false;
                    println!("{}: sync FAILED: {}", t.name, v["error"]);
                }
                Err(e) => {
                    all_ok = false;
                    println!("{}: sync FAILED: {e}", t.name);
                }
            }
            continue;
        }
        match difusor::mirror::verify_target(&store, t, &rules).await {
            Ok((live, d)) => {
                let live = live.unwrap_or_else(|| "(no live cut)".into());
                for k in &d.missing {
                    println!("{}: missing   {k}", t.name);
                }
                for k in &d.extra {
                    println!("{}: extra     {k}", t.name);
                }
                for (k, why) in &d.different {
                    println!("{}: different {k}: {why}", t.name);
                }
                if d.is_empty() {
                    println!(
                        "{}: OK, equal to live cut {live} ({} objects)",
                        t.name, d.equal
                    );
                } else {
                    all_ok = false;
                    println!(
                        "{}: DIFFERS from live cut {live}: {} missing, {} extra, {} different, {} equal",
                        t.name,
                        d.missing.len(),
                        d.extra.len(),
                        d.different.len(),
                        d.equal
                    );
                }
            }
            Err(e) => {
                all_ok = false;
                println!("{}: cannot verify: {e}", t.name);
            }
        }
    }
    if !all_ok {
        std::process::exit(1);
    }
    Ok(())
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => {
            let cwd = std::env::current_dir().context("cannot determine the working directory")?;
            Ok(Config::defaults(&cwd))
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DIFUSOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,russh=warn,rustls=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Many HTTPS clients at once need many descriptors: raise the soft limit to the hard one.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, l) {
            tracing::warn!(error = %e, "cannot raise the open-files limit");
        }
    }
}

async fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = load_config(config.as_deref())?;
    match &cfg.source {
        Some(p) => tracing::info!(config = %p.display(), "configuration loaded"),
        None => tracing::info!("no --config: running on the embedded defaults"),
    }
    raise_fd_limit();
    let mut running = difusor::app::start(&cfg).await?;
    running.start_ingest();
    println!(
        "difusor is running: SFTP on {} (user and key above or in the config), site on https://{}/ (certificate SHA-256 {})",
        running.ssh_addr,
        running.web.https_addr,
        running.web.cert_fingerprint()
    );
    if let Some(admin) = running.admin_addr {
        println!("operator's status page and metrics: http://{admin}/ and http://{admin}/metrics");
    }
    // SIGINT (ctrl-c) and SIGTERM (systemd, docker stop) both stop cleanly.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for ctrl-c")?,
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    running.shutdown();
    Ok(())
}

fn keygen(
    config: Option<PathBuf>,
    user: &str,
    kind: &str,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let cfg = load_config(config.as_deref())?;
    let kind: ClientKeyType = kind
        .parse()
        .map_err(|_| anyhow::anyhow!("--type must be rsa or ed25519, not {kind:?}"))?;
    let Some(u) = cfg.user(user) else {
        let known: Vec<&str> = cfg.users.iter().map(|u| u.name.as_str()).collect();
        bail!(
            "no user {user:?} in the configuration (users: {})",
            known.join(", ")
        );
    };
    let g = difusor::app::keygen(&cfg, u, kind, out.as_deref())?;
    let to_whom = match u.role {
        difusor::config::Role::Publisher => "give it to the institute",
        difusor::config::Role::Operator => "give it to the operator",
    };
    println!(
        "private key: {} (mode 0600; {to_whom}, then delete it here)",
        g.private_path.display()
    );
    println!("public key:  {}", g.public_path.display());
    println!("fingerprint: {}", g.fingerprint);
    println!("authorized in: {}", u.authorized_keys.display());
    println!(
        "\nConnect with:\n\n    {}\n",
        difusor::app::sftp_command(&cfg, user, &g.private_path)
    );
    Ok(())
}

fn verify(config: Option<PathBuf>, package: &Path) -> anyhow::Result<()> {
    let cfg = load_config(config.as_deref())?;
    match difusor::ingest::verify_offline(&cfg.ingest, package) {
        Ok(report) => {
            println!("{report}");
            Ok(())
        }
        Err(reason) => {
            println!("REFUSED: {reason}");
            std::process::exit(1);
        }
    }
}

/// The data directory of a server that has run (never created here: a `status` run as root
/// before the first start would leave directories the service cannot write).
fn open_store(cfg: &Config) -> anyhow::Result<difusor::store::Store> {
    if !cfg.data_dir.join("history").is_dir() {
        bail!(
            "{} is not a difusor data directory (has the server run here? see --config)",
            cfg.data_dir.display()
        );
    }
    difusor::store::Store::open(&cfg.data_dir)
        .with_context(|| format!("cannot open the data directory {}", cfg.data_dir.display()))
}

fn status(config: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let cfg = load_config(config.as_deref())?;
    let store = open_store(&cfg)?;
    let o =
        difusor::monitor::overview::gather(&store, &cfg.monitor, time::OffsetDateTime::now_utc());
    if json {
        println!("{}", serde_json::to_string_pretty(&o)?);
    } else {
        print!("{}", o.to_text());
    }
    let alarming = o.staleness.level == difusor::monitor::watch::Level::Critical
        || !o.disk.required_history_fits;
    if alarming {
        std::process::exit(1);
    }
    Ok(())
}

fn incidents(config: Option<PathBuf>, since: Option<&str>, json: bool) -> anyhow::Result<()> {
    let cfg = load_config(config.as_deref())?;
    let now = time::OffsetDateTime::now_utc();
    let since = since
        .map(|s| difusor::monitor::overview::parse_since(s, now))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    let store = open_store(&cfg)?;
    let all = store.incidents();
    let shown: Vec<_> = all
        .iter()
        .filter(|i| since.is_none_or(|s| i.time >= s))
        .collect();
    for i in &shown {
        if json {
            println!("{}", serde_json::to_string(i)?);
        } else {
            println!("{}", difusor::monitor::overview::incident_line(i));
        }
    }
    if !json {
        let open = difusor::store::manifest::open_conditions(&all);
        if shown.is_empty() {
            println!(
                "no incidents{}",
                if since.is_some() { " in that span" } else { "" }
            );
        }
        if !open.is_empty() {
            println!("\nstill open:");
            for i in open {
                println!("  {}", difusor::monitor::overview::incident_line(i));
            }
        }
    }
    Ok(())
}

fn parse_utc_offset_arg(text: &str) -> Result<time::UtcOffset, String> {
    difusor::report::parse_utc_offset(text).map_err(|e| e.to_string())
}

/// A bad argument: say which and exit 2, as clap does for the ones it checks.
fn usage_error(message: &str) -> ! {
    eprintln!("difusor report: {message}");
    std::process::exit(2)
}

struct ReportArgs {
    config: Option<PathBuf>,
    from: Option<String>,
    to: Option<String>,
    format: String,
    out: Option<PathBuf>,
    utc_offset: Option<time::UtcOffset>,
}

fn report(a: ReportArgs) -> anyhow::Result<()> {
    use difusor::report::{self, ReportOptions};
    let cfg = load_config(a.config.as_deref())?;
    let offset = a.utc_offset.unwrap_or(cfg.ingest.name_utc_offset);
    let opts = ReportOptions::new(offset);
    let to = match &a.to {
        Some(t) => report::parse_time_arg(t, offset, true)
            .unwrap_or_else(|e| usage_error(&format!("--to: {e}"))),
        None => opts.now,
    };
    let from = match &a.from {
        Some(t) => report::parse_time_arg(t, offset, false)
            .unwrap_or_else(|e| usage_error(&format!("--from: {e}"))),
        None => report::earliest_data(&cfg.data_dir).with_context(|| {
            format!(
                "nothing recorded under {} yet: no default --from",
                cfg.data_dir.display()
            )
        })?,
    };
    if from >= to {
        usage_error("--from must be before --to");
    }
    let r = report::build(&cfg.data_dir, from, to, &opts)?;
    let text = match a.format.as_str() {
        "json" => report::to_json(&r)?,
        "csv" => report::to_csv(&r),
        _ => report::to_html(&r),
    };
    match &a.out {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Serve { config } => serve(config).await,
        Command::Keygen {
            config,
            user,
            kind,
            out,
        } => keygen(config, &user, &kind, out),
        Command::Verify { config, package } => verify(config, &package),
        Command::Report {
            config,
            from,
            to,
            format,
            out,
            utc_offset,
        } => report(ReportArgs {
            config,
            from,
            to,
            format,
            out,
            utc_offset,
        }),
        Command::Status { config, json } => status(config, json),
        Command::Incidents {
            config,
            since,
            json,
        } => incidents(config, since.as_deref(), json),
        Command::Mirror { action } => mirror(action).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("difusor: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
