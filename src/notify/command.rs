//! The command-hook notifier: runs a program (argv, no shell) per event.
//!
//! Owns: the `DIFUSOR_*` environment of each event, the changed-paths list file
//! (`DIFUSOR_CHANGED_LIST`, removed once the delivery is over), running the child in its own
//! process group with stdin closed and stdout/stderr captured (truncated), and killing the
//! whole group when an attempt times out or is abandoned.
//!
//! Must never: go through a shell, leave a timed-out hook (or anything it started) running,
//! hand the hook another notifier's secret variable, or wait on a hook's leftover
//! background process for its output.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::config::CommandTarget;
use super::retry::{Attempt, excerpt};
use crate::events::CutPublished;
use crate::store::Incident;
use crate::store::diff::CutDiff;

/// Bytes of stdout and of stderr kept per run.
const OUTPUT_KEPT: usize = 8 * 1024;
/// After the hook exits, how long its output pipes may stay open (a leftover background
/// process holding them) before we stop reading.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

fn rfc3339(t: Option<time::OffsetDateTime>) -> String {
    t.and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .unwrap_or_default()
}

/// The variables of a `cut-published` run (`DIFUSOR_CHANGED_LIST` is added by the caller).
pub fn cut_env(ev: &CutPublished, diff: Option<&CutDiff>) -> Vec<(String, String)> {
    let m = &ev.manifest;
    let mut env = vec![
        ("DIFUSOR_EVENT", "cut-published".to_owned()),
        ("DIFUSOR_CUT_ID", ev.cut_id.clone()),
        ("DIFUSOR_CUT_TIME", rfc3339(m.cut_time)),
        ("DIFUSOR_PUBLISHED_AT", rfc3339(m.published_at)),
        ("DIFUSOR_CUT_DIR", ev.cut_dir.display().to_string()),
        (
            "DIFUSOR_PREVIOUS_CUT_ID",
            ev.previous_live.clone().unwrap_or_default(),
        ),
        ("DIFUSOR_PACKAGE", m.original_name.clone()),
        ("DIFUSOR_SHA256", m.sha256.clone()),
        ("DIFUSOR_SIZE", m.size.to_string()),
        ("DIFUSOR_MODE", m.mode.clone()),
        ("DIFUSOR_FILES", m.files.to_string()),
        ("DIFUSOR_ENTRIES", m.entries.to_string()),
        (
            "DIFUSOR_UNCOMPRESSED_BYTES",
            m.uncompressed_bytes.to_string(),
        ),
        (
            "DIFUSOR_PACKAGES_IN_HISTORY",
            ev.packages_in_history.to_string(),
        ),
    ];
    if let Some(d) = diff {
        env.push(("DIFUSOR_CHANGED", d.changed.len().to_string()));
        env.push(("DIFUSOR_REMOVED", d.removed.len().to_string()));
    }
    env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The variables of an `incident` run (absent fields are empty strings).
pub fn incident_env(i: &Incident) -> Vec<(String, String)> {
    let severity = serde_json::to_value(i.severity)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    [
        ("DIFUSOR_EVENT", "incident".to_owned()),
        ("DIFUSOR_TIME", rfc3339(Some(i.time))),
        ("DIFUSOR_SEVERITY", severity),
        ("DIFUSOR_KIND", i.kind.clone()),
        ("DIFUSOR_REASON", i.reason.clone()),
        ("DIFUSOR_PACKAGE", i.package.clone().unwrap_or_default()),
        ("DIFUSOR_UPLOADER", i.uploader.clone().unwrap_or_default()),
        ("DIFUSOR_SUBJECT", i.subject.clone().unwrap_or_default()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A temporary file listing paths one per line; deleted when dropped.
pub struct ListFile {
    pub path: PathBuf,
}

impl ListFile {
    /// Writes `lines` to a new private file in the system temp directory.
    pub fn write(label: &str, lines: &[String]) -> std::io::Result<ListFile> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("difusor-{}-{label}-{n}.list", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let list = ListFile { path };
        let mut w = std::io::BufWriter::new(f);
        for l in lines {
            w.write_all(l.as_bytes())?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
        Ok(list)
    }
}

impl Drop for ListFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Kills the child's process group if the attempt ends (timeout, cancellation) while the
/// group leader has not been reaped — after that its id may belong to someone else.
struct GroupKiller {
    pgid: Option<rustix::process::Pid>,
}

impl GroupKiller {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    }
    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads everything from `r`, keeping the first `OUTPUT_KEPT` bytes.
async fn read_kept(mut r: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    kept
}

/// Output of a reader task, waiting at most `OUTPUT_GRACE` once the hook has exited.
async fn collect(task: Option<tokio::task::JoinHandle<Vec<u8>>>) -> Vec<u8> {
    let Some(task) = task else {
        return Vec::new();
    };
    let abort = task.abort_handle();
    match tokio::time::timeout(OUTPUT_GRACE, task).await {
        Ok(Ok(v)) => v,
        _ => {
            abort.abort();
            Vec::new()
        }
    }
}

/// Runs the hook once with `env`; exit 0 within `timeout` is delivered.
pub async fn run_once(
    name: &str,
    t: &CommandTarget,
    env: &[(String, String)],
    timeout: Duration,
) -> Attempt {
    let mut cmd = tokio::process::Command::new(&t.program);
    cmd.args(&t.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for var in &t.scrub_env {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let shown = t.program.display().to_string();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Attempt::Retry {
                reason: format!("cannot start {shown}: {e}"),
                after: None,
            };
        }
    };
    let mut killer = GroupKiller {
        pgid: child
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(id as i32)),
    };
    let stdout = child.stdout.take().map(|o| tokio::spawn(read_kept(o)));
    let stderr = child.stderr.take().map(|e| tokio::spawn(read_kept(e)));
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    let status = match waited {
        Ok(Ok(status)) => {
            killer.disarm();
            Ok(status)
        }
        Ok(Err(e)) => Err(format!("waiting for {shown} failed: {e}")),
        Err(_) => {
            killer.kill();
            let _ = child.wait().await;
            Err(format!(
                "{shown} timed out after {} s; its process group was killed",
                timeout.as_secs()
            ))
        }
    };
    let out = collect(stdout).await;
    let err = collect(stderr).await;
    let (out_text, err_text) = (excerpt(&out, 2000), excerpt(&err, 2000));
    match status {
        Ok(s) if s.success() => {
            tracing::info!(notifier = %name, stdout = %out_text, stderr = %err_text, "command hook ran");
            Attempt::Delivered
        }
        Ok(s) => {
            let how = match s.code() {
                Some(c) => format!("exited with status {c}"),
                None => "was killed by a signal".to_owned(),
            };
            tracing::warn!(notifier = %name, stdout = %out_text, stderr = %err_text, "command hook {how}");
            Attempt::Retry {
                reason: format!("{shown} {how}; stderr: {}", excerpt(&err, 300)),
                after: None,
            }
        }
        Err(reason) => {
            tracing::warn!(notifier = %name, stdout = %out_text, stderr = %err_text, %reason, "command hook failed");
            Attempt::Retry {
                reason,
                after: None,
            }
        }
    }
}
