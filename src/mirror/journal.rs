//! A target's own record of what is in its bucket — the mirror's truth, since the directory of
//! the last mirrored cut may be pruned and a restart must not upload again what is there.
//!
//! Owns: `state/mirror/<target>.state.json` (a snapshot, written atomically) and
//! `state/mirror/<target>.log.jsonl` (records appended since), replayed at open; the lock
//! file that keeps two processes from writing one journal.
//!
//! Crash rules (each record is appended after the fact it states, except `begin`):
//! - `begin` lists keys a cut is about to write and is fsynced *before* any of them is uploaded
//!   (a cut may journal its keys in several `begin`s, as its scan finds them):
//!   after a crash those keys are *uncertain* (the bucket may hold either version) until a
//!   `put` says what they hold, so an interrupted upload is never mistaken for the old one.
//! - `put` follows the bucket's confirmation. Puts are not fsynced one by one: a process kill
//!   keeps them (page cache); a power cut loses at most some, whose keys are then uncertain
//!   and uploaded again.
//! - `mirrored` (main.json is up) and `schedule-delete` are fsynced: a restart must still do
//!   the deletes, and `keep` cancels one when a newer cut brings the file back.
//! - Replaying the log onto a snapshot that already contains it gives the same state (every
//!   record sets, none toggles), so compaction is "write snapshot, then empty the log".
//!
//! Must never: be written by two processes (the lock), or record an upload before the bucket
//! confirmed it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::write_atomic;

/// One object as the journal knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub sha256: String,
    pub size: u64,
    pub content_type: String,
    pub cache_control: String,
}

/// What the bucket holds, as far as this target knows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BucketState {
    /// Objects whose content is known (key relative to the prefix).
    #[serde(default)]
    pub objects: BTreeMap<String, ObjectRecord>,
    /// Keys that may exist with unknown content (an upload was interrupted, or sync saw them).
    #[serde(default)]
    pub uncertain: BTreeSet<String>,
    /// The cut whose `json/main.json` is in the bucket with every file of it.
    #[serde(default)]
    pub mirrored_cut: Option<String>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub mirrored_at: Option<time::OffsetDateTime>,
    /// Keys to delete, each not before this Unix time.
    #[serde(default)]
    pub deletes: BTreeMap<String, i64>,
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Record {
    /// These keys are about to be written for `cut`.
    Begin {
        cut: String,
        keys: Vec<String>,
    },
    /// The bucket confirmed `key` with this content and these headers.
    Put {
        key: String,
        #[serde(flatten)]
        object: ObjectRecord,
    },
    /// A scheduled delete is cancelled: the live cut has the file again.
    Keep {
        key: String,
    },
    /// `json/main.json` of `cut` is up, after every other file of it.
    Mirrored {
        cut: String,
        #[serde(with = "time::serde::rfc3339")]
        at: time::OffsetDateTime,
    },
    ScheduleDelete {
        key: String,
        not_before: i64,
    },
    Deleted {
        key: String,
    },
}

impl BucketState {
    pub fn apply(&mut self, r: &Record) {
        match r {
            Record::Begin { keys, .. } => {
                for k in keys {
                    self.objects.remove(k);
                    self.uncertain.insert(k.clone());
                }
            }
            Record::Put { key, object } => {
                self.uncertain.remove(key);
                self.deletes.remove(key);
                self.objects.insert(key.clone(), object.clone());
            }
            Record::Keep { key } => {
                self.deletes.remove(key);
            }
            Record::Mirrored { cut, at } => {
                self.mirrored_cut = Some(cut.clone());
                self.mirrored_at = Some(*at);
            }
            Record::ScheduleDelete { key, not_before } => {
                self.deletes.entry(key.clone()).or_insert(*not_before);
            }
            Record::Deleted { key } => {
                self.objects.remove(key);
                self.uncertain.remove(key);
                self.deletes.remove(key);
            }
        }
    }

    /// Every key that may be in the bucket.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.objects.keys().chain(self.uncertain.iter())
    }
}

/// The exclusive lock on a target's journal (released when dropped or the process dies).
#[derive(Debug)]
pub struct JournalLock {
    _file: File,
}

/// Where a target's journal files are.
pub fn journal_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("mirror")
}

/// Takes the lock of `target`'s journal; None when another process holds it.
pub fn try_lock(state_dir: &Path, target: &str) -> io::Result<Option<JournalLock>> {
    let dir = journal_dir(state_dir);
    fs::create_dir_all(&dir)?;
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{target}.lock")))?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(JournalLock { _file: f })),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A target's journal, open for appending (hold its [`JournalLock`] while it is).
#[derive(Debug)]
pub struct Journal {
    snapshot_path: PathBuf,
    log_path: PathBuf,
    log: File,
    records_in_log: usize,
    pub state: BucketState,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    state: BucketState,
}

/// Compact once the log holds this many records.
const COMPACT_AFTER: usize = 20_000;

impl Journal {
    /// Opens (creating it when missing) `target`'s journal and replays it.
    pub fn open(state_dir: &Path, target: &str, _lock: &JournalLock) -> io::Result<Journal> {
        let dir = journal_dir(state_dir);
        fs::create_dir_all(&dir)?;
        let snapshot_path = dir.join(format!("{target}.state.json"));
        let log_path = dir.join(format!("{target}.log.jsonl"));
        let mut state = match fs::read(&snapshot_path) {
            Ok(bytes) => {
                serde_json::from_slice::<Snapshot>(&bytes)
                    .map_err(|e| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{}: {e}", snapshot_path.display()),
                        )
                    })?
                    .state
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => BucketState::default(),
            Err(e) => return Err(e),
        };
        let mut records_in_log = 0;
        match fs::read_to_string(&log_path) {
            Ok(text) => {
                for line in text.lines() {
                    // A torn last line (killed mid-write) states nothing that happened.
                    if let Ok(r) = serde_json::from_str::<Record>(line) {
                        state.apply(&r);
                        records_in_log += 1;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut j = Journal {
            snapshot_path,
            log_path,
            log,
            records_in_log,
            state,
        };
        if j.records_in_log > 0 {
            j.compact()?;
        }
        Ok(j)
    }

    /// Applies `r` and appends it, not fsynced (see [`Journal::append_durable`]).
    pub fn append(&mut self, r: Record) -> io::Result<()> {
        self.write_line(&r)?;
        self.state.apply(&r);
        self.records_in_log += 1;
        Ok(())
    }

    /// [`Journal::append`] made durable with the fsync on a blocking thread, so the async
    /// runtime (which also serves HTTPS) never waits on the disk. The record counts only once
    /// it is durable.
    pub async fn append_durable(&mut self, r: Record) -> io::Result<()> {
        self.write_line(&r)?;
        self.sync_off_thread().await?;
        self.state.apply(&r);
        self.records_in_log += 1;
        Ok(())
    }

    fn write_line(&mut self, r: &Record) -> io::Result<()> {
        let mut line = serde_json::to_vec(r).map_err(io::Error::other)?;
        line.push(b'\n');
        self.log.write_all(&line)
    }

    /// Makes every appended record durable.
    pub fn sync(&mut self) -> io::Result<()> {
        self.log.sync_data()
    }

    /// [`Journal::sync`] on a blocking thread (a second handle of the same open file).
    pub async fn sync_off_thread(&self) -> io::Result<()> {
        let log = self.log.try_clone()?;
        tokio::task::spawn_blocking(move || log.sync_data())
            .await
            .map_err(io::Error::other)?
    }

    /// Compacts when the log has grown large (called between cuts).
    pub fn maybe_compact(&mut self) -> io::Result<()> {
        if self.records_in_log >= COMPACT_AFTER {
            self.compact()?;
        }
        Ok(())
    }

    /// Writes the state as the snapshot, then empties the log.
    pub fn compact(&mut self) -> io::Result<()> {
        let snap = Snapshot {
            version: 1,
            state: self.state.clone(),
        };
        let bytes = serde_json::to_vec(&snap).map_err(io::Error::other)?;
        write_atomic(&self.snapshot_path, &bytes)?;
        write_atomic(&self.log_path, b"")?;
        self.log = OpenOptions::new().append(true).open(&self.log_path)?;
        self.records_in_log = 0;
        Ok(())
    }

    /// Replaces the whole state (sync: what listing the bucket found).
    pub fn reset(&mut self, state: BucketState) -> io::Result<()> {
        self.state = state;
        self.compact()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(sha: &str) -> ObjectRecord {
        ObjectRecord {
            sha256: sha.into(),
            size: 1,
            content_type: "text/plain".into(),
            cache_control: "no-cache".into(),
        }
    }

    #[test]
    fn replay_after_a_kill_marks_interrupted_keys_uncertain() {
        let d = tempfile::tempdir().unwrap();
        let lock = try_lock(d.path(), "t").unwrap().unwrap();
        assert!(
            try_lock(d.path(), "t").unwrap().is_none(),
            "second lock refused"
        );
        {
            let mut j = Journal::open(d.path(), "t", &lock).unwrap();
            j.append(Record::Begin {
                cut: "c1".into(),
                keys: vec!["a".into(), "b".into()],
            })
            .unwrap();
            j.sync().unwrap();
            j.append(Record::Put {
                key: "a".into(),
                object: obj("1"),
            })
            .unwrap();
            // "b" never confirmed; then a torn line.
            j.log
                .write_all(b"{\"op\":\"put\",\"key\":\"b\",\"sha")
                .unwrap();
        }
        let j = Journal::open(d.path(), "t", &lock).unwrap();
        assert_eq!(j.state.objects.get("a"), Some(&obj("1")));
        assert!(j.state.uncertain.contains("b"));
        assert!(!j.state.objects.contains_key("b"));
        assert_eq!(j.records_in_log, 0, "compacted at open");
    }

    #[test]
    fn a_cut_journaled_in_several_begins_leaves_every_unconfirmed_key_uncertain() {
        // The mirror journals a cut's keys in batches as its scan finds them.
        let d = tempfile::tempdir().unwrap();
        let lock = try_lock(d.path(), "t").unwrap().unwrap();
        {
            let mut j = Journal::open(d.path(), "t", &lock).unwrap();
            for r in [
                Record::Put {
                    key: "c".into(),
                    object: obj("old"),
                },
                Record::Begin {
                    cut: "c2".into(),
                    keys: vec!["a".into()],
                },
                Record::Put {
                    key: "a".into(),
                    object: obj("2"),
                },
                Record::Begin {
                    cut: "c2".into(),
                    keys: vec!["b".into(), "c".into()],
                },
                Record::Put {
                    key: "b".into(),
                    object: obj("2"),
                },
            ] {
                j.append(r).unwrap();
                j.sync().unwrap();
            }
        }
        let j = Journal::open(d.path(), "t", &lock).unwrap();
        assert_eq!(j.state.objects.get("a"), Some(&obj("2")));
        assert_eq!(j.state.objects.get("b"), Some(&obj("2")));
        assert!(
            j.state.uncertain.contains("c") && !j.state.objects.contains_key("c"),
            "c's old content is no longer trusted: its upload may have been under way"
        );
        assert_eq!(j.state.uncertain.len(), 1);
    }

    #[test]
    fn replaying_a_log_already_in_the_snapshot_changes_nothing() {
        let recs = [
            Record::Begin {
                cut: "c".into(),
                keys: vec!["x".into(), "y".into()],
            },
            Record::Put {
                key: "x".into(),
                object: obj("2"),
            },
            Record::ScheduleDelete {
                key: "z".into(),
                not_before: 10,
            },
            Record::Keep { key: "z".into() },
            Record::ScheduleDelete {
                key: "w".into(),
                not_before: 5,
            },
            Record::Deleted { key: "w".into() },
        ];
        let mut once = BucketState::default();
        once.objects.insert("w".into(), obj("w"));
        recs.iter().for_each(|r| once.apply(r));
        let mut twice = once.clone();
        recs.iter().for_each(|r| twice.apply(r));
        assert_eq!(once, twice);
        assert!(once.uncertain.contains("y") && !once.deletes.contains_key("z"));
    }
}
