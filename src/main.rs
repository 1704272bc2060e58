//! The `difusor` command line: `serve` and `keygen` (later: `verify`, `report`, `status`).
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
    /// Check a package offline with the same checks as the pipeline; print what would be
    /// published or why it is refused. Exit status 0 (would publish) or 1 (refused).
    Verify {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The package file (.zip, .tar.gz, .tgz); a `<package>.sha256` beside it is checked.
        package: PathBuf,
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
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
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
    println!(
        "private key: {} (mode 0600; give it to the institute, then delete it here)",
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
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("difusor: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
