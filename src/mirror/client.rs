//! One target's bucket, through `object_store`'s S3 client: credentials, put (single or
//! multipart) with the headers the HTTPS server sends, delete, list, and read-back for verify.
//!
//! Owns: [`Credentials`] (read from the environment variables or the file the config names;
//! redacted in `Debug`, never logged) and [`Bucket`], the only code that talks S3.
//!
//! Must never: read ambient AWS configuration (`AWS_CA_BUNDLE`, `AWS_ENDPOINT`, profiles,
//! instance metadata) — the client is built with `AmazonS3Builder::new()` and only what the
//! target says; put a credential in an error message or a log line; follow a key outside the
//! target's prefix.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::{
    Attribute, Attributes, ClientOptions, ObjectStore, ObjectStoreExt, PutMultipartOptions,
    PutOptions, PutPayload, RetryConfig, WriteMultipart, path::Path as ObjectPath,
};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::config::{CredentialSource, S3Target};
pub use crate::config::Secret;

/// A target's access key pair (both halves redacted in `Debug`).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

/// Why a target cannot be set up. Messages name variables and files, never their contents.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("mirror target {target:?}: environment variable {var} is not set (or empty)")]
    MissingEnv { target: String, var: String },
    #[error("mirror target {target:?}: cannot read credentials file {path}: {source}")]
    ReadFile {
        target: String,
        path: String,
        source: std::io::Error,
    },
    #[error("mirror target {target:?}: credentials file {path}: {reason}")]
    BadFile {
        target: String,
        path: String,
        reason: String,
    },
    #[error("mirror target {target:?}: {reason}")]
    Client { target: String, reason: String },
}

impl Credentials {
    /// Reads the credentials `source` names (at start; never from the config text).
    pub fn load(target: &str, source: &CredentialSource) -> Result<Credentials, SetupError> {
        match source {
            CredentialSource::Env {
                access_key,
                secret_key,
                session_token,
            } => {
                let get = |var: &str| {
                    std::env::var(var)
                        .ok()
                        .filter(|v| !v.trim().is_empty())
                        .map(|v| Secret::new(v.trim()))
                };
                let missing = |var: &str| SetupError::MissingEnv {
                    target: target.to_owned(),
                    var: var.to_owned(),
                };
                Ok(Credentials {
                    access_key_id: get(access_key).ok_or_else(|| missing(access_key))?,
                    secret_access_key: get(secret_key).ok_or_else(|| missing(secret_key))?,
                    session_token: get(session_token),
                })
            }
            CredentialSource::File(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| SetupError::ReadFile {
                        target: target.to_owned(),
                        path: path.display().to_string(),
                        source,
                    })?;
                Credentials::parse(&text).map_err(|reason| SetupError::BadFile {
                    target: target.to_owned(),
                    path: path.display().to_string(),
                    reason,
                })
            }
        }
    }

    /// The credentials file: `key = value` (or `KEY=value`) lines, `#` comments, blank lines and
    /// `[section]` headers ignored, values optionally quoted. Keys (case-insensitive):
    /// `access_key_id` / `aws_access_key_id`, `secret_access_key` / `aws_secret_access_key`,
    /// optionally `session_token` / `aws_session_token`. So a one-profile `~/.aws/credentials`
    /// and an env-file both work. Errors name the line, never its value.
    pub fn parse(text: &str) -> Result<Credentials, String> {
        let (mut key, mut secret, mut token) = (None, None, None);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((k, v)) = line.split_once('=') else {
                return Err(format!("line {} is not `key = value`", n + 1));
            };
            let v = v.trim().trim_matches('"').trim_matches('\'').to_owned();
            if v.is_empty() {
                return Err(format!("line {} has an empty value", n + 1));
            }
            match k.trim().to_ascii_lowercase().as_str() {
                "access_key_id" | "aws_access_key_id" => key = Some(Secret::new(v)),
                "secret_access_key" | "aws_secret_access_key" => secret = Some(Secret::new(v)),
                "session_token" | "aws_session_token" => token = Some(Secret::new(v)),
                _ => return Err(format!("line {}: unknown key", n + 1)),
            }
        }
        Ok(Credentials {
            access_key_id: key.ok_or("no access_key_id line")?,
            secret_access_key: secret.ok_or("no secret_access_key line")?,
            session_token: token,
        })
    }
}

/// The headers an object carries, as the HTTPS server would send them for its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHeaders {
    pub content_type: String,
    pub cache_control: String,
}

/// The object attributes that carry `headers`.
fn attributes(headers: &ObjectHeaders) -> Attributes {
    let mut a = Attributes::new();
    a.insert(Attribute::ContentType, headers.content_type.clone().into());
    a.insert(
        Attribute::CacheControl,
        headers.cache_control.clone().into(),
    );
    a
}

/// What reading an object back found.
#[derive(Debug, Clone)]
pub struct ObjectContent {
    pub sha256: String,
    pub size: u64,
    pub headers: ObjectHeaders,
}

/// One listed object: its path under the prefix and size.
#[derive(Debug, Clone)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    /// The object's ETag (changes when the object is replaced).
    pub e_tag: Option<String>,
}

/// A target's bucket: the S3 client and the key prefix.
#[derive(Clone)]
pub struct Bucket {
    pub name: String,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    multipart_threshold: u64,
    part_size: usize,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket")
            .field("name", &self.name)
            .field("store", &self.store.to_string())
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// A failure talking to the bucket (the text is `object_store`'s: URLs and status codes, no
/// credentials), or reading the local file being uploaded.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    #[error("{0}")]
    Remote(#[from] object_store::Error),
    #[error("local file: {0}")]
    Local(#[from] std::io::Error),
    #[error("key {0:?} is not a valid object key")]
    BadKey(String),
}

impl Bucket {
    /// A client for `target` with `credentials`. No ambient AWS configuration is read.
    pub fn new(target: &S3Target, credentials: &Credentials) -> Result<Bucket, SetupError> {
        let client_options = ClientOptions::new()
            .with_allow_http(target.allow_http)
            .with_timeout(target.request_timeout)
            .with_connect_timeout(std::time::Duration::from_secs(10))
            .with_pool_max_idle_per_host(target.concurrency.max(4));
        let retry = RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: std::time::Duration::from_millis(100),
                max_backoff: std::time::Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: target.max_retries,
            retry_timeout: target.request_timeout,
        };
        let mut b = AmazonS3Builder::new()
            .with_region(&target.region)
            .with_bucket_name(&target.bucket)
            .with_access_key_id(credentials.access_key_id.expose())
            .with_secret_access_key(credentials.secret_access_key.expose())
            .with_allow_http(target.allow_http)
            .with_client_options(client_options)
            .with_retry(retry);
        if let Some(t) = &credentials.session_token {
            b = b.with_token(t.expose());
        }
        match (&target.endpoint, target.path_style) {
            (Some(e), true) => b = b.with_endpoint(e),
            (Some(e), false) => {
                // object_store wants the bucket's own host for virtual-hosted requests.
                let (scheme, host) = e.split_once("://").unwrap_or(("https", e));
                b = b
                    .with_endpoint(format!("{scheme}://{}.{host}", target.bucket))
                    .with_virtual_hosted_style_request(true);
            }
            (None, vhost) => b = b.with_virtual_hosted_style_request(!vhost),
        }
        let store = b.build().map_err(|e| SetupError::Client {
            target: target.name.clone(),
            reason: e.to_string(),
        })?;
        Ok(Bucket {
            name: target.name.clone(),
            store: Arc::new(store),
            prefix: target.prefix.clone(),
            multipart_threshold: target.multipart_threshold,
            part_size: target.part_size as usize,
        })
    }

    fn location(&self, key: &str) -> Result<ObjectPath, BucketError> {
        ObjectPath::parse(format!("{}{key}", self.prefix))
            .map_err(|_| BucketError::BadKey(key.to_owned()))
    }

    /// Whether `key` can be an object key at all (what `object_store` accepts).
    pub fn valid_key(key: &str) -> bool {
        ObjectPath::parse(key).is_ok_and(|p| p.as_ref() == key)
    }

    /// Uploads `body` as `key` with `headers`, in one PUT. Returns once the bucket confirmed it.
    pub async fn put_bytes(
        &self,
        key: &str,
        body: Bytes,
        headers: &ObjectHeaders,
    ) -> Result<(), BucketError> {
        let location = self.location(key)?;
        let opts = PutOptions {
            attributes: attributes(headers),
            ..Default::default()
        };
        self.store
            .put_opts(&location, PutPayload::from(body), opts)
            .await?;
        Ok(())
    }

    /// Uploads the local file `source` as `key` with `headers`: one PUT, or a multipart upload
    /// at or above the threshold. Returns once the bucket confirmed it.
    pub async fn put_file(
        &self,
        key: &str,
        source: &Path,
        size: u64,
        headers: &ObjectHeaders,
    ) -> Result<(), BucketError> {
        if size < self.multipart_threshold {
            let path = source.to_owned();
            let body = tokio::task::spawn_blocking(move || std::fs::read(path))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))??;
            return self.put_bytes(key, Bytes::from(body), headers).await;
        }
        let location = self.location(key)?;
        let opts = PutMultipartOptions {
            attributes: attributes(headers),
            ..Default::default()
        };
        let upload = self.store.put_multipart_opts(&location, opts).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        let result: Result<(), BucketError> = async {
            let mut file = tokio::fs::File::open(source).await?;
            let mut buf = vec![0u8; self.part_size];
            loop {
                // At most two parts in flight per file: memory stays at a few parts.
                writer.wait_for_capacity(2).await?;
                let n = file.read(&mut buf).await?;
                let Some(chunk) = buf.get(..n) else { break };
                if n == 0 {
                    break;
                }
                writer.write(chunk);
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                writer.finish().await?;
                Ok(())
            }
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// Deletes `key` (deleting a missing key succeeds: S3 answers 204).
    pub async fn delete(&self, key: &str) -> Result<(), BucketError> {
        let location = self.location(key)?;
        match self.store.delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every object under the prefix (keys relative to it). For verify and sync only: the
    /// mirror itself never lists.
    pub async fn list(&self) -> Result<Vec<Listed>, BucketError> {
        let prefix = self.prefix.trim_end_matches('/');
        let prefix_path = (!prefix.is_empty())
            .then(|| ObjectPath::parse(prefix))
            .transpose()
            .map_err(|_| BucketError::BadKey(prefix.to_owned()))?;
        let mut stream = self.store.list(prefix_path.as_ref());
        let mut out = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta?;
            let full: &str = meta.location.as_ref();
            if let Some(key) = full.strip_prefix(self.prefix.as_str()) {
                out.push(Listed {
                    key: key.to_owned(),
                    size: meta.size,
                    e_tag: meta.e_tag.clone(),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Streams `key` from byte `from` on, appending to `dest` (a pull source resuming an
    /// interrupted download); the bytes written. With `if_match` (the ETag the object was
    /// listed with) the bucket refuses to send another version's bytes (412), so a resumed
    /// file never mixes two versions.
    pub async fn download_to(
        &self,
        key: &str,
        dest: &Path,
        from: u64,
        if_match: Option<&str>,
    ) -> Result<u64, BucketError> {
        use tokio::io::AsyncWriteExt;
        let location = self.location(key)?;
        let opts = object_store::GetOptions {
            range: (from > 0).then_some(object_store::GetRange::Offset(from)),
            if_match: if_match.map(str::to_owned),
            ..Default::default()
        };
        let got = self.store.get_opts(&location, opts).await?;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dest)
            .await?;
        let mut written = 0u64;
        let mut body = got.into_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            file.write_all(&chunk).await?;
            written += chunk.len() as u64;
        }
        file.flush().await?;
        file.sync_all().await?;
        Ok(written)
    }

    /// A small object whole (a `.sha256` sidecar); None when it does not exist or is
    /// larger than `limit`.
    pub async fn read_small(
        &self,
        key: &str,
        limit: usize,
    ) -> Result<Option<Vec<u8>>, BucketError> {
        let location = self.location(key)?;
        let got = match self.store.get(&location).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if got.meta.size > limit as u64 {
            return Ok(None);
        }
        Ok(Some(got.bytes().await?.to_vec()))
    }

    /// Reads `key` back, hashing it as it streams; None when it does not exist.
    pub async fn read(&self, key: &str) -> Result<Option<ObjectContent>, BucketError> {
        let location = self.location(key)?;
        let got = match self.store.get(&location).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let attr = |a: &Attribute| {
            got.attributes
                .get(a)
                .map(|v| v.as_ref().to_owned())
                .unwrap_or_default()
        };
        let headers = ObjectHeaders {
            content_type: attr(&Attribute::ContentType),
            cache_control: attr(&Attribute::CacheControl),
        };
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut body = got.into_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok(Some(ObjectContent {
            sha256: crate::ingest::checksum::to_hex(&hasher.finalize()),
            size,
            headers,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_file_formats_and_redaction() {
        let c = Credentials::parse(
            "# r2\n[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = \"s3cr3t\"\n",
        )
        .unwrap();
        assert_eq!(c.access_key_id.expose(), "AKIAEXAMPLE");
        assert_eq!(c.secret_access_key.expose(), "s3cr3t");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("AKIA"),
            "{shown}"
        );
        let c = Credentials::parse("ACCESS_KEY_ID=k\nSECRET_ACCESS_KEY=s\n").unwrap();
        assert_eq!(c.secret_access_key.expose(), "s");
        let e = Credentials::parse("access_key_id = k\npassword = hunter2\n").unwrap_err();
        assert!(e.contains("line 2") && !e.contains("hunter2"), "{e}");
        assert!(Credentials::parse("access_key_id = k\n").is_err());
    }

    #[test]
    fn keys_object_store_keeps_verbatim() {
        assert!(Bucket::valid_key("json/main.json"));
        assert!(Bucket::valid_key("img/logo del instituto.png"));
        assert!(Bucket::valid_key("sección/año.json"));
        assert!(!Bucket::valid_key("a//b"));
        assert!(!Bucket::valid_key("a/../b"));
    }
}
