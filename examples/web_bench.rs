//! Serves one directory as a cut with difusor's web server, for `bench/https`.
//!
//! `cargo run --release --example web_bench -- --dir CUT --listen 127.0.0.1:9443 \
//!     --cert chain.pem --key key.pem --logs /tmp/logs [--no-access-log] [--threads N]`
//!
//! The rate limit is off (wrk is one client address); everything else is the default `[web]`.

use std::path::PathBuf;

use clap::Parser;
use difusor::publish::{CutMeta, Snapshot};
use difusor::web::config::{RawWeb, WebConfig};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:9443")]
    listen: String,
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
    #[arg(long)]
    logs: PathBuf,
    #[arg(long)]
    no_access_log: bool,
    /// Runtime worker threads of the main runtime (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// `web.workers`: serving threads with their own runtime and socket (default: one per
    /// core; 0 serves on the main multi-thread runtime).
    #[arg(long)]
    workers: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n);
    }
    rt.enable_all().build()?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut raw = RawWeb {
        listen: Some(args.listen.clone()),
        cert: Some(args.cert.clone()),
        key: Some(args.key.clone()),
        ..Default::default()
    };
    raw.workers = args.workers;
    raw.rate_limit.enabled = Some(false);
    raw.access_log.enabled = Some(!args.no_access_log);
    let cfg = WebConfig::from_raw(raw, &std::env::current_dir()?)?;
    let rules = cfg.cache_rules();
    let dir = args.dir.clone();
    let snap = tokio::task::spawn_blocking(move || {
        Snapshot::build(
            &dir,
            CutMeta {
                cut_id: "bench".into(),
                cut_time: None,
                published_at: None,
                packages_in_history: 1,
            },
            &rules,
        )
    })
    .await??;
    let live = std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(snap));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = difusor::web::start(
        &cfg,
        &args.logs,
        &args.logs,
        live,
        std::sync::Arc::new(difusor::monitor::metrics::Metrics::new()),
        stop_rx,
    )
    .await?;
    println!("listening {}", server.https_addr);
    tokio::signal::ctrl_c().await?;
    let _ = stop_tx.send(true);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    Ok(())
}
