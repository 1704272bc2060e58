//! Mirroring every published cut to S3-compatible object storage (`[[mirror.s3]]`), so a CDN in
//! front of the bucket can serve a national election night while difusor stays the ingest
//! point and the authority on what is live.
//!
//! Owns: one worker task per target, which after each cut goes live
//! 1. scans the live cut (`scan`: the files the HTTPS server serves, hashed; hard links of an
//!    increment are not read again) and compares each file with its journal (`journal`: what
//!    the bucket holds — never a listing per cut, and the last mirrored cut may be pruned);
//! 2. while the scan goes on, journals the keys it will write (in batches, each fsynced before
//!    its uploads start) and uploads every changed file except `json/main.json` (`concurrency`
//!    at once, multipart above a threshold, each request retried), then — only when the scan
//!    ended and all of them are confirmed — `json/main.json`, so a browser that reads the new
//!    `main.json` never asks for a file that is not there yet;
//! 3. schedules the deletes of files the cut no longer has, `delete_grace` after `main.json`
//!    moved (journaled, so a restart still does them; cancelled if a newer cut brings the
//!    file back).
//!
//! Cuts are mirrored in order; when a newer cut is live by the time the files of one are up,
//! the worker goes on to the newest (uploading what else changed) before `main.json`, which
//! then is the newest cut's: `main.json` always names a cut whose files are all in the bucket.
//! A failing target raises one `mirror-failed` incident, is retried with capped back-off, and
//! `mirror-recovered` closes it. [`Mirror::lag`] tells how far each target is behind;
//! [`Mirror::subscribe_mirrored`] announces a cut once every target has it (the CDN purge
//! waits for that). `reconcile` holds `difusor mirror verify|sync`.
//!
//! Must never: block or slow the pipeline or local serving (own tasks; it only reads cut
//! directories and the broadcast), upload `json/main.json` before the other files of its cut,
//! delete a key the mirrored cut has, list the bucket in the normal course, or log a
//! credential.

pub mod client;
pub mod config;
pub mod journal;
pub mod reconcile;
pub mod scan;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use time::OffsetDateTime;
use tokio::sync::{Notify, broadcast};

pub use config::{MirrorConfig, RawMirror, S3Target};

use crate::events::CutPublished;
use crate::store::manifest::{kinds, open_conditions};
use crate::store::{Incident, Severity, Store};
use crate::web::cache_control::CacheRules;
use client::{Bucket, BucketError, Credentials, SetupError};
use journal::{Journal, JournalLock, ObjectRecord, Record};
use scan::{CutFiles, HashCache};

/// The object that says which cut the site shows: uploaded last.
pub const MAIN_JSON: &str = "json/main.json";

/// Why the mirror cannot start (the server does not start either: a configured mirror that
/// silently does nothing would leave the public site stale).
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("mirror target {target:?}: journal under state/mirror/: {source}")]
    Journal {
        target: String,
        source: std::io::Error,
    },
    #[error(
        "mirror target {target:?}: its journal is locked by another difusor process (a running server, or `difusor mirror sync`)"
    )]
    Locked { target: String },
}

/// How far one target is behind the live cut (for `/metrics` and the status page).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TargetLag {
    pub name: String,
    /// Cuts published since the one the bucket shows (0: up to date).
    pub cuts_behind: u64,
    /// Since the oldest cut the bucket does not show yet went live (0 when up to date).
    pub seconds_behind: f64,
    /// The cut whose `json/main.json` is in the bucket.
    pub last_mirrored_cut: Option<String>,
    /// False while a `mirror-failed` incident is open for this target.
    pub healthy: bool,
    /// Objects uploaded / deleted and failed attempts since start.
    pub uploads_total: u64,
    pub deletes_total: u64,
    pub failures_total: u64,
}

/// What the workers and `lag()` share about one target.
#[derive(Debug, Default)]
struct Progress {
    mirrored_cut: Option<String>,
    mirrored_published_at: Option<OffsetDateTime>,
    failing: bool,
    uploads_total: u64,
    deletes_total: u64,
    failures_total: u64,
}

/// A live cut the mirror has heard of.
#[derive(Debug, Clone)]
struct Published {
    cut_id: String,
    published_at: OffsetDateTime,
    event: Option<CutPublished>,
}

#[derive(Debug)]
struct Shared {
    store: Store,
    names: Vec<String>,
    progress: Vec<Mutex<Progress>>,
    /// Cuts not yet announced as mirrored by every target, by publication time.
    published: Mutex<Vec<Published>>,
    /// The last cut announced on `mirrored_tx`.
    announced: Mutex<Option<Published>>,
    mirrored_tx: broadcast::Sender<CutPublished>,
}

/// The running mirror: one worker per target.
#[derive(Debug)]
pub struct Mirror {
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn published_at(store: &Store, cut: &str) -> Option<OffsetDateTime> {
    store.read_manifest(cut).and_then(|m| m.published_at)
}

impl Shared {
    /// A cut went live (or was found live): remember it for lag and the announcement.
    fn heard(&self, cut_id: &str, event: Option<CutPublished>) {
        let mut p = lock(&self.published);
        if p.iter().any(|x| x.cut_id == cut_id)
            || lock(&self.announced)
                .as_ref()
                .is_some_and(|a| a.cut_id == cut_id)
        {
            return;
        }
        let at = event
            .as_ref()
            .and_then(|e| e.manifest.published_at)
            .or_else(|| published_at(&self.store, cut_id))
            .unwrap_or_else(OffsetDateTime::now_utc);
        p.push(Published {
            cut_id: cut_id.to_owned(),
            published_at: at,
            event,
        });
        p.sort_by_key(|x| x.published_at);
        drop(p);
        // A worker may have mirrored it before this event was passed on.
        self.announce();
    }

    /// Target `i` now shows `cut`: update it, and announce the newest cut every target has.
    fn mirrored(&self, i: usize, cut: &str) {
        let at = lock(&self.published)
            .iter()
            .find(|p| p.cut_id == cut)
            .map(|p| p.published_at)
            .or_else(|| published_at(&self.store, cut))
            .unwrap_or_else(OffsetDateTime::now_utc);
        if let Some(p) = self.progress.get(i) {
            let mut p = lock(p);
            p.mirrored_cut = Some(cut.to_owned());
            p.mirrored_published_at = Some(at);
        }
        self.announce();
    }

    /// Announces the newest cut every target shows, if it was not announced yet. Serialised
    /// by the `published` lock, so announcements only move forward.
    fn announce(&self) {
        let Some(everyone) = self
            .progress
            .iter()
            .map(|p| lock(p).mirrored_published_at)
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.into_iter().min())
        else {
            return;
        };
        let mut published = lock(&self.published);
        let Some(pos) = published.iter().rposition(|p| p.published_at <= everyone) else {
            return;
        };
        let newest = published[pos].clone();
        published.drain(..=pos);
        let mut announced = lock(&self.announced);
        let previous = announced.as_ref().map(|a| a.cut_id.clone());
        let event = match newest.event.clone() {
            Some(mut ev) => {
                // The purge must cover everything since the last announced cut.
                ev.previous_live = previous;
                Some(ev)
            }
            None => self
                .store
                .read_manifest(&newest.cut_id)
                .map(|m| CutPublished {
                    cut_id: newest.cut_id.clone(),
                    cut_dir: self.store.cut_dir(&newest.cut_id),
                    manifest: m,
                    previous_live: previous,
                    packages_in_history: self.store.manifests().len(),
                }),
        };
        *announced = Some(newest);
        if let Some(ev) = event {
            let _ = self.mirrored_tx.send(ev);
        }
    }
}

impl Mirror {
    /// Starts one worker per target. `events` must be subscribed before anything can publish.
    /// None when no target is configured.
    pub fn start(
        cfg: &MirrorConfig,
        store: Store,
        rules: CacheRules,
        events: broadcast::Receiver<CutPublished>,
    ) -> Result<Option<Arc<Mirror>>, MirrorError> {
        if cfg.targets.is_empty() {
            return Ok(None);
        }
        let mut workers = Vec::with_capacity(cfg.targets.len());
        for (i, t) in cfg.targets.iter().enumerate() {
            workers.push(Worker::open(i, t, &store, rules.clone())?);
        }
        let open = open_conditions(&store.incidents())
            .into_iter()
            .filter(|c| c.kind == kinds::MIRROR_FAILED)
            .filter_map(|c| c.subject.clone())
            .collect::<BTreeSet<_>>();
        let shared = Arc::new(Shared {
            names: cfg.targets.iter().map(|t| t.name.clone()).collect(),
            progress: workers
                .iter()
                .map(|w| {
                    let cut = w.journal.state.mirrored_cut.clone();
                    Mutex::new(Progress {
                        mirrored_published_at: cut.as_deref().and_then(|c| published_at(&store, c)),
                        mirrored_cut: cut,
                        failing: open.contains(&w.target.name),
                        ..Progress::default()
                    })
                })
                .collect(),
            published: Mutex::new(Vec::new()),
            announced: Mutex::new(None),
            mirrored_tx: broadcast::channel(64).0,
            store: store.clone(),
        });
        // What is behind already: cuts published after the oldest one every target shows.
        let oldest = shared
            .progress
            .iter()
            .map(|p| lock(p).mirrored_published_at)
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.into_iter().min());
        for m in store.manifests() {
            if let Some(at) = m.published_at
                && oldest.is_none_or(|o| at > o)
            {
                shared.heard(&m.cut_id, None);
            }
        }
        // Announced already: the oldest cut every target shows (not announced again).
        if let Some(o) = oldest {
            let shown = shared.progress.iter().find_map(|p| {
                let p = lock(p);
                p.mirrored_cut
                    .clone()
                    .filter(|_| p.mirrored_published_at == Some(o))
            });
            *lock(&shared.announced) = shown.map(|cut_id| Published {
                cut_id,
                published_at: o,
                event: None,
            });
        }
        let wakes: Vec<Arc<Notify>> = workers.iter().map(|_| Arc::new(Notify::new())).collect();
        for (w, wake) in workers.into_iter().zip(&wakes) {
            let failing = lock(&shared.progress[w.index]).failing;
            tokio::spawn(w.run(Arc::clone(&shared), Arc::clone(wake), failing));
        }
        tokio::spawn(follow(Arc::clone(&shared), events, wakes));
        tracing::info!(targets = ?shared.names, "mirror started");
        Ok(Some(Arc::new(Mirror { shared })))
    }

    /// How far each target is behind, in configuration order.
    pub fn lag(&self) -> Vec<TargetLag> {
        let now = OffsetDateTime::now_utc();
        let published = lock(&self.shared.published).clone();
        self.shared
            .names
            .iter()
            .zip(&self.shared.progress)
            .map(|(name, p)| {
                let p = lock(p);
                let behind: Vec<&Published> = published
                    .iter()
                    .filter(|c| p.mirrored_published_at.is_none_or(|m| c.published_at > m))
                    .filter(|c| p.mirrored_cut.as_deref() != Some(c.cut_id.as_str()))
                    .collect();
                TargetLag {
                    name: name.clone(),
                    cuts_behind: behind.len() as u64,
                    seconds_behind: behind
                        .first()
                        .map(|c| (now - c.published_at).as_seconds_f64().max(0.0))
                        .unwrap_or(0.0),
                    last_mirrored_cut: p.mirrored_cut.clone(),
                    healthy: !p.failing,
                    uploads_total: p.uploads_total,
                    deletes_total: p.deletes_total,
                    failures_total: p.failures_total,
                }
            })
            .collect()
    }

    /// Cuts every target has confirmed (`json/main.json` up), newest first when several were
    /// mirrored at once; `previous_live` is the cut announced before, so a purge of what
    /// changed covers every skipped cut too.
    pub fn subscribe_mirrored(&self) -> broadcast::Receiver<CutPublished> {
        self.shared.mirrored_tx.subscribe()
    }
}

/// Passes cut events on to the workers (they read the live cut from the store themselves).
async fn follow(
    shared: Arc<Shared>,
    mut events: broadcast::Receiver<CutPublished>,
    wakes: Vec<Arc<Notify>>,
) {
    use broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(ev) => {
                let id = ev.cut_id.clone();
                shared.heard(&id, Some(ev));
            }
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    skipped = n,
                    "mirror: cut events skipped; mirroring the live cut"
                );
                if let Some(live) = shared.store.live() {
                    shared.heard(&live, None);
                }
            }
            Err(RecvError::Closed) => return,
        }
        for w in &wakes {
            w.notify_one();
        }
    }
}

fn unix_now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// One target's worker: its bucket, journal and hash cache.
struct Worker {
    index: usize,
    target: S3Target,
    bucket: Bucket,
    journal: Journal,
    _lock: JournalLock,
    store: Store,
    rules: CacheRules,
    cache: HashCache,
    /// The files of the cut the bucket shows (checked before each delete).
    mirrored_files: Option<(String, Arc<CutFiles>)>,
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("{key}: {source}")]
    Object { key: String, source: BucketError },
    #[error("reading cut {cut}: {source}")]
    Cut { cut: String, source: std::io::Error },
    #[error("writing the journal: {0}")]
    Journal(#[from] std::io::Error),
}

/// A scan's result, the hash cache it carried, and how long it took.
type ScanOutcome = (std::io::Result<CutFiles>, HashCache, Duration);

/// A changed file the scan found: key, file, and its bytes when the scan read them whole.
type Found = (String, scan::CutFile, Option<Bytes>);

/// A scan hands over at most this many bytes of small files in all, so at most this much waits
/// in memory for its upload (the other files are read again when their turn comes).
const CARRY_BUDGET: u64 = 16 << 20;

/// Uploads one file of a cut: from the bytes the scan read, or from the file.
async fn upload(
    bucket: &Bucket,
    key: &str,
    f: &scan::CutFile,
    body: Option<Bytes>,
) -> Result<(), BucketError> {
    match body {
        Some(bytes) => bucket.put_bytes(key, bytes, &f.headers).await,
        None => bucket.put_file(key, &f.source, f.size, &f.headers).await,
    }
}

/// How long a changed file found by the scan may wait for others to share its journal batch.
const BATCH_WAIT: Duration = Duration::from_millis(5);

/// A cut's `json/main.json` when the bucket does not show it yet: uploaded last, from `body`
/// when the scan read it.
struct MainJson {
    body: Option<Bytes>,
}

/// What one mirrored cut took.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CutReport {
    pub cut: String,
    pub uploaded: u64,
    pub uploaded_bytes: u64,
    pub deletes_scheduled: u64,
    pub skipped_to_newer: u64,
    pub hashed: u64,
    /// Listing and hashing the cut (of the whole time the cut took).
    pub scan_ms: u64,
}

impl Worker {
    fn open(
        index: usize,
        target: &S3Target,
        store: &Store,
        rules: CacheRules,
    ) -> Result<Worker, MirrorError> {
        let credentials = Credentials::load(&target.name, &target.credentials)?;
        let bucket = Bucket::new(target, &credentials)?;
        let jerr = |source| MirrorError::Journal {
            target: target.name.clone(),
            source,
        };
        let lock = journal::try_lock(&store.state_dir(), &target.name)
            .map_err(jerr)?
            .ok_or_else(|| MirrorError::Locked {
                target: target.name.clone(),
            })?;
        let journal = Journal::open(&store.state_dir(), &target.name, &lock).map_err(jerr)?;
        Ok(Worker {
            index,
            target: target.clone(),
            bucket,
            journal,
            _lock: lock,
            store: store.clone(),
            rules,
            cache: HashCache::default(),
            mirrored_files: None,
        })
    }

    fn request_path(&self) -> PathBuf {
        journal::journal_dir(&self.store.state_dir())
            .join(format!("{}.sync-request", self.target.name))
    }

    async fn run(mut self, shared: Arc<Shared>, wake: Arc<Notify>, mut failing: bool) {
        let mut backoff = Duration::from_secs(1);
        let mut failing_since: Option<Instant> = None;
        let mut failed_attempts = 0u64;
        loop {
            let requested = self.request_path().exists();
            let attempt = if requested {
                let r = self.sync().await;
                let result = match &r {
                    Ok(rep) => serde_json::json!({ "ok": true, "report": rep }),
                    Err(e) => serde_json::json!({ "ok": false, "error": e.to_string() }),
                };
                let _ = crate::store::write_atomic(
                    &self.request_path().with_extension("sync-result"),
                    result.to_string().as_bytes(),
                );
                let _ = std::fs::remove_file(self.request_path());
                r.map(Some)
            } else {
                self.step(&shared).await
            };
            match attempt {
                Ok(report) => {
                    if let Some(r) = report.as_ref().filter(|r| !r.cut.is_empty()) {
                        self.mirrored(&shared, r);
                    }
                    backoff = Duration::from_secs(1);
                    if failing {
                        failing = false;
                        lock(&shared.progress[self.index]).failing = false;
                        let since = failing_since.map(|s| s.elapsed().as_secs()).unwrap_or(0);
                        self.incident(
                            kinds::MIRROR_RECOVERED,
                            Severity::Info,
                            format!(
                                "target works again after {failed_attempts} failed attempt(s) over {since} s; the bucket shows cut {}",
                                self.journal.state.mirrored_cut.as_deref().unwrap_or("none")
                            ),
                        );
                        tracing::info!(target = %self.target.name, "mirror target recovered");
                    }
                    failing_since = None;
                    failed_attempts = 0;
                }
                Err(e) => {
                    failed_attempts += 1;
                    lock(&shared.progress[self.index]).failures_total += 1;
                    tracing::warn!(target = %self.target.name, error = %e, retry_in_s = backoff.as_secs(), "mirror attempt failed");
                    if !failing {
                        failing = true;
                        failing_since = Some(Instant::now());
                        lock(&shared.progress[self.index]).failing = true;
                        self.incident(
                            kinds::MIRROR_FAILED,
                            Severity::Critical,
                            format!(
                                "{e}; retrying (at most every {} s); the bucket still shows cut {}, local serving is unaffected",
                                self.target.max_backoff.as_secs(),
                                self.journal.state.mirrored_cut.as_deref().unwrap_or("none")
                            ),
                        );
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.target.max_backoff);
                    continue;
                }
            }
            // Idle: until a cut, the next delete, or a look for a sync request.
            let now = unix_now();
            let next_delete = self
                .journal
                .state
                .deletes
                .values()
                .min()
                .map(|t| Duration::from_secs((t - now).clamp(0, 3600) as u64));
            let wait = next_delete
                .unwrap_or(Duration::MAX)
                .min(Duration::from_secs(2));
            if self.journal.state.mirrored_cut == self.store.live() {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }

    fn incident(&self, kind: &str, severity: Severity, reason: String) {
        let _ = self.store.record_incident(&Incident {
            time: OffsetDateTime::now_utc(),
            severity,
            kind: kind.to_owned(),
            package: None,
            uploader: None,
            reason,
            subject: Some(self.target.name.clone()),
        });
    }

    fn mirrored(&self, shared: &Shared, r: &CutReport) {
        {
            let mut p = lock(&shared.progress[self.index]);
            p.uploads_total += r.uploaded;
        }
        shared.mirrored(self.index, &r.cut);
    }

    /// Mirrors the live cut if the bucket does not show it yet, then does the due deletes.
    async fn step(&mut self, shared: &Shared) -> Result<Option<CutReport>, AttemptError> {
        let mut report = None;
        if let Some(live) = self.store.live()
            && self.journal.state.mirrored_cut.as_deref() != Some(live.as_str())
        {
            report = Some(self.mirror_cut(live).await?);
        }
        let deleted = self.run_due_deletes().await?;
        if deleted > 0 {
            lock(&shared.progress[self.index]).deletes_total += deleted;
        }
        Ok(report)
    }

    async fn scan(&mut self, cut: &str) -> Result<Arc<CutFiles>, AttemptError> {
        let scanning = self.start_scan(cut, 0, |_, _, _| {});
        let (files, _) = self.finish_scan(cut, scanning.await)?;
        Ok(Arc::new(files))
    }

    /// Scans `cut` on a blocking thread with the hash cache, handing each file to `each` there
    /// as soon as it is hashed (with its bytes, within `carry_budget`: `scan_cut_each`).
    /// [`Worker::finish_scan`] puts the cache back.
    fn start_scan(
        &mut self,
        cut: &str,
        carry_budget: u64,
        mut each: impl FnMut(&str, &scan::CutFile, Option<Bytes>) + Send + 'static,
    ) -> tokio::task::JoinHandle<ScanOutcome> {
        let dir = self.store.cut_dir(cut);
        let rules = self.rules.clone();
        let mut cache = std::mem::take(&mut self.cache);
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let r = scan::scan_cut_each(&dir, &rules, &mut cache, carry_budget, &mut each);
            (r, cache, started.elapsed())
        })
    }

    /// The cut's files and how long the scan took; the hash cache is back in place.
    fn finish_scan(
        &mut self,
        cut: &str,
        joined: Result<ScanOutcome, tokio::task::JoinError>,
    ) -> Result<(CutFiles, Duration), AttemptError> {
        let err = |source| AttemptError::Cut {
            cut: cut.to_owned(),
            source,
        };
        let (result, cache, took) =
            joined.map_err(|e| err(std::io::Error::other(e.to_string())))?;
        self.cache = cache;
        Ok((result.map_err(err)?, took))
    }

    /// Whether the bucket may hold something else than `f` under `key`.
    fn differs(&self, key: &str, f: &scan::CutFile) -> bool {
        self.journal.state.objects.get(key).is_none_or(|o| {
            o.sha256 != f.sha256
                || o.size != f.size
                || o.content_type != f.headers.content_type
                || o.cache_control != f.headers.cache_control
        })
    }

    /// Journals one upload's outcome: a `put` once the bucket confirmed it; otherwise the
    /// error that ends the attempt (after making the journal durable).
    fn confirmed(
        &mut self,
        key: String,
        f: &scan::CutFile,
        r: Result<(), BucketError>,
        report: &mut CutReport,
    ) -> Result<(), AttemptError> {
        match r {
            Ok(()) => {
                tracing::debug!(target = %self.target.name, key = %key, bytes = f.size, "uploaded");
                report.uploaded += 1;
                report.uploaded_bytes += f.size;
                // Not fsynced: a `put` lost to a power cut leaves its key uncertain (its
                // `begin` was durable), so it is uploaded again.
                self.journal.append(Record::Put {
                    key,
                    object: ObjectRecord {
                        sha256: f.sha256.clone(),
                        size: f.size,
                        content_type: f.headers.content_type.clone(),
                        cache_control: f.headers.cache_control.clone(),
                    },
                })?;
                Ok(())
            }
            Err(BucketError::Local(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                // The cut was pruned under us (a newer one is live): the caller starts over
                // from the newest.
                self.journal.sync()?;
                Err(AttemptError::Cut {
                    cut: key,
                    source: e,
                })
            }
            Err(source) => {
                self.journal.sync()?;
                Err(AttemptError::Object { key, source })
            }
        }
    }

    /// Reads `cut` and, while it is still being read, uploads every file the bucket lacks
    /// except `json/main.json` (`concurrency` at once). SAFETY of the journal: each key's
    /// `begin` is fsynced before its upload starts; keys are journaled in batches, each as soon
    /// as it can fill the free upload slots (or its oldest file waited [`BATCH_WAIT`], or the
    /// reading ended), so a 200-file increment costs a few fsyncs, not 200.
    /// `main.json`, when it changed, is journaled with the last batch but not uploaded.
    /// Returns the cut's files, and whether `main.json` still has to go up (with its bytes
    /// when the scan read them), once the reading ended and every upload is confirmed; stops
    /// at the first failure. Small files the scan read for their hash are uploaded from those
    /// bytes (at most [`CARRY_BUDGET`] of them per scan).
    async fn scan_and_upload(
        &mut self,
        cut: &str,
        report: &mut CutReport,
    ) -> Result<(Arc<CutFiles>, Option<MainJson>), AttemptError> {
        use futures::stream::FuturesUnordered;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Found>();
        let reading = self.start_scan(cut, CARRY_BUDGET, move |k, f, body| {
            // The receiver is gone only when the attempt already failed.
            let _ = tx.send((k.to_owned(), f.clone(), body));
        });
        let concurrency = self.target.concurrency.max(1);
        // Changed files found, not journaled yet; journaled, not started; started.
        let mut found: Vec<Found> = Vec::new();
        let mut ready: std::collections::VecDeque<Found> = Default::default();
        let mut inflight = FuturesUnordered::new();
        let mut main: Option<MainJson> = None;
        // When the oldest file in `found` was found (None while `found` is empty).
        let mut waiting_since: Option<tokio::time::Instant> = None;
        let mut main_journaled = false;
        let mut listing = true;
        let mut failed: Option<AttemptError> = None;
        loop {
            // PERF: a batch costs an fsync; journal one when it can fill every free upload slot,
            // when its oldest file waited BATCH_WAIT, or when the reading ended — not at each
            // file found: at the start of a cut the scan finds files faster than one fsync a
            // file would let them go up. The wait bounds the delay of a sparse cut's files.
            let free = concurrency.saturating_sub(ready.len() + inflight.len());
            let fills = free > 0 && found.len() >= free;
            let overdue = waiting_since.is_some_and(|t| t.elapsed() >= BATCH_WAIT);
            let main_due = !listing && main.is_some() && !main_journaled;
            if (!found.is_empty() && (fills || overdue || !listing)) || main_due {
                let mut keys: Vec<String> = found.iter().map(|(k, _, _)| k.clone()).collect();
                if main_due {
                    keys.push(MAIN_JSON.to_owned());
                    main_journaled = true;
                }
                let keys_len = keys.len();
                let begin = Record::Begin {
                    cut: cut.to_owned(),
                    keys,
                };
                if let Err(e) = self.journal.append_durable(begin).await {
                    failed = Some(e.into());
                    break;
                }
                tracing::debug!(target = %self.target.name, keys = keys_len, "begin durable");
                ready.extend(found.drain(..));
                waiting_since = None;
            }
            while inflight.len() < concurrency {
                let Some((key, f, body)) = ready.pop_front() else {
                    break;
                };
                let bucket = self.bucket.clone();
                inflight.push(async move {
                    let r = upload(&bucket, &key, &f, body).await;
                    (key, f, r)
                });
            }
            if !listing && found.is_empty() && ready.is_empty() && inflight.is_empty() {
                break;
            }
            tokio::select! {
                got = rx.recv(), if listing => {
                    use tokio::sync::mpsc::error::TryRecvError;
                    let mut next = got;
                    if next.is_none() {
                        tracing::debug!(target = %self.target.name, "cut read");
                        listing = false;
                    }
                    // Take all that is waiting: the batch grows while the last fsync ran.
                    while let Some((key, f, body)) = next {
                        if key == MAIN_JSON {
                            main = self.differs(&key, &f).then_some(MainJson { body });
                        } else if self.differs(&key, &f) {
                            found.push((key, f, body));
                            waiting_since.get_or_insert_with(tokio::time::Instant::now);
                        }
                        next = match rx.try_recv() {
                            Ok(item) => Some(item),
                            Err(TryRecvError::Empty) => None,
                            Err(TryRecvError::Disconnected) => {
                                listing = false;
                                None
                            }
                        };
                    }
                }
                () = tokio::time::sleep_until(
                    waiting_since.unwrap_or_else(tokio::time::Instant::now) + BATCH_WAIT
                ), if waiting_since.is_some() => {}
                Some((key, f, r)) = inflight.next(), if !inflight.is_empty() => {
                    if let Err(e) = self.confirmed(key, &f, r, report) {
                        failed = Some(e);
                        break;
                    }
                }
                else => {
                    // Unreachable by the checks above (listing, or uploads in flight); never
                    // report success for a cut whose files are not all confirmed.
                    failed = Some(AttemptError::Journal(std::io::Error::other(
                        "mirror: nothing left to wait for with work pending",
                    )));
                    break;
                }
            }
        }
        drop(inflight);
        drop(rx);
        let scanned = self.finish_scan(cut, reading.await);
        if let Some(e) = failed {
            return Err(e);
        }
        let (files, took) = scanned?;
        report.hashed += self.cache.last_hashed as u64;
        report.scan_ms += took.as_millis() as u64;
        Ok((Arc::new(files), main))
    }

    /// Uploads `json/main.json` of `files` (journaled with the cut's last batch), last.
    async fn upload_main(
        &mut self,
        files: &CutFiles,
        main: MainJson,
        report: &mut CutReport,
    ) -> Result<(), AttemptError> {
        let Some(f) = files.get(MAIN_JSON) else {
            return Ok(());
        };
        let r = upload(&self.bucket, MAIN_JSON, f, main.body).await;
        self.confirmed(MAIN_JSON.to_owned(), f, r, report)
    }

    /// Makes the bucket show `cut` (or a newer live cut): changed files, then `main.json`,
    /// then the deletes scheduled.
    async fn mirror_cut(&mut self, first: String) -> Result<CutReport, AttemptError> {
        let started = Instant::now();
        let mut cut = first;
        let mut report = CutReport::default();
        loop {
            let (files, main) = match self.scan_and_upload(&cut, &mut report).await {
                Ok(r) => r,
                Err(AttemptError::Cut { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound
                        && self.store.live().is_some_and(|l| l != cut) =>
                {
                    // Pruned while we read or uploaded it: a newer cut is live; go to it.
                    cut = self.store.live().unwrap_or(cut);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let keep: Vec<String> = files
                .keys()
                .filter(|k| self.journal.state.deletes.contains_key(*k))
                .cloned()
                .collect();
            for key in keep {
                self.journal.append(Record::Keep { key })?;
            }
            // A newer cut live meanwhile: its files first, so main.json names the newest.
            if report.skipped_to_newer < 3
                && let Some(newer) = self.store.live()
                && newer != cut
            {
                tracing::info!(target = %self.target.name, from = %cut, to = %newer, "newer cut live; mirroring it before main.json");
                report.skipped_to_newer += 1;
                cut = newer;
                continue;
            }
            if let Some(main) = main {
                self.upload_main(&files, main, &mut report).await?;
            }
            let not_before = unix_now() + self.target.delete_grace.as_secs() as i64;
            let gone: Vec<String> = self
                .journal
                .state
                .keys()
                .filter(|k| !files.contains_key(*k) && !self.journal.state.deletes.contains_key(*k))
                .cloned()
                .collect();
            report.deletes_scheduled = gone.len() as u64;
            for key in gone {
                self.journal
                    .append(Record::ScheduleDelete { key, not_before })?;
            }
            self.journal
                .append_durable(Record::Mirrored {
                    cut: cut.clone(),
                    at: OffsetDateTime::now_utc(),
                })
                .await?;
            self.journal.maybe_compact()?;
            self.mirrored_files = Some((cut.clone(), Arc::clone(&files)));
            report.cut = cut;
            tracing::info!(
                target = %self.target.name,
                cut = %report.cut,
                uploaded = report.uploaded,
                bytes = report.uploaded_bytes,
                hashed = report.hashed,
                scan_ms = report.scan_ms,
                deletes_scheduled = report.deletes_scheduled,
                ms = started.elapsed().as_millis() as u64,
                "cut mirrored"
            );
            return Ok(report);
        }
    }

    /// Deletes what is due, never a key of the cut the bucket shows. Returns how many.
    async fn run_due_deletes(&mut self) -> Result<u64, AttemptError> {
        let now = unix_now();
        let due: Vec<String> = self
            .journal
            .state
            .deletes
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| k.clone())
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        let shown = match (&self.mirrored_files, &self.journal.state.mirrored_cut) {
            (Some((c, files)), Some(m)) if c == m => Some(Arc::clone(files)),
            (_, Some(m)) => {
                let m = m.clone();
                match self.scan(&m).await {
                    Ok(f) => {
                        self.mirrored_files = Some((m, Arc::clone(&f)));
                        Some(f)
                    }
                    // The mirrored cut's directory is gone (pruned): its keys are what the
                    // journal knows; a key scheduled for deletion is not one of them.
                    Err(_) => None,
                }
            }
            _ => None,
        };
        let mut deleted = 0;
        let (keep, remove): (Vec<String>, Vec<String>) = due
            .into_iter()
            .partition(|k| shown.as_ref().is_some_and(|f| f.contains_key(k)));
        for key in keep {
            self.journal.append(Record::Keep { key })?;
        }
        let bucket = self.bucket.clone();
        let mut results = futures::stream::iter(remove)
            .map(move |k| {
                let bucket = bucket.clone();
                async move {
                    let r = bucket.delete(&k).await;
                    (k, r)
                }
            })
            .buffer_unordered(self.target.concurrency);
        while let Some((key, r)) = results.next().await {
            match r {
                Ok(()) => {
                    tracing::debug!(target = %self.target.name, key = %key, "deleted");
                    deleted += 1;
                    self.journal.append(Record::Deleted { key })?;
                }
                Err(source) => {
                    drop(results);
                    self.journal.sync()?;
                    return Err(AttemptError::Object { key, source });
                }
            }
        }
        drop(results);
        self.journal.sync_off_thread().await?;
        if deleted > 0 {
            tracing::info!(target = %self.target.name, deleted, "removed files deleted after the grace period");
        }
        Ok(deleted)
    }

    /// Full reconciliation: what the bucket really holds (listing and reading it back) becomes
    /// the journal, then the live cut is mirrored on top of it (extra objects scheduled for
    /// deletion after the grace period).
    async fn sync(&mut self) -> Result<CutReport, AttemptError> {
        let Some(live) = self.store.live() else {
            return Ok(CutReport::default());
        };
        let files = self.scan(&live).await?;
        let state = reconcile::survey(&self.bucket, &files, self.target.concurrency)
            .await
            .map_err(|source| AttemptError::Object {
                key: "(listing)".into(),
                source,
            })?;
        self.journal.reset(state)?;
        self.mirror_cut(live).await
    }
}

/// `difusor mirror sync` for one target. When a server holds the target's journal, the
/// request is handed to it (a file under `state/mirror/`) and its answer awaited; otherwise
/// this process reconciles, then waits out the grace period and does the deletes.
pub async fn sync_target(
    store: &Store,
    target: &S3Target,
    rules: CacheRules,
) -> Result<serde_json::Value, String> {
    let state_dir = store.state_dir();
    match Worker::open(0, target, store, rules) {
        Ok(mut w) => {
            let report = w.sync().await.map_err(|e| e.to_string())?;
            let pending = w.journal.state.deletes.len();
            if pending > 0 {
                let wait = w
                    .journal
                    .state
                    .deletes
                    .values()
                    .max()
                    .map(|t| (t - unix_now()).max(0))
                    .unwrap_or(0);
                eprintln!(
                    "{}: {pending} object(s) not in the live cut; deleting them in {wait} s (delete_grace_secs)",
                    target.name
                );
                tokio::time::sleep(Duration::from_secs(wait as u64)).await;
            }
            let deleted = w.run_due_deletes().await.map_err(|e| e.to_string())?;
            Ok(
                serde_json::json!({ "ok": true, "report": report, "deleted": deleted, "by": "this process" }),
            )
        }
        Err(MirrorError::Locked { .. }) => {
            let dir = journal::journal_dir(&state_dir);
            let request = dir.join(format!("{}.sync-request", target.name));
            let result = request.with_extension("sync-result");
            let _ = std::fs::remove_file(&result);
            crate::store::write_atomic(&request, b"{}\n")
                .map_err(|e| format!("cannot write {}: {e}", request.display()))?;
            eprintln!(
                "{}: the running server owns this target; asked it to reconcile",
                target.name
            );
            let deadline = Instant::now() + Duration::from_secs(1800);
            loop {
                if let Ok(bytes) = std::fs::read(&result) {
                    let _ = std::fs::remove_file(&result);
                    let mut v: serde_json::Value =
                        serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
                    v["by"] = "the running server".into();
                    return Ok(v);
                }
                if Instant::now() > deadline {
                    let _ = std::fs::remove_file(&request);
                    return Err("the running server did not answer within 30 min".into());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

/// `difusor mirror verify` for one target: the live cut's id (None before the first cut) and
/// how the bucket differs from it.
pub async fn verify_target(
    store: &Store,
    target: &S3Target,
    rules: &CacheRules,
) -> Result<(Option<String>, reconcile::Difference), String> {
    let credentials =
        Credentials::load(&target.name, &target.credentials).map_err(|e| e.to_string())?;
    let bucket = Bucket::new(target, &credentials).map_err(|e| e.to_string())?;
    let live = store.live();
    let files = match &live {
        Some(cut) => {
            let dir = store.cut_dir(cut);
            let rules = rules.clone();
            tokio::task::spawn_blocking(move || {
                scan::scan_cut(&dir, &rules, &mut HashCache::default())
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("reading the live cut {cut}: {e}"))?
        }
        None => CutFiles::new(),
    };
    let d = reconcile::verify(&bucket, &files, target.concurrency)
        .await
        .map_err(|e| format!("{}: {e}", target.name))?;
    Ok((live, d))
}
