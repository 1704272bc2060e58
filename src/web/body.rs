//! The response body: one `Bytes` frame for files in memory, positional reads in chunks for
//! large files served from the snapshot's open handle.
//!
//! Owns: [`ServedBody`]. A body holds its own `Bytes` / `Arc<File>`, so it keeps the old cut's
//! data alive after a swap until the transfer ends.
//!
//! Must never: read a file on a runtime thread (reads go through `spawn_blocking`), or read
//! more than one chunk ahead of what the connection has taken (the client's pace bounds memory).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::task::JoinHandle;

/// Bytes read per step from a large file.
const CHUNK: u64 = 256 << 10;

/// A response body.
pub enum ServedBody {
    /// A single frame (or nothing: HEAD, 304, errors without a body).
    Full(Option<Bytes>),
    /// `len` bytes of `file` from `pos`.
    File {
        file: Arc<File>,
        pos: u64,
        end: u64,
        reading: Option<JoinHandle<std::io::Result<Bytes>>>,
    },
}

impl ServedBody {
    pub fn empty() -> ServedBody {
        ServedBody::Full(None)
    }

    pub fn bytes(b: Bytes) -> ServedBody {
        ServedBody::Full(Some(b))
    }

    pub fn file(file: Arc<File>, start: u64, end: u64) -> ServedBody {
        ServedBody::File {
            file,
            pos: start,
            end,
            reading: None,
        }
    }
}

impl Body for ServedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            ServedBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ServedBody::File {
                file,
                pos,
                end,
                reading,
            } => {
                if *pos >= *end {
                    return Poll::Ready(None);
                }
                let handle = reading.get_or_insert_with(|| {
                    let f = Arc::clone(file);
                    let at = *pos;
                    let n = (*end - at).min(CHUNK) as usize;
                    tokio::task::spawn_blocking(move || {
                        let mut buf = vec![0u8; n];
                        let mut filled = 0;
                        while filled < n {
                            let Some(rest) = buf.get_mut(filled..) else {
                                break;
                            };
                            let got = f.read_at(rest, at + filled as u64)?;
                            if got == 0 {
                                return Err(std::io::Error::new(
                                    std::io::ErrorKind::UnexpectedEof,
                                    "file shrank while being served",
                                ));
                            }
                            filled += got;
                        }
                        Ok(Bytes::from(buf))
                    })
                });
                let r = ready!(Pin::new(handle).poll(cx));
                *reading = None;
                match r {
                    Ok(Ok(b)) => {
                        *pos += b.len() as u64;
                        Poll::Ready(Some(Ok(Frame::data(b))))
                    }
                    Ok(Err(e)) => {
                        *pos = *end;
                        Poll::Ready(Some(Err(e)))
                    }
                    Err(e) => {
                        *pos = *end;
                        Poll::Ready(Some(Err(std::io::Error::other(e))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ServedBody::Full(b) => b.is_none(),
            ServedBody::File { pos, end, .. } => pos >= end,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ServedBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ServedBody::File { pos, end, .. } => SizeHint::with_exact(end.saturating_sub(*pos)),
        }
    }
}

impl Drop for ServedBody {
    fn drop(&mut self) {
        if let ServedBody::File {
            reading: Some(h), ..
        } = self
        {
            h.abort();
        }
    }
}
