//! The SFTP subsystem: our own request loop on a russh channel.
//!
//! Owns: three cooperating parts per session —
//! 1. the *reader* (this task) drains the channel as fast as the client sends, cuts packets
//!    and queues them; it never waits on the writer, which is what makes pipelined reads
//!    (`sftp get`, paramiko prefetch) unable to deadlock the SSH session;
//! 2. the *worker* thread ([`ops::Worker`]) executes requests in order with positional I/O;
//! 3. the *writer* task coalesces small replies and sends them with `data_bytes` (no copy),
//!    and answers CLOSEs that wait for the pipeline's verdict without holding up the worker.
//!
//! Must never: buffer without bound (queued request bytes are capped; a client exceeding the
//! cap is disconnected), or keep reading a stream whose framing is broken.

pub mod ops;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use russh::server::Msg;
use russh::{Channel, ChannelMsg};
use russh_sftp::protocol::StatusCode;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::events::Verdict;
pub use ops::SessionCtx;
use ops::{Outgoing, Worker};

/// Cap on request bytes queued for the worker. OpenSSH keeps at most 64 × 256 KiB in flight
/// (16 MiB); a client far beyond that is not following flow control and is cut off.
const MAX_QUEUED_BYTES: usize = 32 << 20;

/// Cap on reply bytes produced but not yet sent. A client that pipelines thousands of reads
/// but does not read the answers makes the worker wait here instead of filling memory.
const MAX_UNSENT_REPLY_BYTES: usize = 16 << 20;

/// Reply bytes in flight between the worker and the writer. The worker blocks (it is a plain
/// thread) when over the cap; the writer releases after sending and closes it when it stops,
/// so the worker can never wait on a writer that is gone.
pub struct ReplyBudget {
    used: std::sync::Mutex<(usize, bool)>,
    freed: std::sync::Condvar,
    cap: usize,
}

impl ReplyBudget {
    pub fn new(cap: usize) -> ReplyBudget {
        ReplyBudget {
            used: std::sync::Mutex::new((0, false)),
            freed: std::sync::Condvar::new(),
            cap,
        }
    }

    /// Waits until `n` more bytes fit (one reply always fits when nothing is in flight).
    pub fn reserve(&self, n: usize) {
        let mut g = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while !g.1 && g.0 > 0 && g.0 + n > self.cap {
            g = self.freed.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        g.0 += n;
    }

    pub fn release(&self, n: usize) {
        let mut g = self.used.lock().unwrap_or_else(|p| p.into_inner());
        g.0 = g.0.saturating_sub(n);
        self.freed.notify_all();
    }

    /// The writer is gone: never block again.
    pub fn close(&self) {
        let mut g = self.used.lock().unwrap_or_else(|p| p.into_inner());
        g.1 = true;
        self.freed.notify_all();
    }
}

/// Replies smaller than this are copied together into one SSH data message.
const COALESCE_BELOW: usize = 8 << 10;

/// Serves SFTP on `channel` until the client closes it.
pub async fn serve(channel: Channel<Msg>, ctx: SessionCtx) {
    let (mut rx, tx) = channel.split();
    let user = ctx.who.user.clone();
    let (frames_tx, frames_rx) = std::sync::mpsc::channel::<Bytes>();
    let (out_tx, out_rx) = mpsc::unbounded_channel::<Outgoing>();
    let queued = Arc::new(AtomicUsize::new(0));

    let budget = Arc::new(ReplyBudget::new(MAX_UNSENT_REPLY_BYTES));
    let worker = Worker::new(ctx, out_tx, Arc::clone(&queued), Arc::clone(&budget));
    let worker_thread = std::thread::Builder::new()
        .name(format!("sftp-{user}"))
        .spawn(move || worker.run(frames_rx));
    let worker_thread = match worker_thread {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot start sftp worker thread");
            let _ = tx.close().await;
            return;
        }
    };
    let writer = tokio::spawn(write_loop(tx, out_rx, budget));

    let mut buf = BytesMut::with_capacity(512 << 10);
    'read: while let Some(msg) = rx.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                buf.extend_from_slice(&data);
                loop {
                    match wire::next_frame(&mut buf) {
                        Ok(Some(frame)) => {
                            let n = queued.fetch_add(frame.len(), Ordering::Relaxed) + frame.len();
                            if n > MAX_QUEUED_BYTES {
                                tracing::warn!(%user, queued = n, "sftp client exceeds the request buffer; closing the session");
                                break 'read;
                            }
                            if frames_tx.send(frame).is_err() {
                                break 'read;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(%user, error = %e, "broken sftp stream; closing the session");
                            break 'read;
                        }
                    }
                }
            }
            ChannelMsg::Eof | ChannelMsg::Close => break,
            _ => {}
        }
    }
    // Hanging up the queue lets the worker finish what is queued, drop its handles (aborting
    // unfinished uploads), and then the writer flushes and closes the channel.
    drop(frames_tx);
    if let Err(e) = tokio::task::spawn_blocking(move || worker_thread.join()).await {
        tracing::error!(error = %e, "sftp worker could not be joined");
    }
    if let Err(e) = writer.await {
        tracing::error!(error = %e, "sftp writer task failed");
    }
}

async fn write_loop(
    tx: russh::ChannelWriteHalf<Msg>,
    mut out: mpsc::UnboundedReceiver<Outgoing>,
    budget: Arc<ReplyBudget>,
) {
    write_replies(&tx, &mut out, &budget).await;
    budget.close();
    // Like sshd when sftp-server exits: clients such as scp (SFTP mode) check it.
    let _ = tx.exit_status(0).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

/// Sends replies until the worker hangs up (and no verdict is pending) or the channel dies.
async fn write_replies(
    tx: &russh::ChannelWriteHalf<Msg>,
    out: &mut mpsc::UnboundedReceiver<Outgoing>,
    budget: &ReplyBudget,
) {
    let mut waiting: JoinSet<(Bytes, Option<String>)> = JoinSet::new();
    let mut open = true;
    while open || !waiting.is_empty() {
        let first = tokio::select! {
            m = out.recv(), if open => match m {
                Some(m) => m,
                None => { open = false; continue; }
            },
            Some(done) = waiting.join_next(), if !waiting.is_empty() => match done {
                Ok((b, stderr)) => {
                    // OpenSSH's sftp shows only the status code ("Failure"), not our message;
                    // the subsystem's stderr reaches the user's terminal, so say it there too.
                    if let Some(msg) = stderr {
                        let _ = tx.extended_data_bytes(1, Bytes::from(format!("difusor: {msg}\n"))).await;
                    }
                    Outgoing::Packet(b)
                }
                Err(e) => { tracing::error!(error = %e, "verdict wait failed"); continue; }
            },
        };
        let first = match first {
            Outgoing::Packet(b) => b,
            Outgoing::AwaitVerdict {
                id,
                verdict,
                timeout,
                path,
            } => {
                waiting.spawn(await_verdict(id, verdict, timeout, path));
                continue;
            }
        };
        // Coalesce the small replies that are already waiting into one message.
        let mut batch: Option<BytesMut> = None;
        let mut pending_big: Option<Bytes> = None;
        if first.len() < COALESCE_BELOW {
            let mut b = BytesMut::with_capacity(COALESCE_BELOW * 2);
            b.extend_from_slice(&first);
            while b.len() < 64 << 10 {
                match out.try_recv() {
                    Ok(Outgoing::Packet(p)) if p.len() < COALESCE_BELOW => b.extend_from_slice(&p),
                    Ok(Outgoing::Packet(p)) => {
                        pending_big = Some(p);
                        break;
                    }
                    Ok(Outgoing::AwaitVerdict {
                        id,
                        verdict,
                        timeout,
                        path,
                    }) => {
                        waiting.spawn(await_verdict(id, verdict, timeout, path));
                    }
                    Err(_) => break,
                }
            }
            batch = Some(b);
        } else {
            pending_big = Some(first);
        }
        for chunk in batch.map(BytesMut::freeze).into_iter().chain(pending_big) {
            let n = chunk.len();
            let sent = tx.data_bytes(chunk).await;
            budget.release(n);
            if sent.is_err() {
                // The channel is gone: nobody left to answer.
                return;
            }
        }
    }
}

/// Answers an upload's CLOSE with the pipeline's verdict, or OK after `timeout` (the result
/// is then only logged by the pipeline).
async fn await_verdict(
    id: u32,
    verdict: tokio::sync::oneshot::Receiver<Verdict>,
    timeout: std::time::Duration,
    path: String,
) -> (Bytes, Option<String>) {
    match tokio::time::timeout(timeout, verdict).await {
        Ok(Ok(Verdict::Accepted(msg))) => (wire::status(id, StatusCode::Ok, &msg), None),
        Ok(Ok(Verdict::Rejected(reason))) => {
            let shown = format!("{path}: {reason}");
            (wire::status(id, StatusCode::Failure, &reason), Some(shown))
        }
        // The consumer did not want to answer: the upload itself succeeded.
        Ok(Err(_)) => (wire::status(id, StatusCode::Ok, "Success"), None),
        Err(_) => {
            tracing::warn!(%path, timeout_secs = timeout.as_secs(), "verification still running; answering the upload's close with OK");
            (
                wire::status(id, StatusCode::Ok, "received; verification continues"),
                None,
            )
        }
    }
}
