//! `difusor mirror verify` and the survey behind `difusor mirror sync`: the only code that
//! lists a bucket and reads objects back.
//!
//! Owns: [`verify`] (the bucket against the live cut: missing, extra, different — by content
//! SHA-256 and by `Content-Type`/`Cache-Control`, not by size or ETag alone) and [`survey`]
//! (what the bucket really holds, as a journal state).
//!
//! Must never: write to the bucket (sync writes through the worker, in its usual order).

use std::collections::BTreeMap;

use futures::StreamExt;

use super::client::{Bucket, BucketError, ObjectContent};
use super::journal::{BucketState, ObjectRecord};
use super::scan::CutFiles;

/// How a bucket differs from a cut.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// Files of the cut the bucket does not have.
    pub missing: Vec<String>,
    /// Objects under the prefix the cut does not have.
    pub extra: Vec<String>,
    /// Present, but not the same: (key, what differs).
    pub different: Vec<(String, String)>,
    /// Objects compared and equal.
    pub equal: u64,
}

impl Difference {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.different.is_empty()
    }
}

/// Reads back (hashing) every object of `keys`, `concurrency` at a time.
async fn read_all(
    bucket: &Bucket,
    keys: Vec<String>,
    concurrency: usize,
) -> Result<BTreeMap<String, Option<ObjectContent>>, BucketError> {
    let mut out = BTreeMap::new();
    let bucket = bucket.clone();
    let mut results = futures::stream::iter(keys)
        .map(move |k| {
            let bucket = bucket.clone();
            async move {
                let r = bucket.read(&k).await;
                (k, r)
            }
        })
        .buffer_unordered(concurrency.max(1));
    while let Some((k, r)) = results.next().await {
        out.insert(k, r?);
    }
    Ok(out)
}

/// Compares the bucket with `files` (the live cut).
pub async fn verify(
    bucket: &Bucket,
    files: &CutFiles,
    concurrency: usize,
) -> Result<Difference, BucketError> {
    let listed: BTreeMap<String, u64> = bucket
        .list()
        .await?
        .into_iter()
        .map(|l| (l.key, l.size))
        .collect();
    let mut d = Difference::default();
    let mut to_read = Vec::new();
    for (key, f) in files {
        match listed.get(key) {
            None => d.missing.push(key.clone()),
            Some(&size) if size != f.size => d.different.push((
                key.clone(),
                format!("size {size} in the bucket, {} live", f.size),
            )),
            Some(_) => to_read.push(key.clone()),
        }
    }
    d.extra = listed
        .keys()
        .filter(|k| !files.contains_key(*k))
        .cloned()
        .collect();
    for (key, got) in read_all(bucket, to_read, concurrency).await? {
        let Some(f) = files.get(&key) else { continue };
        match got {
            None => d.missing.push(key),
            Some(o) if o.sha256 != f.sha256 => d.different.push((
                key,
                format!(
                    "content sha256 {} in the bucket, {} live",
                    short(&o.sha256),
                    short(&f.sha256)
                ),
            )),
            Some(o) if o.headers != f.headers => d.different.push((
                key,
                format!(
                    "headers Content-Type {:?} / Cache-Control {:?} in the bucket, {:?} / {:?} live",
                    o.headers.content_type,
                    o.headers.cache_control,
                    f.headers.content_type,
                    f.headers.cache_control
                ),
            )),
            Some(_) => d.equal += 1,
        }
    }
    d.missing.sort();
    d.different.sort();
    Ok(d)
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// What the bucket holds under the prefix: objects with the live cut's size are read back
/// (their content and headers become known); any other object is uncertain (uploaded again
/// if the cut has it, deleted if not).
pub async fn survey(
    bucket: &Bucket,
    files: &CutFiles,
    concurrency: usize,
) -> Result<BucketState, BucketError> {
    let mut state = BucketState::default();
    let mut to_read = Vec::new();
    for l in bucket.list().await? {
        match files.get(&l.key) {
            Some(f) if f.size == l.size => to_read.push(l.key),
            _ => {
                state.uncertain.insert(l.key);
            }
        }
    }
    for (key, got) in read_all(bucket, to_read, concurrency).await? {
        if let Some(o) = got {
            state.objects.insert(
                key,
                ObjectRecord {
                    sha256: o.sha256,
                    size: o.size,
                    content_type: o.headers.content_type,
                    cache_control: o.headers.cache_control,
                },
            );
        }
    }
    Ok(state)
}
