//! The access log: one JSON line per request in `<logs_dir>/access-YYYY-MM-DD.log` (UTC date,
//! a new file each day).
//!
//! Owns: the bounded queue between the request path and the writer thread, the formatting
//! (done by the writer, never on the request path) and the daily rotation. The request path
//! only pushes a [`Record`] onto the queue: fixed fields plus one small owned string holding
//! path, user agent, referer and cut id.
//!
//! PERF: the strings are copied, not kept as `HeaderValue`/`Uri` clones. Those share the
//! connection's read buffer: holding them until the writer runs would stop hyper from reusing
//! that buffer (a fresh allocation per read) and bounce its refcount between threads.
//!
//! PERF: the queue is a mutex-guarded `Vec` that the writer swaps out every
//! [`FLUSH_EVERY`]: a push is an uncontended lock and a move, and — unlike a channel whose
//! receiver sleeps — never a wake-up syscall. Measured: a channel waking the writer per line
//! cost ~25 % of small-file throughput; the swap buffer costs a few percent.
//!
//! Must never: slow serving. When the queue is full the line is dropped and counted; the
//! writer notes the count in the log (`{"dropped_lines": n}`) and in tracing.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, Version};
use serde::Serialize;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use crate::web::config::AccessLogConfig;

/// One request, as the request path hands it over.
#[derive(Debug)]
pub struct Record {
    pub time: SystemTime,
    pub client: IpAddr,
    pub method: &'static str,
    pub version: Version,
    pub status: u16,
    /// Body bytes sent (0 for HEAD and 304).
    pub bytes: u64,
    /// From the request's arrival to the response being ready (not the transfer).
    pub duration: Duration,
    /// path, user agent, referer, cut id, one after the other; `ends` says where each ends.
    text: String,
    ends: [u32; 3],
    has_user_agent: bool,
    has_referer: bool,
}

impl Record {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        time: SystemTime,
        client: IpAddr,
        method: &Method,
        version: Version,
        status: u16,
        bytes: u64,
        duration: Duration,
        path: &str,
        user_agent: Option<&HeaderValue>,
        referer: Option<&HeaderValue>,
        cut: &str,
    ) -> Record {
        // Non-UTF-8 header bytes are logged as absent rather than lossily.
        let ua = user_agent.and_then(|v| v.to_str().ok());
        let rf = referer.and_then(|v| v.to_str().ok());
        let (ua_s, rf_s) = (ua.unwrap_or(""), rf.unwrap_or(""));
        let mut text = String::with_capacity(path.len() + ua_s.len() + rf_s.len() + cut.len());
        text.push_str(path);
        let e0 = text.len() as u32;
        text.push_str(ua_s);
        let e1 = text.len() as u32;
        text.push_str(rf_s);
        let e2 = text.len() as u32;
        text.push_str(cut);
        let method = match *method {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::DELETE => "DELETE",
            Method::OPTIONS => "OPTIONS",
            Method::PATCH => "PATCH",
            Method::CONNECT => "CONNECT",
            Method::TRACE => "TRACE",
            _ => "OTHER",
        };
        Record {
            time,
            client,
            method,
            version,
            status,
            bytes,
            duration,
            text,
            ends: [e0, e1, e2],
            has_user_agent: ua.is_some(),
            has_referer: rf.is_some(),
        }
    }

    fn part(&self, i: usize) -> &str {
        let start = match i {
            0 => 0,
            _ => self.ends.get(i - 1).copied().unwrap_or(0) as usize,
        };
        let end = self.ends.get(i).map_or(self.text.len(), |e| *e as usize);
        self.text.get(start..end).unwrap_or("")
    }
}

/// How often the writer takes the queued lines and writes them.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Queue shards: each serving thread pushes to its own, so the lock is uncontended.
const SHARDS: usize = 8;

thread_local! {
    /// This thread's shard, picked round-robin the first time it logs.
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}
static NEXT_SHARD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Lines between the request path and the writer.
#[derive(Debug)]
struct Queue {
    /// PERF: one `Vec` per shard (see [`SHARD`]); the writer swaps them all out.
    shards: Vec<Mutex<Vec<Record>>>,
    /// Lines allowed per shard before dropping.
    cap: usize,
    dropped: AtomicU64,
    /// Set when the last [`AccessLog`] goes: the writer writes what is left and ends.
    closed: AtomicBool,
}

/// The request path's end of the log.
#[derive(Debug)]
pub struct AccessLog {
    queue: Option<Arc<Queue>>,
    writer: Option<std::thread::Thread>,
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        if let Some(q) = &self.queue {
            q.closed.store(true, Ordering::Release);
        }
        if let Some(t) = &self.writer {
            t.unpark();
        }
    }
}

impl AccessLog {
    /// A log that writes nothing (`web.access_log.enabled = false`).
    pub fn disabled() -> AccessLog {
        AccessLog {
            queue: None,
            writer: None,
        }
    }

    /// Starts the writer thread for `dir`. It ends when the last [`AccessLog`] is dropped.
    pub fn start(dir: &Path, cfg: &AccessLogConfig) -> std::io::Result<AccessLog> {
        if !cfg.enabled {
            return Ok(AccessLog::disabled());
        }
        std::fs::create_dir_all(dir)?;
        let queue = Arc::new(Queue {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Vec::with_capacity(256)))
                .collect(),
            cap: cfg.queue.div_ceil(SHARDS),
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        });
        let q = Arc::clone(&queue);
        let dir = dir.to_owned();
        let handle = std::thread::Builder::new()
            .name("difusor-access-log".into())
            .spawn(move || writer(dir, q))?;
        Ok(AccessLog {
            queue: Some(queue),
            writer: Some(handle.thread().clone()),
        })
    }

    pub fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Queues `r`, or drops and counts it if the writer is behind.
    pub fn log(&self, r: Record) {
        let Some(q) = &self.queue else { return };
        let shard = SHARD.with(|s| *s);
        let Some(lines) = q.shards.get(shard) else {
            return;
        };
        let mut lines = lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() < q.cap {
            lines.push(r);
        } else {
            drop(lines);
            q.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped because the queue was full, since start.
    pub fn dropped(&self) -> u64 {
        self.queue
            .as_ref()
            .map_or(0, |q| q.dropped.load(Ordering::Relaxed))
    }
}

#[derive(Serialize)]
struct Line<'a> {
    time: &'a str,
    client: IpAddr,
    method: &'a str,
    path: &'a str,
    proto: &'a str,
    status: u16,
    bytes: u64,
    duration_ms: f64,
    referer: Option<&'a str>,
    user_agent: Option<&'a str>,
    cut: &'a str,
}

fn proto(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        _ => "other",
    }
}

/// The log file open for one UTC day.
struct Day {
    date: time::Date,
    out: BufWriter<File>,
}

fn open_day(dir: &Path, date: time::Date) -> std::io::Result<Day> {
    let name = format!(
        "access-{:04}-{:02}-{:02}.log",
        date.year(),
        u8::from(date.month()),
        date.day()
    );
    let path: PathBuf = dir.join(name);
    let f = OpenOptions::new().create(true).append(true).open(&path)?;
    Ok(Day {
        date,
        out: BufWriter::with_capacity(64 << 10, f),
    })
}

fn writer(dir: PathBuf, queue: Arc<Queue>) {
    let mut day: Option<Day> = None;
    let mut reported_dropped = 0u64;
    let mut line = Vec::with_capacity(512);
    let mut batch: Vec<Record> = Vec::with_capacity(1024);
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    loop {
        let closing = queue.closed.load(Ordering::Acquire);
        if !closing {
            std::thread::park_timeout(FLUSH_EVERY);
        }
        for shard in &queue.shards {
            let mut lines = shard.lock().unwrap_or_else(|p| p.into_inner());
            if batch.is_empty() {
                std::mem::swap(&mut *lines, &mut batch);
            } else {
                batch.append(&mut lines);
            }
        }
        // Shards interleave in time; the file is in order.
        batch.sort_by_key(|r| r.time);
        for r in batch.drain(..) {
            let t = time::OffsetDateTime::from(r.time);
            if day.as_ref().is_none_or(|d| d.date != t.date()) {
                if let Some(mut old) = day.take() {
                    let _ = old.out.flush();
                }
                match open_day(&dir, t.date()) {
                    Ok(d) => day = Some(d),
                    Err(e) => {
                        tracing::error!(dir = %dir.display(), error = %e, "cannot open the access log");
                    }
                }
            }
            let stamp = t.format(rfc3339).unwrap_or_default();
            line.clear();
            let rec = Line {
                time: &stamp,
                client: r.client,
                method: r.method,
                path: r.part(0),
                proto: proto(r.version),
                status: r.status,
                bytes: r.bytes,
                duration_ms: r.duration.as_micros() as f64 / 1000.0,
                referer: r.has_referer.then(|| r.part(2)),
                user_agent: r.has_user_agent.then(|| r.part(1)),
                cut: r.part(3),
            };
            if serde_json::to_writer(&mut line, &rec).is_ok() {
                line.push(b'\n');
                if let Some(d) = day.as_mut()
                    && let Err(e) = d.out.write_all(&line)
                {
                    tracing::error!(error = %e, "cannot write the access log");
                }
            }
        }
        let now_dropped = queue.dropped.load(Ordering::Relaxed);
        if now_dropped > reported_dropped {
            tracing::warn!(
                dropped = now_dropped - reported_dropped,
                total = now_dropped,
                "access log lines dropped: the writer could not keep up"
            );
            if let Some(d) = day.as_mut() {
                let _ = writeln!(
                    d.out,
                    "{{\"dropped_lines\":{}}}",
                    now_dropped - reported_dropped
                );
            }
            reported_dropped = now_dropped;
        }
        if let Some(d) = day.as_mut() {
            let _ = d.out.flush();
        }
        if closing {
            return;
        }
    }
}
