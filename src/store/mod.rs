//! The data directory on disk: history, cuts, the live pointer, quarantine, journal, incidents.
//!
//! Owns the layout (design.md "The data directory") and every durable step, each one atomic
//! (`rename(2)` of a complete, fsynced thing) so a crash at any instant leaves a state that
//! [`Store::recover`] can finish or undo:
//! 1. a cut is built in `cuts/.tmp-<id>`, fsynced, then renamed to `cuts/<id>`;
//! 2. its manifest is written (`history/<id>.json`, state `archived`), then the package is
//!    moved byte for byte to `history/<id>.<ext>`;
//! 3. `live` is replaced by renaming a new symlink over it; the manifest becomes `published`.
//!
//! Must never: delete or rewrite a package in `history/` (retention prunes extracted cuts
//! only, never the live one), modify a file inside a finished cut, or point `live` at an
//! incomplete cut.

pub mod diff;
pub mod manifest;
pub mod status;

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub use manifest::{Incident, Manifest, Severity};

/// The data directory and its subfolders.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// Every recorded incident is also announced here (notifiers, metrics); clones share it.
    incidents_tx: tokio::sync::broadcast::Sender<Incident>,
}

const TMP_PREFIX: &str = ".tmp-";

fn fsync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per call: two writers of the same file must never share a temp file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("{TMP_PREFIX}{name}.{}.{n}", std::process::id()));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fsync_dir(dir)
}

/// Appends one line to a JSON-lines file and fsyncs it (incidents, journal).
fn append_line(path: &Path, line: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(line.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_data()
}

/// What recovery found and did at start.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Half-built cut directories removed.
    pub removed_tmp: Vec<PathBuf>,
    /// Archived packages whose publication was interrupted and has now been completed.
    pub completed: Vec<String>,
}

impl Store {
    /// Opens (creating what is missing) the data directory.
    pub fn open(root: &Path) -> io::Result<Store> {
        let s = Store {
            root: root.to_owned(),
            incidents_tx: tokio::sync::broadcast::channel(256).0,
        };
        for d in [
            s.incoming_dir(),
            s.history_dir(),
            s.cuts_dir(),
            s.quarantine_dir(),
            s.state_dir(),
        ] {
            fs::create_dir_all(d)?;
        }
        Ok(s)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn incoming_dir(&self) -> PathBuf {
        self.root.join("incoming")
    }
    pub fn history_dir(&self) -> PathBuf {
        self.root.join("history")
    }
    pub fn cuts_dir(&self) -> PathBuf {
        self.root.join("cuts")
    }
    pub fn quarantine_dir(&self) -> PathBuf {
        self.root.join("quarantine")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }
    pub fn live_link(&self) -> PathBuf {
        self.root.join("live")
    }
    pub fn incidents_path(&self) -> PathBuf {
        self.state_dir().join("incidents.jsonl")
    }
    pub fn journal_path(&self) -> PathBuf {
        self.state_dir().join("journal.jsonl")
    }
    /// Health samples of the monitor (availability in the memoria técnica).
    pub fn health_path(&self) -> PathBuf {
        self.state_dir().join("health.jsonl")
    }

    /// Appends one health sample line (a JSON object) to `state/health.jsonl`.
    pub fn record_health(&self, sample: &serde_json::Value) -> io::Result<()> {
        append_line(&self.health_path(), &sample.to_string())
    }
    pub fn cut_dir(&self, cut_id: &str) -> PathBuf {
        self.cuts_dir().join(cut_id)
    }

    /// The live cut's id, if any cut was ever published.
    pub fn live(&self) -> Option<String> {
        let target = fs::read_link(self.live_link()).ok()?;
        let id = target.file_name()?.to_str()?.to_owned();
        self.cut_dir(&id).is_dir().then_some(id)
    }

    /// A fresh, empty directory to build `cut_id` in.
    pub fn begin_cut(&self, cut_id: &str) -> io::Result<PathBuf> {
        let tmp = self.cuts_dir().join(format!("{TMP_PREFIX}{cut_id}"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        Ok(tmp)
    }

    /// Fills `dest` with hard links to every file of the live cut (the start of an increment).
    /// Returns how many files were linked.
    pub fn seed_from_live(&self, dest: &Path) -> io::Result<u64> {
        let Some(live) = self.live() else {
            return Ok(0);
        };
        link_tree(&self.cut_dir(&live), dest)
    }

    /// Makes a built cut durable and gives it its final name. If a cut with this id already
    /// exists (a crashed earlier attempt) and is not live, it is replaced.
    pub fn finish_cut(&self, tmp: &Path, cut_id: &str) -> io::Result<PathBuf> {
        sync_tree(tmp)?;
        let dest = self.cut_dir(cut_id);
        if dest.exists() {
            if self.live().as_deref() == Some(cut_id) {
                return Err(io::Error::other(format!(
                    "cut {cut_id} is live and cannot be replaced"
                )));
            }
            fs::remove_dir_all(&dest)?;
        }
        fs::rename(tmp, &dest)?;
        fsync_dir(&self.cuts_dir())?;
        Ok(dest)
    }

    pub fn manifest_path(&self, cut_id: &str) -> PathBuf {
        self.history_dir().join(format!("{cut_id}.json"))
    }

    pub fn package_path(&self, cut_id: &str, ext: &str) -> PathBuf {
        self.history_dir().join(format!("{cut_id}.{ext}"))
    }

    pub fn write_manifest(&self, m: &Manifest) -> io::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(m).map_err(io::Error::other)?;
        bytes.push(b'\n');
        write_atomic(&self.manifest_path(&m.cut_id), &bytes)
    }

    pub fn read_manifest(&self, cut_id: &str) -> Option<Manifest> {
        let bytes = fs::read(self.manifest_path(cut_id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every manifest in history, oldest cut first.
    pub fn manifests(&self) -> Vec<Manifest> {
        let mut out: Vec<Manifest> = fs::read_dir(self.history_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.ends_with(".json") && !n.starts_with('.'))
            })
            .filter_map(|e| serde_json::from_slice(&fs::read(e.path()).ok()?).ok())
            .collect();
        out.sort_by(|a: &Manifest, b| a.cut_id.cmp(&b.cut_id));
        out
    }

    /// Step 2: the manifest, then the package itself, into history.
    pub fn archive(&self, package: &Path, m: &Manifest) -> io::Result<PathBuf> {
        self.write_manifest(m)?;
        let dest = self.package_path(&m.cut_id, &m.extension);
        fs::rename(package, &dest)?;
        // History is read-only by convention and by mode.
        let _ = fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(0o444));
        fsync_dir(&self.history_dir())?;
        if let Some(parent) = package.parent() {
            fsync_dir(parent)?;
        }
        Ok(dest)
    }

    /// Step 3: `live` now points at `cut_id` (rename of a new symlink over the old one).
    pub fn set_live(&self, cut_id: &str) -> io::Result<()> {
        let tmp = self
            .root
            .join(format!("{TMP_PREFIX}live-{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(Path::new("cuts").join(cut_id), &tmp)?;
        fs::rename(&tmp, self.live_link())?;
        fsync_dir(&self.root)
    }

    /// Moves a rejected package to quarantine with its reason beside it. Returns where.
    pub fn quarantine(
        &self,
        package: &Path,
        reason: &str,
        at: time::OffsetDateTime,
    ) -> io::Result<PathBuf> {
        let name = package
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stamp = at
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .unwrap_or_default();
        let mut dest = self.quarantine_dir().join(format!("{stamp}-{name}"));
        let mut n = 1;
        while dest.exists() {
            n += 1;
            dest = self.quarantine_dir().join(format!("{stamp}-{n}-{name}"));
        }
        let reason_path = PathBuf::from(format!("{}.reason", dest.display()));
        write_atomic(&reason_path, format!("{reason}\n").as_bytes())?;
        fs::rename(package, &dest)?;
        fsync_dir(&self.quarantine_dir())?;
        Ok(dest)
    }

    /// Appends `i` to `state/incidents.jsonl` (fsynced) and announces it to subscribers.
    pub fn record_incident(&self, i: &Incident) -> io::Result<()> {
        let line = serde_json::to_string(i).map_err(io::Error::other)?;
        let written = append_line(&self.incidents_path(), &line);
        // Announced even when the disk refused it: a notifier may be the only one to tell.
        let _ = self.incidents_tx.send(i.clone());
        written
    }

    /// Incidents recorded through this store (or a clone of it) from now on.
    pub fn subscribe_incidents(&self) -> tokio::sync::broadcast::Receiver<Incident> {
        self.incidents_tx.subscribe()
    }

    pub fn incidents(&self) -> Vec<Incident> {
        fs::read_to_string(self.incidents_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Appends a step to the journal (what the pipeline did, for audit and recovery reports).
    pub fn journal(&self, step: &str, package: &str, cut_id: Option<&str>) -> io::Result<()> {
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let line =
            serde_json::json!({ "time": now, "step": step, "package": package, "cut_id": cut_id });
        append_line(&self.journal_path(), &line.to_string())
    }

    fn pending_path(&self, name: &str) -> PathBuf {
        self.state_dir()
            .join("pending")
            .join(format!("{name}.json"))
    }

    /// Remembers who sent a package being processed (read back if a crash interrupts it).
    pub fn save_pending(&self, name: &str, job: &serde_json::Value) -> io::Result<()> {
        fs::create_dir_all(self.state_dir().join("pending"))?;
        write_atomic(&self.pending_path(name), job.to_string().as_bytes())
    }

    pub fn load_pending(&self, name: &str) -> Option<serde_json::Value> {
        serde_json::from_slice(&fs::read(self.pending_path(name)).ok()?).ok()
    }

    pub fn clear_pending(&self, name: &str) {
        let _ = fs::remove_file(self.pending_path(name));
    }

    /// Finishes or undoes what a crash interrupted. Run once at start, before any ingest.
    pub fn recover(&self) -> io::Result<Recovery> {
        let mut r = Recovery::default();
        for dir in [
            self.cuts_dir(),
            self.history_dir(),
            self.quarantine_dir(),
            self.root.clone(),
        ] {
            for e in fs::read_dir(&dir)?.flatten() {
                if e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(TMP_PREFIX))
                {
                    let p = e.path();
                    if e.file_type()?.is_dir() {
                        fs::remove_dir_all(&p)?;
                    } else {
                        fs::remove_file(&p)?;
                    }
                    r.removed_tmp.push(p);
                }
            }
        }
        // Quarantine reasons whose package never arrived (crash between the two renames): the
        // package is still in incoming and will be judged again.
        for e in fs::read_dir(self.quarantine_dir())?.flatten() {
            let p = e.path();
            if let Some(pkg) = p.to_str().and_then(|s| s.strip_suffix(".reason"))
                && !Path::new(pkg).exists()
            {
                fs::remove_file(&p)?;
            }
        }
        // Archived but not published: the cut is complete (it was finished before archiving).
        let live = self.live();
        for mut m in self.manifests() {
            if m.published_at.is_some() {
                continue;
            }
            let archived = self.package_path(&m.cut_id, &m.extension).exists();
            if !archived || !self.cut_dir(&m.cut_id).is_dir() {
                // The package never made it to history: it is still in incoming and will be
                // processed again from the start; this manifest was a premature write.
                fs::remove_file(self.manifest_path(&m.cut_id))?;
                continue;
            }
            if live.as_deref().is_none_or(|l| l < m.cut_id.as_str()) {
                self.set_live(&m.cut_id)?;
            }
            m.published_at = Some(time::OffsetDateTime::now_utc());
            self.write_manifest(&m)?;
            r.completed.push(m.cut_id.clone());
        }
        Ok(r)
    }

    /// Removes extracted cuts beyond the `keep` most recent (never the live one, never history).
    pub fn prune_cuts(&self, keep: u64) -> io::Result<Vec<String>> {
        if keep == 0 {
            return Ok(Vec::new());
        }
        let live = self.live();
        let mut ids: Vec<String> = fs::read_dir(self.cuts_dir())?
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|n| !n.starts_with('.'))
            .collect();
        ids.sort();
        let excess = ids.len().saturating_sub(keep as usize + 1);
        let mut removed = Vec::new();
        for id in ids.into_iter().take(excess) {
            if Some(&id) == live.as_ref() {
                continue;
            }
            fs::remove_dir_all(self.cut_dir(&id))?;
            removed.push(id);
        }
        Ok(removed)
    }
}

/// Hard-links every regular file of `src` into `dst` (directories recreated, symlinks copied
/// as symlinks). Returns the number of files linked.
fn link_tree(src: &Path, dst: &Path) -> io::Result<u64> {
    let mut n = 0;
    for e in fs::read_dir(src)? {
        let e = e?;
        let ft = e.file_type()?;
        let to = dst.join(e.file_name());
        if ft.is_dir() {
            fs::create_dir(&to)?;
            n += link_tree(&e.path(), &to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(e.path())?, &to)?;
        } else if ft.is_file() {
            fs::hard_link(e.path(), &to)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Makes everything under `dir` durable before `live` moves. PERF: one `syncfs(2)` flushes the
/// whole filesystem in a single journal commit; fsyncing thousands of small files one by one
/// would cost seconds per cut on ext4.
fn sync_tree(dir: &Path) -> io::Result<()> {
    let f = fs::File::open(dir)?;
    rustix::fs::syncfs(&f).map_err(io::Error::from)
}
