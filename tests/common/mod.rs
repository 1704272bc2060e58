//! Shared test harness: a real difusor on an ephemeral loopback port in a temp dir, driven by
//! the real OpenSSH clients.
#![allow(dead_code)]
pub mod garage;
pub mod packages;
pub mod pkgserver;
pub mod receiver;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use difusor::app::Running;
use difusor::config::Config;
use difusor::events::{UploadCompleted, UploadReceiver};

/// Host keys are generated once per test binary (RSA-3072 generation is slow) and copied.
fn shared_host_keys() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("difusor-test-hostkeys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        difusor::keys::load_or_generate_host_keys(&dir).unwrap();
        dir
    })
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub running: Running,
    pub uploads: UploadReceiver,
    pub config: Config,
}

impl TestServer {
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
    pub fn incoming(&self) -> PathBuf {
        self.dir.path().join("data/incoming")
    }

    /// The next upload-completed event, or None if none comes within `wait`.
    pub async fn next_upload(&mut self, wait: Duration) -> Option<UploadCompleted> {
        tokio::time::timeout(wait, self.uploads.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.running.shutdown();
    }
}

/// A user for the config: (name, role, authorized_keys file relative to the test dir).
pub struct User<'a> {
    pub name: &'a str,
    pub role: &'a str,
    pub keys: &'a str,
}

/// Writes `difusor.toml` in a fresh temp dir (with `extra` appended under the top level) and
/// starts the server from it. `setup` runs first, to place key files.
pub async fn start_server_with(
    users: &[User<'_>],
    extra: &str,
    setup: impl FnOnce(&Path),
) -> TestServer {
    start(users, extra, setup, false).await
}

/// Like `start_server_with`, with the ingest pipeline consuming the uploads (so `uploads`
/// stays empty; watch `running.pipeline` and the data directory instead).
pub async fn start_ingest_server(
    users: &[User<'_>],
    extra: &str,
    setup: impl FnOnce(&Path),
) -> TestServer {
    start(users, extra, setup, true).await
}

/// An ingest server with one publisher, `institute`, whose ed25519 key is returned; `setup`
/// runs on the server's directory before it starts (after the key is made).
pub async fn start_publisher_server(
    extra: &str,
    setup: impl FnOnce(&Path),
) -> (TestServer, ClientKey) {
    let mut key = None;
    let srv = start_ingest_server(
        &[User {
            name: "institute",
            role: "publisher",
            keys: "keys/institute.pub",
        }],
        extra,
        |dir| {
            key = Some(ssh_keygen(
                &dir.join("keys"),
                "institute",
                &["-t", "ed25519"],
            ));
            setup(dir);
        },
    )
    .await;
    (srv, key.expect("the setup ran"))
}

/// Uploads `bytes` as `name` with stock sftp as `institute` (see [`start_publisher_server`]).
pub async fn put_as_institute(
    srv: &TestServer,
    key: &ClientKey,
    name: &str,
    bytes: &[u8],
) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("pkg");
    std::fs::write(&local, bytes).unwrap();
    sftp(
        srv.addr,
        "institute",
        &key.private,
        &format!("put {} \"{name}\"\n", local.display()),
        &[],
    )
    .await
}

async fn start(
    users: &[User<'_>],
    extra: &str,
    setup: impl FnOnce(&Path),
    ingest: bool,
) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    for f in [
        "ssh_host_ed25519_key",
        "ssh_host_rsa_key",
        "ssh_host_ed25519_key.pub",
        "ssh_host_rsa_key.pub",
    ] {
        let dst = keys.join(f);
        std::fs::copy(shared_host_keys().join(f), &dst).unwrap();
    }
    setup(dir.path());
    let mut toml = String::new();
    toml.push_str(extra);
    toml.push('\n');
    if !extra.contains("[ssh]") {
        toml.push_str("[ssh]\nlisten = \"127.0.0.1:0\"\n");
    }
    if !extra.contains("[web]") {
        toml.push_str("[web]\nlisten = \"127.0.0.1:0\"\n");
    }
    if !extra.contains("[monitor]") {
        // The host's disk is not the test's subject: no disk-low from a full build machine.
        toml.push_str("[monitor]\nkeep_history_bytes = 0\nmin_free_bytes = 0\n");
    }
    if !extra.contains("[admin]") {
        toml.push_str("[admin]\nlisten = \"127.0.0.1:0\"\n");
    }
    for u in users {
        toml.push_str(&format!(
            "[[users]]\nname = \"{}\"\nrole = \"{}\"\nauthorized_keys = \"{}\"\n",
            u.name, u.role, u.keys
        ));
    }
    let path = dir.path().join("difusor.toml");
    std::fs::write(&path, &toml).unwrap();
    let config = Config::load(&path).unwrap_or_else(|e| panic!("config {toml}: {e}"));
    let mut running = difusor::app::start(&config).await.unwrap();
    if ingest {
        running.start_ingest();
        let (_tx, uploads) = tokio::sync::mpsc::unbounded_channel();
        return TestServer {
            addr: running.ssh_addr,
            running,
            uploads,
            config,
            dir,
        };
    }
    // Pass events on with their verdict dropped, so uploads are answered "OK" at once (no
    // pipeline here) while the test can still inspect every event.
    let mut raw = running.uploads.take().unwrap();
    let (tx, uploads) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(mut ev) = raw.recv().await {
            ev.verdict = None;
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    TestServer {
        addr: running.ssh_addr,
        running,
        uploads,
        config,
        dir,
    }
}

/// A client key made by `ssh-keygen` (so formats are exactly what institutes produce).
pub struct ClientKey {
    pub private: PathBuf,
    pub public: PathBuf,
}

impl ClientKey {
    pub fn public_line(&self) -> String {
        std::fs::read_to_string(&self.public).unwrap()
    }
}

/// `ssh-keygen -q -N '' -f dir/name <args>`, e.g. `&["-t", "rsa", "-b", "3072", "-m", "PEM"]`.
pub fn ssh_keygen(dir: &Path, name: &str, args: &[&str]) -> ClientKey {
    let private = dir.join(name);
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-C", name, "-f"])
        .arg(&private)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ClientKey {
        public: private.with_extension("pub"),
        private,
    }
}

/// Options every client run gets: no host-key prompts, no agent, only the given key.
fn client_opts(key: &Path) -> Vec<String> {
    vec![
        "-o".into(),
        "StrictHostKeyChecking=no".into(),
        "-o".into(),
        "UserKnownHostsFile=/dev/null".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "IdentityAgent=none".into(),
        "-o".into(),
        "LogLevel=ERROR".into(),
        "-o".into(),
        "ConnectTimeout=10".into(),
        "-i".into(),
        key.display().to_string(),
    ]
}

/// The arguments of a non-interactive stock `sftp -b batch_file` run as `user` (for tests
/// that spawn the client themselves, e.g. to kill it mid-upload).
pub fn sftp_args(
    port: u16,
    user: &str,
    key: &Path,
    batch_file: &Path,
    extra: &[&str],
) -> Vec<String> {
    let mut args = client_opts(key);
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend([
        "-P".to_owned(),
        port.to_string(),
        "-b".to_owned(),
        batch_file.display().to_string(),
    ]);
    args.push(format!("{user}@127.0.0.1"));
    args
}

/// Runs `curl` with `args` (silent but for errors, any certificate, 20 s at most).
pub async fn curl(args: &[&str]) -> Output {
    tokio::process::Command::new("curl")
        .args(["-sSk", "--max-time", "20"])
        .args(args)
        .output()
        .await
        .expect("curl runs")
}

/// Runs stock `sftp -b` with `batch` (one command per line) as `user`.
pub async fn sftp(addr: SocketAddr, user: &str, key: &Path, batch: &str, extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("batch");
    std::fs::write(&b, batch).unwrap();
    let mut cmd = tokio::process::Command::new("sftp");
    cmd.args(sftp_args(addr.port(), user, key, &b, extra))
        .stdin(Stdio::null());
    run(cmd).await
}

/// Runs `scp` (modern, SFTP underneath; add "-O" to `extra` for the legacy protocol).
pub async fn scp(addr: SocketAddr, key: &Path, extra: &[&str], from: &str, to: &str) -> Output {
    let mut cmd = tokio::process::Command::new("scp");
    cmd.args(client_opts(key))
        .args(extra)
        .arg("-P")
        .arg(addr.port().to_string())
        .arg(from)
        .arg(to)
        .stdin(Stdio::null());
    run(cmd).await
}

/// Runs `ssh user@host command`.
pub async fn ssh(
    addr: SocketAddr,
    user: &str,
    key: &Path,
    extra: &[&str],
    command: &str,
) -> Output {
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.args(client_opts(key))
        .args(extra)
        .arg("-p")
        .arg(addr.port().to_string())
        .arg(format!("{user}@127.0.0.1"))
        .arg(command)
        .stdin(Stdio::null());
    run(cmd).await
}

async fn run(mut cmd: tokio::process::Command) -> Output {
    cmd.kill_on_drop(true);
    match tokio::time::timeout(Duration::from_secs(120), cmd.output()).await {
        Ok(r) => r.unwrap(),
        Err(_) => panic!("client did not finish within 120 s: {cmd:?}"),
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A loopback port free right now (for servers started as separate processes).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A file of `len` pseudo-random bytes (deterministic per seed).
pub fn random_file(path: &Path, len: usize, seed: u64) {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.extend_from_slice(&x.to_le_bytes());
    }
    buf.truncate(len);
    std::fs::write(path, buf).unwrap();
}

/// Every file under `dir`, relative, sorted (to prove nothing appeared or vanished).
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
