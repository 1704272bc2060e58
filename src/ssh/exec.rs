//! Exec requests: legacy `scp -O` uploads (`scp -t`), and a clear refusal for anything else.
//!
//! Owns: wiring the scp sink protocol (`scp`) to the jailed filesystem — [`VfsSink`] resolves
//! targets from the user's home and stages every file through `vfs::Upload`, so legacy scp
//! gets exactly the guarantees of SFTP (atomic appearance, upload-completed event, log line).
//!
//! Must never: start a process or a shell, or write outside what `vfs` permits.

use std::sync::Arc;

use russh::server::Msg;
use russh::{Channel, ChannelMsg};
use tokio::io::AsyncWriteExt;

use super::Shared;
use super::scp::{self, SinkFile, SinkFs};
use super::transfer::Who;
use crate::vfs::upload::UploadOptions;
use crate::vfs::{SetAttrs, Upload, VPath};

/// Largest single file accepted over legacy scp.
const MAX_SCP_FILE: u64 = 64 << 30;

/// Runs one exec request to completion and closes the channel.
pub async fn run(channel: Channel<Msg>, command: String, who: Who, shared: Arc<Shared>) {
    let (mut rx, tx) = channel.split();
    let status = match scp::parse_exec_command(&command) {
        Ok(Some(req)) => {
            tracing::info!(user = %who.user, command = %command, "legacy scp upload");
            let mut sink = VfsSink {
                who: who.clone(),
                shared: Arc::clone(&shared),
                home: shared.vfs.home(who.role),
            };
            let writer = tx.make_writer();
            // Stdin of the "remote scp": the channel's data, EOF included.
            let reader = rx.make_reader();
            scp::run_sink(&req, &mut sink, reader, writer, MAX_SCP_FILE).await
        }
        Ok(None) => {
            tracing::info!(user = %who.user, command = %command, "exec refused");
            refuse(
                &tx,
                "difusor: commands are not available here; use sftp (or scp) to upload\n",
            )
            .await
        }
        Err(msg) => {
            tracing::info!(user = %who.user, command = %command, reason = %msg, "scp refused");
            refuse(&tx, &format!("difusor: {msg}\n")).await
        }
    };
    // Drain anything still queued so the session loop never blocks on this channel.
    while let Ok(Some(m)) =
        tokio::time::timeout(std::time::Duration::from_millis(10), rx.wait()).await
    {
        if matches!(m, ChannelMsg::Eof | ChannelMsg::Close) {
            break;
        }
    }
    // Exit status, then EOF, then close — in that order, through the write half, so the
    // client's last ack and the status are not overtaken (traps note §17).
    let _ = tx.exit_status(status).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

async fn refuse(tx: &russh::ChannelWriteHalf<Msg>, msg: &str) -> u32 {
    let mut err = tx.make_writer_ext(Some(1));
    let _ = err.write_all(msg.as_bytes()).await;
    let _ = err.flush().await;
    1
}

/// The scp sink's view of the jailed filesystem.
struct VfsSink {
    who: Who,
    shared: Arc<Shared>,
    home: VPath,
}

impl SinkFs for VfsSink {
    fn is_dir(&mut self, target: &str) -> bool {
        VPath::resolve(&self.home, target)
            .ok()
            .and_then(|p| self.shared.vfs.stat(self.who.role, &p, true).ok())
            .is_some_and(|a| a.is_dir())
    }

    fn begin_file(
        &mut self,
        path: &str,
        mode: u32,
        _size: u64,
    ) -> Result<Box<dyn SinkFile>, String> {
        let p = VPath::resolve(&self.home, path).map_err(|e| e.to_string())?;
        let opts = UploadOptions {
            truncate: true,
            exclusive: false,
            create: true,
            append: false,
        };
        let upload = self
            .shared
            .vfs
            .begin_upload(self.who.role, &p, Some(mode), opts)
            .map_err(|e| format!("{path}: {e}"))?;
        Ok(Box::new(VfsSinkFile {
            upload,
            offset: 0,
            who: self.who.clone(),
            shared: Arc::clone(&self.shared),
        }))
    }
}

struct VfsSinkFile {
    upload: Upload,
    offset: u64,
    who: Who,
    shared: Arc<Shared>,
}

impl SinkFile for VfsSinkFile {
    fn write(&mut self, data: &[u8]) -> Result<(), String> {
        self.upload
            .write_at(self.offset, data)
            .map_err(|e| format!("write failed: {e}"))?;
        self.offset += data.len() as u64;
        Ok(())
    }

    fn set_times(&mut self, mtime: u64, atime: u64) -> Result<(), String> {
        let clamp = |t: u64| t.min(u32::MAX as u64) as u32;
        self.upload
            .set_attrs(SetAttrs {
                times: Some((clamp(atime), clamp(mtime))),
                ..SetAttrs::default()
            })
            .map_err(|e| e.to_string())
    }

    fn commit(self: Box<Self>) -> Result<(), String> {
        let record = self.upload.commit().map_err(|e| e.to_string())?;
        // Legacy scp has no way to carry the pipeline's verdict back; it is logged instead.
        let _ = self.shared.transfers.upload_committed(&self.who, record);
        Ok(())
    }
}
