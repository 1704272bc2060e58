//! A real S3-compatible server for tests: Garage (`garage server --single-node
//! --default-bucket`) on ephemeral loopback ports, in a temp dir, with a ready bucket and a
//! random key pair. Stop it (SIGKILL, like an outage) and start it again on the same data and
//! ports; read its server-side request counters from the admin API's `/metrics`; talk to the
//! bucket with an independent client (object_store, built from explicit settings only).
//!
//! The binary: `$GARAGE_BIN`, else `garage` on `PATH`, else `~/.cargo/bin/garage`
//! (`.ci/run` installs it with `cargo install --locked garage`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, Attributes, ClientOptions, ObjectStore, ObjectStoreExt, PutOptions, PutPayload,
};
use sha2::{Digest, Sha256};

pub struct Garage {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub s3_port: u16,
    pub admin_port: u16,
    rpc_port: u16,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
    rpc_secret: String,
}

/// An object read back: bytes and the headers it was stored with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
}

fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("GARAGE_BIN") {
        return PathBuf::from(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let c = d.join("garage");
            if c.is_file() {
                return c;
            }
        }
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let c = home.join(".cargo/bin/garage");
    assert!(
        c.is_file(),
        "garage not found (GARAGE_BIN, PATH, ~/.cargo/bin): install it with `cargo install --locked garage`"
    );
    c
}

/// `n` hex chars, different for every call in every process.
fn random_hex(n: usize) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut out = String::new();
    while out.len() < n {
        let mut h = Sha256::new();
        h.update(std::process::id().to_le_bytes());
        h.update(
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .to_le_bytes(),
        );
        h.update(format!("{:?}", std::time::SystemTime::now()).as_bytes());
        out.push_str(&format!("{:x}", h.finalize()));
    }
    out.truncate(n);
    out
}

/// A plain HTTP/1.0 GET on loopback: (status, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split(' ').nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

impl Garage {
    /// A server with the bucket `difusor-test`, ready.
    pub async fn start() -> Garage {
        Garage::start_with_bucket("difusor-test").await
    }

    pub async fn start_with_bucket(bucket: &str) -> Garage {
        let dir = tempfile::tempdir().unwrap();
        let mut g = Garage {
            dir,
            child: None,
            s3_port: super::free_port(),
            admin_port: super::free_port(),
            rpc_port: super::free_port(),
            access_key: format!("GK{}", random_hex(24)),
            secret_key: random_hex(64),
            bucket: bucket.to_owned(),
            rpc_secret: random_hex(64),
        };
        g.write_config();
        g.spawn().await;
        g
    }

    fn write_config(&self) {
        let d = self.dir.path();
        let text = format!(
            "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"lmdb\"\n\
             replication_factor = 1\ncompression_level = \"none\"\n\
             rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_secret = \"{secret}\"\n\n[s3_api]\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
             s3_region = \"garage\"\n\n[admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
            meta = d.join("meta").display(),
            data = d.join("data").display(),
            rpc = self.rpc_port,
            secret = self.rpc_secret,
            s3 = self.s3_port,
            admin = self.admin_port,
        );
        std::fs::write(d.join("garage.toml"), text).unwrap();
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("garage.log"))
            .unwrap();
        let child = Command::new(binary())
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &self.access_key)
            .env("GARAGE_DEFAULT_SECRET_KEY", &self.secret_key)
            .env("GARAGE_DEFAULT_BUCKET", &self.bucket)
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("garage exited at start ({status}):\n{}", self.log());
            }
            let healthy = http_get(self.admin_port, "/health").is_some_and(|(s, _)| s == 200);
            if healthy
                && self
                    .client()
                    .list(None)
                    .next()
                    .await
                    .is_none_or(|r| r.is_ok())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "garage not ready in 30 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    pub fn region(&self) -> &'static str {
        "garage"
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Kills the server (SIGKILL: an outage, not a clean shutdown) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same data, ports and keys.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }

    /// A client built from explicit settings only (no environment).
    pub fn client(&self) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(self.endpoint())
                .with_allow_http(true)
                .with_region("garage")
                .with_bucket_name(&self.bucket)
                .with_access_key_id(&self.access_key)
                .with_secret_access_key(&self.secret_key)
                .with_client_options(
                    ClientOptions::new()
                        .with_allow_http(true)
                        .with_timeout(Duration::from_secs(10)),
                )
                .with_retry(object_store::RetryConfig {
                    max_retries: 0,
                    ..Default::default()
                })
                .build()
                .unwrap(),
        )
    }

    /// The Prometheus text of the admin API.
    pub fn metrics(&self) -> String {
        http_get(self.admin_port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// How many S3 requests of `endpoint` (`PutObject`, `DeleteObject`, `GetObject`,
    /// `ListObjectsV2`, `UploadPart`…) the server has received since it started: its own count.
    pub fn requests(&self, endpoint: &str) -> u64 {
        let needle = format!("api_s3_request_counter{{api_endpoint=\"{endpoint}\"}} ");
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(&needle))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .unwrap_or(0)
    }

    /// Writes `access_key_id = …` / `secret_access_key = …` to `path` (mode 0600).
    pub fn write_credentials_file(&self, path: &Path) {
        std::fs::write(
            path,
            format!(
                "access_key_id = {}\nsecret_access_key = {}\n",
                self.access_key, self.secret_key
            ),
        )
        .unwrap();
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    }

    /// Keys and sizes of every object (under `prefix`, "" for all).
    pub async fn list(&self, prefix: &str) -> BTreeMap<String, u64> {
        let p = prefix.trim_end_matches('/');
        let p = (!p.is_empty()).then(|| ObjectPath::parse(p).unwrap());
        self.client()
            .list(p.as_ref())
            .map(|m| {
                let m = m.unwrap();
                (m.location.as_ref().to_owned(), m.size)
            })
            .collect()
            .await
    }

    /// One object, or None.
    pub async fn get(&self, key: &str) -> Option<Object> {
        let c = self.client();
        let r = match c.get(&ObjectPath::parse(key).unwrap()).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return None,
            Err(e) => panic!("GET {key}: {e}"),
        };
        let attr = |a| r.attributes.get(&a).map(|v| v.as_ref().to_owned());
        let content_type = attr(Attribute::ContentType);
        let cache_control = attr(Attribute::CacheControl);
        let bytes = r.bytes().await.unwrap().to_vec();
        Some(Object {
            bytes,
            content_type,
            cache_control,
        })
    }

    /// Every object with its bytes.
    pub async fn objects(&self, prefix: &str) -> BTreeMap<String, Object> {
        let mut out = BTreeMap::new();
        for k in self.list(prefix).await.into_keys() {
            if let Some(o) = self.get(&k).await {
                out.insert(k, o);
            }
        }
        out
    }

    pub async fn put(&self, key: &str, bytes: &[u8], content_type: Option<&str>) {
        let mut attributes = Attributes::new();
        if let Some(ct) = content_type {
            attributes.insert(Attribute::ContentType, ct.to_owned().into());
        }
        self.client()
            .put_opts(
                &ObjectPath::parse(key).unwrap(),
                PutPayload::from(bytes.to_vec()),
                PutOptions {
                    attributes,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }

    pub async fn delete(&self, key: &str) {
        self.client()
            .delete(&ObjectPath::parse(key).unwrap())
            .await
            .unwrap();
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}
