//! The ingest pipeline: what happens to a package after it arrives.
//!
//! Owns the orchestration, one stage after the other, for one package at a time in arrival
//! order: `detect` (format by magic bytes) → `verify` (sidecar SHA-256, archive integrity,
//! safe extraction into a new cut, in one streaming pass — `extract`) → `archive` (manifest +
//! package into history) → `publish` (the live pointer moves, a *cut-published* event goes
//! out). A package failing anything goes to quarantine with its reason, an incident is
//! recorded, and the live cut does not change.
//!
//! Must never: publish a package that failed a check, modify the live cut, process a
//! package twice, or block the SSH side (work runs on a blocking thread; the uploader's
//! `close` waits on a verdict channel with a timeout).

pub mod checksum;
pub mod extract;
pub mod names;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use time::OffsetDateTime;
use tokio::sync::broadcast;

use crate::config::{IngestConfig, PublishMode};
use crate::events::{CutPublished, UploadCompleted, UploadReceiver, Verdict, rate};
use crate::monitor::metrics::Metrics;
use crate::store::{Incident, Manifest, Severity, Store};

/// One package to process. Saved in `state/pending/` while it is processed, so a package
/// resumed after a crash keeps its uploader and transfer times.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Job {
    /// The package in `incoming/`, under its real name.
    pub path: PathBuf,
    pub uploader: String,
    pub client: String,
    pub upload_started: SystemTime,
    pub upload_finished: SystemTime,
    pub bytes_received: u64,
}

impl Job {
    pub fn from_event(ev: &UploadCompleted) -> Job {
        Job {
            path: ev.disk_path.clone(),
            uploader: ev.user.clone(),
            client: ev.client.to_string(),
            upload_started: ev.started,
            upload_finished: ev.finished,
            bytes_received: ev.bytes_received,
        }
    }

    fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// What became of a package.
#[derive(Debug, Clone)]
pub enum Outcome {
    Published(Box<Manifest>),
    /// Byte-identical to a package already in history: nothing to do.
    Duplicate(String),
    Rejected {
        kind: String,
        reason: String,
    },
}

impl Outcome {
    pub fn verdict(&self) -> Verdict {
        match self {
            Outcome::Published(m) => Verdict::Accepted(format!("published as cut {}", m.cut_id)),
            Outcome::Duplicate(id) => {
                Verdict::Accepted(format!("identical to cut {id}, already published"))
            }
            Outcome::Rejected { reason, .. } => {
                Verdict::Rejected(format!("package rejected: {reason}"))
            }
        }
    }
}

/// A stage failed: the package is refused for this reason.
struct Reject {
    kind: String,
    reason: String,
}

impl Reject {
    fn new(kind: &str, reason: impl Into<String>) -> Reject {
        Reject {
            kind: kind.to_owned(),
            reason: reason.into(),
        }
    }
}

impl From<extract::ExtractError> for Reject {
    fn from(e: extract::ExtractError) -> Reject {
        Reject::new(e.kind(), e.to_string())
    }
}

/// The pipeline; one per data directory.
pub struct Pipeline {
    store: Store,
    cfg: IngestConfig,
    published: broadcast::Sender<CutPublished>,
    /// Names build directories uniquely within this process.
    next_job: AtomicU64,
    metrics: Arc<Metrics>,
}

/// Test-only crash points: `DIFUSOR_TEST_CRASH_AT=<step>` aborts the process at that step so
/// the crash tests can check recovery. Unset in production; costs one env lookup per step.
fn crash_point(step: &str) {
    if std::env::var("DIFUSOR_TEST_CRASH_AT").is_ok_and(|v| v == step) {
        eprintln!("difusor: test crash point {step}");
        std::process::abort();
    }
}

/// Test-only slow pipeline: `DIFUSOR_TEST_SLOW_INGEST_MS=<n>` delays each package by n ms, so
/// the tests can see the uploader's close answered at `close_timeout_secs`.
fn test_delay() {
    if let Some(ms) = std::env::var("DIFUSOR_TEST_SLOW_INGEST_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

impl Pipeline {
    pub fn new(store: Store, cfg: IngestConfig, metrics: Arc<Metrics>) -> Pipeline {
        let (published, _) = broadcast::channel(64);
        Pipeline {
            store,
            cfg,
            published,
            next_job: AtomicU64::new(0),
            metrics,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Subscribe to cut-published events.
    pub fn subscribe(&self) -> broadcast::Receiver<CutPublished> {
        self.published.subscribe()
    }

    pub fn limits(&self) -> extract::Limits {
        extract::Limits {
            max_total_bytes: self.cfg.max_total_bytes,
            max_entries: self.cfg.max_entries,
            max_ratio: self.cfg.max_ratio,
            allow_links: self.cfg.allow_links,
        }
    }

    /// Packages left in incoming by a previous run (their upload completed but processing
    /// did not finish), oldest first.
    pub fn backlog(&self) -> Vec<Job> {
        let mut found: Vec<(SystemTime, PathBuf)> = std::fs::read_dir(self.store.incoming_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter(|e| {
                e.file_name().to_str().is_some_and(|n| {
                    names::is_package_name(n)
                        && !n.starts_with('.')
                        && !crate::ssh::transfer::is_temporary_name(n)
                })
            })
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        found.sort();
        found
            .into_iter()
            .map(|(t, path)| {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                self.store
                    .load_pending(&name)
                    .and_then(|v| serde_json::from_value::<Job>(v).ok())
                    .filter(|j| j.path == path)
                    .unwrap_or(Job {
                        path,
                        uploader: "(unknown: received before a restart)".to_owned(),
                        client: "-".to_owned(),
                        upload_started: t,
                        upload_finished: t,
                        bytes_received: 0,
                    })
            })
            .collect()
    }

    /// Processes one package to the end. Synchronous: run it on a blocking thread.
    pub fn process(&self, job: &Job) -> Outcome {
        let started = Instant::now();
        let name = job.name();
        let received_at = now();
        // Provenance was saved to state/pending/ when the upload event arrived (see `run`).
        let _ = self.store.journal("received", &name, None);
        test_delay();
        let build = self.store.begin_cut(&format!(
            "job-{}-{}",
            std::process::id(),
            self.next_job.fetch_add(1, Ordering::Relaxed)
        ));
        let outcome = match build {
            Ok(tmp) => {
                let r = self.verify_and_publish(job, &name, &tmp, received_at);
                if tmp.exists() {
                    let _ = std::fs::remove_dir_all(&tmp);
                }
                r
            }
            Err(e) => Err(Reject::new(
                "io",
                format!("cannot create the cut directory: {e}"),
            )),
        };
        self.store.clear_pending(&name);
        let size = std::fs::metadata(&job.path)
            .map(|m| m.len())
            .unwrap_or(job.bytes_received);
        let secs = started.elapsed().as_secs_f64();
        let transfer = rate(
            job.bytes_received,
            job.upload_finished
                .duration_since(job.upload_started)
                .unwrap_or_default(),
        ) / 1e6;
        match &outcome {
            Ok(Outcome::Published(_)) => self.metrics.package(true, "published"),
            Ok(Outcome::Duplicate(_)) => self.metrics.package(true, "duplicate"),
            Ok(Outcome::Rejected { kind, .. }) => self.metrics.package(false, kind),
            Err(rej) => self.metrics.package(false, &rej.kind),
        }
        match outcome {
            Ok(o) => {
                match &o {
                    Outcome::Published(m) => tracing::info!(
                        target: "difusor::ingest",
                        package = %name, bytes = m.size, transfer_mb_per_s = transfer,
                        verify_extract_seconds = secs, result = "published", cut = %m.cut_id,
                        files = m.files, "package processed"
                    ),
                    Outcome::Duplicate(id) => tracing::info!(
                        target: "difusor::ingest",
                        package = %name, bytes = size, transfer_mb_per_s = transfer,
                        verify_extract_seconds = secs, result = "duplicate", cut = %id, "package processed"
                    ),
                    Outcome::Rejected { .. } => {}
                }
                // The sidecar is consumed: its hash is the manifest's. Left behind, it
                // would be checked against a corrected package re-sent under the name.
                let _ = std::fs::remove_file(checksum::sidecar_path(&job.path));
                o
            }
            Err(rej) => {
                tracing::warn!(
                    target: "difusor::ingest",
                    package = %name, bytes = size, transfer_mb_per_s = transfer,
                    verify_extract_seconds = secs, result = "rejected", kind = %rej.kind,
                    reason = %rej.reason, "package processed"
                );
                self.reject(job, &name, &rej);
                Outcome::Rejected {
                    kind: rej.kind,
                    reason: rej.reason,
                }
            }
        }
    }

    fn reject(&self, job: &Job, name: &str, rej: &Reject) {
        let at = now();
        let reason = format!("{} ({})", rej.reason, rej.kind);
        match self.store.quarantine(&job.path, &reason, at) {
            Ok(p) => {
                tracing::info!(package = %name, quarantined = %p.display(), "package quarantined");
                // The sidecar goes with it (evidence), leaving incoming/ clean for a re-send.
                let sidecar = checksum::sidecar_path(&job.path);
                if sidecar.exists() {
                    let _ = std::fs::rename(&sidecar, checksum::sidecar_path(&p));
                }
            }
            Err(e) => {
                tracing::error!(package = %name, error = %e, "could not move the package to quarantine")
            }
        }
        let _ = self.store.journal("rejected", name, None);
        let incident = Incident {
            time: at,
            severity: Severity::Warning,
            kind: crate::store::manifest::kinds::PACKAGE_REJECTED.to_owned(),
            package: Some(name.to_owned()),
            uploader: Some(job.uploader.clone()),
            reason,
            subject: None,
        };
        if let Err(e) = self.store.record_incident(&incident) {
            tracing::error!(error = %e, "could not record the incident");
        }
    }

    fn verify_and_publish(
        &self,
        job: &Job,
        name: &str,
        tmp: &Path,
        received_at: OffsetDateTime,
    ) -> Result<Outcome, Reject> {
        // detect: the name and the magic bytes must agree.
        let ext = names::package_extension(name)
            .ok_or_else(|| Reject::new("wrong-format", "not a package name"))?;
        let format = extract::detect_format(&job.path, name)?;

        // verify: the sidecar, if any (or required).
        let sidecar = checksum::sidecar_path(&job.path);
        let expected = match std::fs::read_to_string(&sidecar) {
            Ok(text) => {
                Some(checksum::parse_sidecar(&text).map_err(|e| Reject::new("checksum", e))?)
            }
            Err(_) if self.cfg.require_checksum => {
                return Err(Reject::new(
                    "checksum",
                    format!(
                        "no {name}.sha256 was uploaded before the package, and a checksum is required"
                    ),
                ));
            }
            Err(_) => None,
        };

        let previous = self.store.live();
        if self.cfg.mode == PublishMode::Increment {
            self.store
                .seed_from_live(tmp)
                .map_err(|e| Reject::new("io", format!("cannot start from the live cut: {e}")))?;
        }
        // PERF: hashing and extraction read the same file on the two cores at once.
        let step = Instant::now();
        let limits = self.limits();
        let (sha, extracted) = std::thread::scope(|s| {
            let hasher = s.spawn(|| checksum::sha256_file(&job.path));
            let extracted = extract::extract(&job.path, format, tmp, &limits);
            (hasher.join(), extracted)
        });
        let sha = match sha {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return Err(Reject::new("io", format!("cannot read the package: {e}"))),
            Err(_) => return Err(Reject::new("io", "the checksum thread failed")),
        };
        let extracted = extracted?;
        if let Some(want) = expected
            && want != sha
        {
            return Err(Reject::new(
                "checksum",
                format!("SHA-256 mismatch: {name}.sha256 says {want}, the package is {sha}"),
            ));
        }
        let verified_at = now();
        self.metrics.step("verify-extract", step.elapsed());
        crash_point("after-extract");

        // archive: the cut gets its id; identical packages are not published twice.
        let cut_time = names::cut_time_from_name(name, self.cfg.name_utc_offset);
        let cut_id = names::cut_id(cut_time.unwrap_or(received_at), &sha);
        if self.store.package_path(&cut_id, ext).exists() {
            let _ = std::fs::remove_file(&job.path);
            return Ok(Outcome::Duplicate(cut_id));
        }
        let step = Instant::now();
        self.store
            .finish_cut(tmp, &cut_id)
            .map_err(|e| Reject::new("io", format!("cannot finish the cut: {e}")))?;
        self.metrics.step("sync-cut", step.elapsed());
        crash_point("after-cut");
        let size = std::fs::metadata(&job.path).map(|m| m.len()).unwrap_or(0);
        let mut manifest = Manifest {
            cut_id: cut_id.clone(),
            sha256: sha,
            size,
            original_name: name.to_owned(),
            extension: ext.to_owned(),
            uploader: job.uploader.clone(),
            client_address: job.client.clone(),
            upload_started: OffsetDateTime::from(job.upload_started),
            upload_finished: OffsetDateTime::from(job.upload_finished),
            transfer_mb_per_s: rate(
                job.bytes_received,
                job.upload_finished
                    .duration_since(job.upload_started)
                    .unwrap_or_default(),
            ) / 1e6,
            received_at,
            verified_at,
            published_at: None,
            entries: extracted.entries,
            files: extracted.files,
            uncompressed_bytes: extracted.uncompressed_bytes,
            cut_time,
            mode: self.cfg.mode.as_str().to_owned(),
            previous_cut: previous
                .clone()
                .filter(|_| self.cfg.mode == PublishMode::Increment),
            publish_seconds: None,
        };
        let step = Instant::now();
        if let Err(e) = self.store.archive(&job.path, &manifest) {
            // Nothing is live yet: undo the cut so a re-send starts clean.
            let _ = std::fs::remove_dir_all(self.store.cut_dir(&cut_id));
            let _ = std::fs::remove_file(self.store.manifest_path(&cut_id));
            return Err(Reject::new(
                "io",
                format!("cannot archive the package: {e}"),
            ));
        }
        let _ = self.store.journal("archived", name, Some(&cut_id));
        self.metrics.step("archive", step.elapsed());
        crash_point("after-archive");

        // publish.
        let step = Instant::now();
        self.store
            .set_live(&cut_id)
            .map_err(|e| Reject::new("io", format!("cannot move the live pointer: {e}")))?;
        crash_point("after-live");
        self.metrics.step("go-live", step.elapsed());
        let published_at = now();
        manifest.published_at = Some(published_at);
        manifest.publish_seconds = Some(
            (published_at - manifest.upload_finished)
                .as_seconds_f64()
                .max(0.0),
        );
        if let Err(e) = self.store.write_manifest(&manifest) {
            tracing::error!(error = %e, cut = %cut_id, "could not record the publication time");
        }
        let _ = self.store.journal("published", name, Some(&cut_id));
        let _ = self.published.send(CutPublished {
            cut_id: cut_id.clone(),
            cut_dir: self.store.cut_dir(&cut_id),
            manifest: manifest.clone(),
            previous_live: previous,
            packages_in_history: self.store.manifests().len(),
        });
        match self.store.prune_cuts(self.cfg.keep_cuts) {
            Ok(removed) if !removed.is_empty() => tracing::info!(
                ?removed,
                "old extracted cuts pruned (packages stay in history)"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning old cuts failed"),
        }
        Ok(Outcome::Published(Box::new(manifest)))
    }

    /// Consumes upload events in arrival order until the channel closes: packages are
    /// processed one at a time and the verdict goes back to the uploader; other files are
    /// left alone. The backlog found at start goes first.
    /// `backlog` must have been taken (with [`Pipeline::backlog`]) before the SSH server started
    /// accepting uploads, so a package is either in it or announced by an event — never both.
    pub async fn run(self: Arc<Self>, backlog: Vec<Job>, mut uploads: UploadReceiver) {
        for job in backlog {
            let name = job.name();
            tracing::warn!(package = %name, "processing a package left from before the restart");
            let _ = self.store.record_incident(&Incident {
                time: now(),
                severity: Severity::Warning,
                kind: crate::store::manifest::kinds::CRASH_RECOVERY.to_owned(),
                package: Some(name),
                uploader: None,
                reason: "the package was received before a restart but not yet published; processing it now".to_owned(),
                subject: None,
            });
            let me = Arc::clone(&self);
            let _ = tokio::task::spawn_blocking(move || me.process(&job)).await;
        }
        // Record each package's provenance the moment it arrives, even while an earlier
        // package is still being processed, so a crash loses nothing about it.
        let (queue_tx, mut queue) = tokio::sync::mpsc::unbounded_channel();
        let me = Arc::clone(&self);
        tokio::spawn(async move {
            while let Some(mut ev) = uploads.recv().await {
                me.metrics.upload(ev.size, ev.bytes_received, ev.duration());
                let name = ev
                    .disk_path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("")
                    .to_owned();
                let verdict = ev.verdict.take();
                // Only packages under incoming/ are processed; other files are left alone.
                if !names::is_package_name(&name)
                    || !ev.disk_path.starts_with(me.store.incoming_dir())
                {
                    continue;
                }
                let job = Job::from_event(&ev);
                if let Ok(v) = serde_json::to_value(&job) {
                    let _ = me.store.save_pending(&name, &v);
                }
                if queue_tx.send((job, verdict)).is_err() {
                    break;
                }
            }
        });
        while let Some((job, verdict)) = queue.recv().await {
            let me = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || me.process(&job)).await {
                Ok(outcome) => {
                    if let Some(tx) = verdict {
                        let _ = tx.send(outcome.verdict());
                    }
                }
                Err(e) => tracing::error!(error = %e, "ingest worker failed"),
            }
        }
    }
}

/// `difusor verify`: the pipeline's checks on a package file, without publishing anything.
/// Returns a printable report of what would be published, or the reason for refusal.
pub fn verify_offline(cfg: &IngestConfig, package: &Path) -> Result<String, String> {
    let name = package
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    names::package_extension(&name).ok_or("not a package name (.zip, .tar.gz or .tgz)")?;
    let limits = extract::Limits {
        max_total_bytes: cfg.max_total_bytes,
        max_entries: cfg.max_entries,
        max_ratio: cfg.max_ratio,
        allow_links: cfg.allow_links,
    };
    let format =
        extract::detect_format(package, &name).map_err(|e| format!("{e} ({})", e.kind()))?;
    let sha = checksum::sha256_file(package)
        .map_err(|e| format!("cannot read {}: {e}", package.display()))?;
    let sidecar = checksum::sidecar_path(package);
    let sidecar_note = match std::fs::read_to_string(&sidecar) {
        Ok(text) => {
            let want = checksum::parse_sidecar(&text)?;
            if want != sha {
                return Err(format!(
                    "SHA-256 mismatch: {name}.sha256 says {want}, the package is {sha} (checksum)"
                ));
            }
            "matches its .sha256".to_owned()
        }
        Err(_) if cfg.require_checksum => {
            return Err(format!(
                "no {name}.sha256 beside the package, and a checksum is required (checksum)"
            ));
        }
        Err(_) => "no .sha256 sidecar".to_owned(),
    };
    let x = extract::verify_only(package, format, &limits)
        .map_err(|e| format!("{e} ({})", e.kind()))?;
    let cut_time = names::cut_time_from_name(&name, cfg.name_utc_offset);
    let id = names::cut_id(cut_time.unwrap_or_else(now), &sha);
    let mut out = format!(
        "OK: {name} would be published as cut {id}\n  sha256 {sha} ({sidecar_note})\n  {} entries, {} files, {} bytes uncompressed\n  cut time: {}\n",
        x.entries,
        x.files,
        x.uncompressed_bytes,
        cut_time
            .and_then(|t| t
                .format(&time::format_description::well_known::Rfc3339)
                .ok())
            .unwrap_or_else(|| "not in the name (the receive time will be used)".to_owned()),
    );
    for p in x.written.iter().take(20) {
        out.push_str(&format!("  {p}\n"));
    }
    if x.written.len() > 20 {
        out.push_str(&format!("  … and {} more files\n", x.written.len() - 20));
    }
    Ok(out)
}
