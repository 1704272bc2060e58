//! One `[[sources.s3]]`: the institute's bucket, listed every poll; objects whose file name
//! matches the pattern and that were not fetched before (by key and ETag) are downloaded in
//! key order, resuming an interrupted download from the bytes already on disk.
//!
//! Owns: the S3 side of a pull source (through the mirror's [`Bucket`], the one S3 client).
//!
//! Must never: write to the institute's bucket, or log a credential.

use std::time::SystemTime;

use tokio::sync::watch;

use super::config::S3SourceConfig;
use super::{Fetched, SeenPackage, SourceDir, SourceState, hand_over, plain_name};
use crate::events::UploadSender;
use crate::mirror::client::{Bucket, Credentials};
use crate::store::Store;

/// Sidecars are small; anything bigger is not one.
const MAX_SIDECAR: usize = 4096;

pub struct S3Source {
    cfg: S3SourceConfig,
    bucket: Bucket,
    store: Store,
    dir: SourceDir,
    uploads: UploadSender,
}

impl S3Source {
    pub fn new(
        cfg: S3SourceConfig,
        store: &Store,
        uploads: UploadSender,
    ) -> Result<S3Source, String> {
        let creds =
            Credentials::load(&cfg.name, &cfg.bucket.credentials).map_err(|e| e.to_string())?;
        let bucket = Bucket::new(&cfg.bucket, &creds).map_err(|e| e.to_string())?;
        Ok(S3Source {
            dir: SourceDir::new(store, &cfg.name),
            cfg,
            bucket,
            store: store.clone(),
            uploads,
        })
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut state = self.dir.load();
        tracing::info!(source = %self.cfg.name, bucket = %self.cfg.bucket.bucket, "polling the bucket for packages");
        loop {
            match self.poll(&mut state).await {
                Ok(()) => self.dir.health(&mut state, None),
                Err(e) => self.dir.health(&mut state, Some(&e)),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.poll) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// One poll: list, fetch what is new, hand it over one at a time.
    pub async fn poll(&self, state: &mut SourceState) -> Result<(), String> {
        let what = |e: &dyn std::fmt::Display| format!("bucket {}: {e}", self.cfg.bucket.bucket);
        let listed = self.bucket.list().await.map_err(|e| what(&e))?;
        let keys: std::collections::BTreeSet<&str> =
            listed.iter().map(|l| l.key.as_str()).collect();
        for obj in &listed {
            let name = obj.key.rsplit('/').next().unwrap_or("");
            if !plain_name(name) || name.ends_with(".sha256") || !self.cfg.pattern.is_match(name) {
                continue;
            }
            let tag = obj
                .e_tag
                .clone()
                .or_else(|| Some(format!("size:{}", obj.size)));
            if state.seen.get(&obj.key).is_some_and(|s| s.etag == tag) {
                continue;
            }
            let started = SystemTime::now();
            let partial_dir = self.dir.partial_dir();
            tokio::fs::create_dir_all(&partial_dir)
                .await
                .map_err(|e| what(&e))?;
            let partial = partial_dir.join(name);
            let meta = partial_dir.join(format!("{name}.meta"));
            // A partial of another version of the object starts over.
            let same_version = tokio::fs::read_to_string(&meta)
                .await
                .ok()
                .is_some_and(|m| Some(m) == tag);
            let kept = tokio::fs::metadata(&partial)
                .await
                .map(|m| m.len())
                .unwrap_or(0);
            // A partial longer than the object is not a prefix of it: start over.
            let have = if same_version && kept <= obj.size {
                kept
            } else {
                let _ = tokio::fs::remove_file(&partial).await;
                tokio::fs::write(&meta, tag.clone().unwrap_or_default())
                    .await
                    .map_err(|e| what(&e))?;
                0
            };
            if have > 0 {
                tracing::info!(source = %self.cfg.name, package = name, from = have, "resuming an interrupted download");
            }
            let received = if have < obj.size {
                self.bucket
                    .download_to(&obj.key, &partial, have, obj.e_tag.as_deref())
                    .await
                    .map_err(|e| what(&e))?
            } else {
                0
            };
            if have + received != obj.size {
                // Kept: the next poll resumes it.
                return Err(format!(
                    "{}: the download ended at {} of {} bytes",
                    obj.key,
                    have + received,
                    obj.size
                ));
            }
            let sidecar_key = format!("{}.sha256", obj.key);
            let sidecar = if keys.contains(sidecar_key.as_str()) {
                self.bucket
                    .read_small(&sidecar_key, MAX_SIDECAR)
                    .await
                    .map_err(|e| what(&e))?
                    .and_then(|b| String::from_utf8(b).ok())
            } else {
                None
            };
            let done = partial_dir.join(format!("{name}.complete"));
            tokio::fs::rename(&partial, &done)
                .await
                .map_err(|e| what(&e))?;
            let _ = tokio::fs::remove_file(&meta).await;
            let fetched = Fetched {
                name: name.to_owned(),
                file: done,
                sidecar,
                remote: None,
                started,
                finished: SystemTime::now(),
                bytes_received: received,
                resumed: have > 0,
            };
            let (sha256, result, size) =
                hand_over(&self.store, &self.uploads, &self.cfg.name, fetched)
                    .await
                    .map_err(|e| what(&e))?;
            state.seen.insert(
                obj.key.clone(),
                SeenPackage {
                    sha256,
                    size,
                    result,
                    etag: tag,
                },
            );
            self.dir.save(state);
        }
        Ok(())
    }
}
