//! Notifiers: tell the outside world that a cut went live or that an incident happened —
//! a webhook (`webhook`), a command hook (`command`), a Cloudflare CDN purge (`cloudflare`).
//!
//! Owns: one worker task and one unbounded queue per configured notifier (so a slow or
//! hanging notifier delays nobody else, and never the pipeline, which only broadcasts), the
//! order of cut events per notifier, coalescing the CDN purges that queued up while one was
//! running, the diff of each cut (computed once, shared by every notifier), the
//! `notify-failed` / `notify-recovered` incidents, and per-notifier counters ([`Notifiers::stats`]).
//!
//! Must never: block or slow the broadcast it listens to or the publication of a cut, tell a
//! notifier about its own `notify-failed`/`notify-recovered` incidents (no loops), or log a
//! secret or a webhook URL's path.
//!
//! Wiring: [`start`] follows the pipeline's cuts itself. When something must confirm a cut
//! first (a mirror that must hold the CDN purge until the objects are uploaded), use
//! [`start_without_cuts`] and call [`Notifiers::notify_cut`] when it has.

pub mod cloudflare;
pub mod command;
pub mod config;
pub mod retry;
pub mod webhook;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::{OnceCell, broadcast, mpsc};

use crate::events::CutPublished;
use crate::store::diff::{CutDiff, diff_cuts};
use crate::store::manifest::kinds;
use crate::store::{Incident, Severity, Store};

pub use config::{NotifierConfig, RawNotifier, Secret, Target};

/// Live counters of one notifier; shared between its worker and [`Notifiers::stats`].
#[derive(Debug, Default)]
pub struct Counters {
    /// Events delivered (a CDN purge of one or several coalesced cuts counts once).
    pub successes: AtomicU64,
    /// Events given up on after their retries.
    pub failures: AtomicU64,
    /// Attempts after a failed one (HTTP calls or runs).
    pub retries: AtomicU64,
    /// Events waiting in the queue.
    pub queued: AtomicU64,
    /// The last delivery failed (a `notify-failed` is open).
    pub failing: AtomicBool,
}

/// A snapshot of one notifier's counters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NotifierStats {
    pub name: String,
    /// `webhook`, `command` or `cloudflare`.
    pub kind: &'static str,
    pub successes: u64,
    pub failures: u64,
    pub retries: u64,
    pub queued: u64,
    pub failing: bool,
}

/// The diff of a cut against the cut live before it, computed by the first notifier that
/// needs it (on a blocking thread) and shared with the others.
type SharedDiff = Arc<OnceCell<Result<Arc<CutDiff>, String>>>;

#[derive(Clone)]
struct CutJob {
    event: Arc<CutPublished>,
    previous_dir: Option<PathBuf>,
    diff: SharedDiff,
}

impl CutJob {
    async fn diff(&self) -> Result<Arc<CutDiff>, String> {
        self.diff
            .get_or_init(|| async {
                let prev = self.previous_dir.clone();
                let new = self.event.cut_dir.clone();
                match tokio::task::spawn_blocking(move || diff_cuts(prev.as_deref(), &new)).await {
                    Ok(Ok(d)) => Ok(Arc::new(d)),
                    Ok(Err(e)) => Err(format!("cannot compare the cut with the previous one: {e}")),
                    Err(e) => Err(format!("the cut comparison did not finish: {e}")),
                }
            })
            .await
            .clone()
    }
}

enum Job {
    Cut(CutJob),
    Incident(Incident),
    /// Cut events were lost (the broadcast lagged): whatever changed then is unknown.
    Resync(u64),
}

/// The dispatch side of one notifier.
struct Handle {
    name: String,
    kind: &'static str,
    cuts: bool,
    incidents: bool,
    min_severity: Severity,
    queue: mpsc::UnboundedSender<Job>,
    counters: Arc<Counters>,
}

impl Handle {
    fn send(&self, job: Job) {
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        if self.queue.send(job).is_err() {
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The running notifiers. Cheap to clone; the workers keep running while any clone (or the
/// followers [`start`] spawned) is alive.
#[derive(Clone)]
pub struct Notifiers {
    inner: Arc<Inner>,
}

struct Inner {
    handles: Vec<Handle>,
    store: Store,
}

fn severity_rank(s: Severity) -> u8 {
    match s {
        Severity::Info => 0,
        Severity::Warning => 1,
        Severity::Critical => 2,
    }
}

/// A `notify-failed`/`notify-recovered` incident about notifier `name`.
fn is_about(i: &Incident, name: &str) -> bool {
    (i.kind == kinds::NOTIFY_FAILED || i.kind == kinds::NOTIFY_RECOVERED)
        && i.subject.as_deref() == Some(name)
}

impl Notifiers {
    /// Queues `ev` for every notifier that takes cuts. Never blocks.
    pub fn notify_cut(&self, ev: &CutPublished) {
        let job = CutJob {
            event: Arc::new(ev.clone()),
            previous_dir: ev
                .previous_live
                .as_deref()
                .map(|id| self.inner.store.cut_dir(id)),
            diff: Arc::new(OnceCell::new()),
        };
        for h in self.inner.handles.iter().filter(|h| h.cuts) {
            h.send(Job::Cut(job.clone()));
        }
    }

    /// Queues `i` for every notifier that takes incidents of its severity, except the
    /// notifier the incident is about. Never blocks.
    pub fn notify_incident(&self, i: &Incident) {
        for h in self.inner.handles.iter().filter(|h| {
            h.incidents
                && severity_rank(i.severity) >= severity_rank(h.min_severity)
                && !is_about(i, &h.name)
        }) {
            h.send(Job::Incident(i.clone()));
        }
    }

    /// Tells the cut notifiers that `missed` cut events were lost.
    fn resync(&self, missed: u64) {
        for h in self.inner.handles.iter().filter(|h| h.cuts) {
            h.send(Job::Resync(missed));
        }
    }

    /// Counters of every notifier, in configuration order.
    pub fn stats(&self) -> Vec<NotifierStats> {
        self.inner
            .handles
            .iter()
            .map(|h| NotifierStats {
                name: h.name.clone(),
                kind: h.kind,
                successes: h.counters.successes.load(Ordering::Relaxed),
                failures: h.counters.failures.load(Ordering::Relaxed),
                retries: h.counters.retries.load(Ordering::Relaxed),
                queued: h.counters.queued.load(Ordering::Relaxed),
                failing: h.counters.failing.load(Ordering::Relaxed),
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.handles.is_empty()
    }
}

/// Starts one worker per notifier and follows `cuts` and `incidents`.
pub fn start(
    cfgs: Vec<NotifierConfig>,
    store: Store,
    cuts: broadcast::Receiver<CutPublished>,
    incidents: broadcast::Receiver<Incident>,
) -> Notifiers {
    let n = start_without_cuts(cfgs, store, incidents);
    if !n.is_empty() {
        tokio::spawn(follow_cuts(n.clone(), cuts));
    }
    n
}

/// Like [`start`], but cuts reach the notifiers only through [`Notifiers::notify_cut`].
pub fn start_without_cuts(
    cfgs: Vec<NotifierConfig>,
    store: Store,
    incidents: broadcast::Receiver<Incident>,
) -> Notifiers {
    // A notifier that was failing when difusor stopped is still failing until it delivers.
    let open = open_failures(&store, &cfgs);
    let mut handles = Vec::with_capacity(cfgs.len());
    for cfg in cfgs {
        let (queue, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let failing = open.get(&cfg.name).copied().unwrap_or(false);
        counters.failing.store(failing, Ordering::Relaxed);
        handles.push(Handle {
            name: cfg.name.clone(),
            kind: cfg.target.type_name(),
            cuts: cfg.cuts,
            incidents: cfg.incidents,
            min_severity: cfg.min_severity,
            queue,
            counters: Arc::clone(&counters),
        });
        tracing::info!(notifier = %cfg.name, kind = cfg.target.type_name(), cuts = cfg.cuts, incidents = cfg.incidents, "notifier started");
        let worker = Worker::new(cfg, store.clone(), counters, failing);
        tokio::spawn(worker.run(rx));
    }
    let n = Notifiers {
        inner: Arc::new(Inner { handles, store }),
    };
    if !n.is_empty() {
        tokio::spawn(follow_incidents(n.clone(), incidents));
    }
    n
}

/// Per notifier name: is its last `notify-failed`/`notify-recovered` a failure?
fn open_failures(store: &Store, cfgs: &[NotifierConfig]) -> HashMap<String, bool> {
    let mut open = HashMap::new();
    if cfgs.is_empty() {
        return open;
    }
    for i in store.incidents() {
        if let Some(subject) = &i.subject {
            if i.kind == kinds::NOTIFY_FAILED {
                open.insert(subject.clone(), true);
            } else if i.kind == kinds::NOTIFY_RECOVERED {
                open.insert(subject.clone(), false);
            }
        }
    }
    open
}

async fn follow_cuts(n: Notifiers, mut cuts: broadcast::Receiver<CutPublished>) {
    loop {
        match cuts.recv().await {
            Ok(ev) => n.notify_cut(&ev),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "notifiers missed cut events");
                n.resync(missed);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn follow_incidents(n: Notifiers, mut incidents: broadcast::Receiver<Incident>) {
    loop {
        match incidents.recv().await {
            Ok(i) => n.notify_incident(&i),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                // They are all in state/incidents.jsonl; only the notification is lost.
                tracing::warn!(missed, "notifiers missed incidents");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// How a notifier delivers, set up once.
enum Delivery {
    Webhook(Result<webhook::Webhook, String>),
    Command(config::CommandTarget),
    Cloudflare(Result<cloudflare::Cloudflare, String>),
}

fn http_client(timeout: std::time::Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .user_agent(webhook::user_agent())
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))
}

/// What a delivery was about, for the incident it may cause.
enum About {
    Cuts {
        package: String,
        cut_ids: Vec<String>,
    },
    Incident(String),
}

struct Worker {
    cfg: NotifierConfig,
    store: Store,
    counters: Arc<Counters>,
    failing: bool,
    delivery: Delivery,
}

impl Worker {
    fn new(cfg: NotifierConfig, store: Store, counters: Arc<Counters>, failing: bool) -> Worker {
        let delivery = match &cfg.target {
            Target::Webhook(t) => {
                Delivery::Webhook(http_client(cfg.timeout).map(|c| webhook::Webhook::new(t, c)))
            }
            Target::Command(t) => Delivery::Command(t.clone()),
            Target::Cloudflare(t) => Delivery::Cloudflare(
                http_client(cfg.timeout).map(|c| cloudflare::Cloudflare::new(t, c)),
            ),
        };
        Worker {
            cfg,
            store,
            counters,
            failing,
            delivery,
        }
    }

    fn policy(&self) -> retry::Policy {
        retry::Policy {
            retries: self.cfg.retries,
            backoff: self.cfg.retry_backoff,
        }
    }

    fn dequeued(&self) {
        self.counters.queued.fetch_sub(1, Ordering::Relaxed);
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = rx.recv().await {
            self.dequeued();
            if matches!(self.delivery, Delivery::Cloudflare(_)) {
                // Everything queued behind this job is merged into one purge.
                let mut group = Vec::new();
                let mut missed = 0;
                let mut take = |job: Job| match job {
                    Job::Cut(c) => group.push(c),
                    Job::Resync(n) => missed += n,
                    Job::Incident(_) => {}
                };
                take(job);
                while let Ok(more) = rx.try_recv() {
                    self.dequeued();
                    take(more);
                }
                self.purge(group, missed).await;
                continue;
            }
            match job {
                Job::Cut(c) => self.cut(&c).await,
                Job::Incident(i) => self.incident(&i).await,
                Job::Resync(missed) => tracing::warn!(
                    notifier = %self.cfg.name,
                    missed,
                    "cut events were lost; this notifier was not told about them"
                ),
            }
        }
    }

    async fn cut(&mut self, job: &CutJob) {
        if matches!(self.delivery, Delivery::Cloudflare(_)) {
            return self.purge(vec![job.clone()], 0).await;
        }
        let diff = job.diff().await;
        if let Err(e) = &diff {
            tracing::warn!(notifier = %self.cfg.name, cut = %job.event.cut_id, error = %e, "changed-file counts unknown");
        }
        let diff = diff.ok();
        let policy = self.policy();
        let name = self.cfg.name.clone();
        let outcome = match &self.delivery {
            Delivery::Webhook(Ok(w)) => {
                let body = webhook::cut_body(&job.event, diff.as_deref());
                retry::with_retries(policy, &self.counters, &name, || {
                    w.post("cut-published", &body)
                })
                .await
            }
            Delivery::Webhook(Err(e)) | Delivery::Cloudflare(Err(e)) => Err(e.clone()),
            Delivery::Command(t) => {
                let mut env = command::cut_env(&job.event, diff.as_deref());
                // Kept until the runs are over, then deleted.
                let mut lists = Vec::new();
                if let Some(d) = &diff {
                    for (var, paths) in [
                        ("DIFUSOR_CHANGED_LIST", &d.changed),
                        ("DIFUSOR_REMOVED_LIST", &d.removed),
                    ] {
                        match command::ListFile::write(&name, paths) {
                            Ok(l) => {
                                env.push((var.to_owned(), l.path.display().to_string()));
                                lists.push(l);
                            }
                            Err(e) => {
                                tracing::warn!(notifier = %name, error = %e, "cannot write {var}")
                            }
                        }
                    }
                }
                let timeout = self.cfg.timeout;
                let r = retry::with_retries(policy, &self.counters, &name, || {
                    command::run_once(&name, t, &env, timeout)
                })
                .await;
                drop(lists);
                r
            }
            // Purges went through `purge` above.
            Delivery::Cloudflare(Ok(_)) => return,
        };
        let about = About::Cuts {
            package: job.event.manifest.original_name.clone(),
            cut_ids: vec![job.event.cut_id.clone()],
        };
        self.settle(outcome, about).await;
    }

    async fn incident(&mut self, i: &Incident) {
        let policy = self.policy();
        let name = self.cfg.name.clone();
        let outcome = match &self.delivery {
            Delivery::Webhook(Ok(w)) => {
                let body = webhook::incident_body(i);
                retry::with_retries(policy, &self.counters, &name, || w.post("incident", &body))
                    .await
            }
            Delivery::Webhook(Err(e)) => Err(e.clone()),
            Delivery::Command(t) => {
                let env = command::incident_env(i);
                let timeout = self.cfg.timeout;
                retry::with_retries(policy, &self.counters, &name, || {
                    command::run_once(&name, t, &env, timeout)
                })
                .await
            }
            // The CDN is never told about incidents (its config refuses `events`).
            Delivery::Cloudflare(_) => return,
        };
        self.settle(outcome, About::Incident(i.kind.clone())).await;
    }

    /// One purge for `group` (cuts queued together, in order), or everything when cut
    /// events were lost, when configured so, or when a cut's changes cannot be known.
    async fn purge(&mut self, group: Vec<CutJob>, missed: u64) {
        let Delivery::Cloudflare(cf) = &self.delivery else {
            return;
        };
        let name = self.cfg.name.clone();
        let mut everything = missed > 0;
        if let Ok(cf) = cf
            && cf.target.purge_everything
        {
            everything = true;
        }
        let mut paths = BTreeSet::new();
        if !everything {
            for job in &group {
                match job.diff().await {
                    Ok(d) => paths.extend(d.changed.iter().chain(&d.removed).cloned()),
                    Err(e) => {
                        tracing::warn!(notifier = %name, cut = %job.event.cut_id, error = %e, "purging everything instead");
                        everything = true;
                        break;
                    }
                }
            }
        }
        let outcome = match cf {
            Err(e) => Err(e.clone()),
            Ok(cf) => {
                let what = if everything {
                    cloudflare::Purge::Everything
                } else {
                    cloudflare::Purge::Urls(cloudflare::purge_urls(
                        &cf.target.base_urls,
                        paths.iter().map(String::as_str),
                    ))
                };
                match &what {
                    cloudflare::Purge::Urls(urls) if urls.is_empty() => {
                        tracing::info!(notifier = %name, "nothing changed: no purge needed");
                        Ok(())
                    }
                    _ => cf.purge(&what, self.policy(), &self.counters, &name).await,
                }
            }
        };
        let cut_ids: Vec<String> = group.iter().map(|j| j.event.cut_id.clone()).collect();
        let package = group
            .last()
            .map(|j| j.event.manifest.original_name.clone())
            .unwrap_or_default();
        if group.len() > 1 {
            tracing::info!(notifier = %name, cuts = ?cut_ids, "cdn purges coalesced");
        }
        let about = if group.is_empty() {
            About::Incident(format!("{missed} lost cut event(s)"))
        } else {
            About::Cuts { package, cut_ids }
        };
        self.settle(outcome, about).await;
    }

    /// Counts the outcome; records `notify-failed` (always for a cut, for an incident only
    /// when this notifier was healthy, so two failing notifiers cannot feed each other
    /// incidents forever) and `notify-recovered` on the first success after a failure.
    async fn settle(&mut self, outcome: Result<(), String>, about: About) {
        let name = self.cfg.name.clone();
        let incident = match outcome {
            Ok(()) => {
                self.counters.successes.fetch_add(1, Ordering::Relaxed);
                let was = std::mem::replace(&mut self.failing, false);
                self.counters.failing.store(false, Ordering::Relaxed);
                if !was {
                    return;
                }
                tracing::info!(notifier = %name, "notifier delivers again");
                let package = match &about {
                    About::Cuts { package, .. } => Some(package.clone()),
                    About::Incident(_) => None,
                };
                Incident {
                    time: time::OffsetDateTime::now_utc(),
                    severity: Severity::Info,
                    kind: kinds::NOTIFY_RECOVERED.to_owned(),
                    package,
                    uploader: None,
                    reason: format!(
                        "{} notifier {name} delivered again",
                        self.cfg.target.type_name()
                    ),
                    subject: Some(name.clone()),
                }
            }
            Err(reason) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                let was = std::mem::replace(&mut self.failing, true);
                self.counters.failing.store(true, Ordering::Relaxed);
                let (what, package, for_cut) = match &about {
                    About::Cuts { package, cut_ids } => (
                        format!("cut {} ({package})", cut_ids.join(", ")),
                        Some(package.clone()),
                        true,
                    ),
                    About::Incident(kind) => (format!("incident {kind}"), None, false),
                };
                let reason = format!(
                    "{} notifier {name} failed for {what}: {reason}",
                    self.cfg.target.type_name()
                );
                tracing::warn!(notifier = %name, %reason, "notification failed");
                if was && !for_cut {
                    return;
                }
                Incident {
                    time: time::OffsetDateTime::now_utc(),
                    severity: Severity::Warning,
                    kind: kinds::NOTIFY_FAILED.to_owned(),
                    package,
                    uploader: None,
                    reason,
                    subject: Some(name.clone()),
                }
            }
        };
        let store = self.store.clone();
        let recorded = tokio::task::spawn_blocking(move || store.record_incident(&incident)).await;
        match recorded {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(notifier = %name, error = %e, "cannot record the incident")
            }
            Err(e) => tracing::error!(notifier = %name, error = %e, "cannot record the incident"),
        }
    }
}
