//! The object-storage mirror against a real S3 server (Garage on loopback, no mocks), with the
//! real `difusor` binary receiving packages over real `sftp`:
//! - a night of 11 cuts (full site, increments, a burst of two, a `replace` cut, increments)
//!   ends with the bucket equal to the live cut byte for byte, with the HTTPS server's headers;
//!   a reader polling the bucket throughout never sees a `json/main.json` whose cut's files are
//!   not all there; each increment costs exactly as many PutObject requests (Garage's own
//!   counter) as it changed files; files a `replace` cut removed go after the grace period;
//! - `kill -9` mid-mirror, then a restart, converges without uploading again what was there;
//! - the S3 server stopped mid-mirror: one `mirror-failed` incident, local serving unaffected,
//!   catch-up and `mirror-recovered` when it is back;
//! - `difusor mirror verify` finds missing, extra and different objects; `difusor mirror sync`
//!   repairs them, through the running server or on its own;
//! - with a mirror, the Cloudflare purge goes out only once the bucket has the cut (not while
//!   the bucket is down, and after the catch-up)
//! - no credential in any log line (`DIFUSOR_LOG=debug`), while the environment carries
//!   decoy `AWS_*` settings the client must ignore.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::garage::Garage;
use common::packages::{self, CutTime};
use common::*;

const SEED: u64 = 7;
const MAIN: &str = "json/main.json";

/// A `difusor serve` process in a temp dir, mirroring to one Garage bucket.
struct Node {
    dir: tempfile::TempDir,
    ssh_port: u16,
    https_port: u16,
    key: ClientKey,
    child: Option<Child>,
    mirror: String,
    /// The credentials the server reads from its environment.
    env: Vec<(String, String)>,
}

impl Node {
    /// `extra` goes into the `[[mirror.s3]]` table (e.g. `concurrency = 2`).
    fn new(g: &Garage, extra: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("keys")).unwrap();
        let key = ssh_keygen(&dir.path().join("keys"), "institute", &["-t", "ed25519"]);
        let mirror = format!(
            "[[mirror.s3]]\nname = \"garage\"\nendpoint = \"{}\"\nallow_http = true\nregion = \"garage\"\n\
             bucket = \"{}\"\naccess_key_env = \"DIFUSOR_TEST_S3_KEY\"\nsecret_key_env = \"DIFUSOR_TEST_S3_SECRET\"\n\
             delete_grace_secs = 3\nmax_backoff_secs = 1\n{extra}\n",
            g.endpoint(),
            g.bucket
        );
        let mut n = Node {
            dir,
            ssh_port: free_port(),
            https_port: free_port(),
            key,
            child: None,
            mirror,
            env: vec![
                ("DIFUSOR_TEST_S3_KEY".into(), g.access_key.clone()),
                ("DIFUSOR_TEST_S3_SECRET".into(), g.secret_key.clone()),
            ],
        };
        n.write_config("increment");
        n
    }

    fn write_config(&mut self, mode: &str) {
        std::fs::write(
            self.dir.path().join("difusor.toml"),
            format!(
                "[ingest]\nmode = \"{mode}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[web]\nlisten = \"127.0.0.1:{}\"\n\
                 [ssh]\nlisten = \"127.0.0.1:{}\"\n[[users]]\nname = \"institute\"\nrole = \"publisher\"\n\
                 authorized_keys = \"keys/institute.pub\"\n{}",
                self.https_port, self.ssh_port, self.mirror
            ),
        )
        .unwrap();
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_difusor"));
        cmd.current_dir(self.dir.path())
            .env("DIFUSOR_LOG", "debug")
            // Decoys: the mirror must use only what its config names.
            .env("AWS_ACCESS_KEY_ID", "AKIADECOYDECOYDECOY")
            .env("AWS_SECRET_ACCESS_KEY", "decoy-secret")
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .env("AWS_ENDPOINT", "http://127.0.0.1:9")
            .env("AWS_REGION", "mars-north-1")
            .env("AWS_CA_BUNDLE", "/nonexistent/ca.pem")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }

    /// Starts `difusor serve` in `mode` and waits until SSH accepts connections.
    fn start(&mut self, mode: &str) {
        assert!(self.child.is_none());
        self.write_config(mode);
        let mut cmd = self.command();
        cmd.args(["serve", "--config", "difusor.toml"])
            .stdout(Stdio::null())
            .stderr(self.log_file());
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.ssh_port)).is_err() {
            if let Ok(Some(s)) = child.try_wait() {
                panic!("server exited at start ({s}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    fn log_file(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap()
    }

    /// SIGTERM and wait (a clean stop, e.g. to change the ingest mode).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(&c),
                rustix::process::Signal::TERM,
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGKILL: no chance to flush or finish anything.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    async fn push(&self, name: &str, bytes: &[u8]) {
        let local = self.dir.path().join(format!("upload-{name}"));
        std::fs::write(&local, bytes).unwrap();
        let addr = format!("127.0.0.1:{}", self.ssh_port).parse().unwrap();
        let out = sftp(
            addr,
            "institute",
            &self.key.private,
            &format!("put {} {name}\n", local.display()),
            &[],
        )
        .await;
        assert!(out.status.success(), "push {name}: {}", text(&out));
        std::fs::remove_file(local).unwrap();
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn live(&self) -> Option<String> {
        let t = std::fs::read_link(self.data().join("live")).ok()?;
        Some(t.file_name()?.to_string_lossy().into_owned())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn incidents(&self, kind: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.data().join("state/incidents.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["kind"] == kind)
            .collect()
    }

    /// `difusor mirror <args> --config difusor.toml`.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = self.command();
        cmd.arg("mirror")
            .args(args)
            .args(["--config", "difusor.toml"])
            .stdin(Stdio::null());
        cmd.output().unwrap()
    }

    /// No credential of `g` in anything difusor logged.
    fn assert_no_credentials(&self, g: &Garage, also: &str) {
        let log = self.log();
        assert!(log.len() > 1000, "the debug log was captured");
        for (what, secret) in [("secret key", &g.secret_key), ("access key", &g.access_key)] {
            assert!(
                !log.contains(secret.as_str()),
                "the {what} is in the server log"
            );
            assert!(
                !also.contains(secret.as_str()),
                "the {what} is in CLI output"
            );
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Files of a cut directory (relative path → bytes).
fn cut_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Files of `new` that are new or whose bytes differ from `old`.
fn changed(old: &BTreeMap<String, Vec<u8>>, new: &BTreeMap<String, Vec<u8>>) -> usize {
    new.iter().filter(|(k, v)| old.get(*k) != Some(*v)).count()
}

/// The cut (`archivoCorte`) the bucket's main.json names, if there is one.
async fn bucket_cut(g: &Garage) -> Option<String> {
    let o = g.get(MAIN).await?;
    let v: serde_json::Value = serde_json::from_slice(&o.bytes).ok()?;
    v["archivoCorte"].as_str().map(str::to_owned)
}

async fn wait_for_bucket_cut(g: &Garage, node: &Node, name: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while bucket_cut(g).await.as_deref() != Some(name) {
        assert!(
            Instant::now() < deadline,
            "bucket never showed {name}; server log tail:\n{}",
            tail(&node.log())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tail(s: &str) -> &str {
    let start = s.len().saturating_sub(6000);
    let start = (start..s.len())
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0);
    &s[start..]
}

/// The bucket holds exactly the live cut, byte for byte, with the HTTPS server's headers.
async fn assert_bucket_equals_live(g: &Garage, node: &Node) {
    let live = node.live().expect("a live cut");
    let files = cut_files(&node.data().join("cuts").join(&live));
    let objects = g.objects("").await;
    let (fk, ok): (BTreeSet<_>, BTreeSet<_>) = (files.keys().collect(), objects.keys().collect());
    let missing: Vec<_> = fk.difference(&ok).collect();
    let extra: Vec<_> = ok.difference(&fk).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "bucket vs live {live}: missing {missing:?}, extra {extra:?}"
    );
    for (k, bytes) in &files {
        assert!(objects[k].bytes == *bytes, "{k} differs from the live cut");
    }
    let main = &objects[MAIN];
    assert_eq!(
        main.cache_control.as_deref(),
        Some("no-cache, no-store, must-revalidate")
    );
    assert_eq!(
        main.content_type.as_deref(),
        Some("application/json; charset=utf-8")
    );
    let index = &objects["index.html"];
    assert_eq!(index.cache_control.as_deref(), Some("public, max-age=60"));
    assert_eq!(
        index.content_type.as_deref(),
        Some("text/html; charset=utf-8")
    );
}

/// A reader polling the bucket: every `main.json` it sees, with the keys listed right after.
fn spawn_reader(
    g: &Garage,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(String, BTreeSet<String>)>> {
    let client = Garage::client(g);
    let bucket_cut_of = |bytes: &[u8]| -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        v["archivoCorte"].as_str().map(str::to_owned)
    };
    tokio::spawn(async move {
        use futures::StreamExt;
        use object_store::ObjectStoreExt;
        let mut seen = Vec::new();
        let main = object_store::path::Path::parse(MAIN).unwrap();
        while !stop.load(Ordering::Relaxed) {
            if let Ok(r) = client.get(&main).await
                && let Ok(bytes) = r.bytes().await
                && let Some(cut) = bucket_cut_of(&bytes)
            {
                let keys: BTreeSet<String> = client
                    .list(None)
                    .filter_map(|m| async move { m.ok().map(|m| m.location.as_ref().to_owned()) })
                    .collect()
                    .await;
                seen.push((cut, keys));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen
    })
}

/// An increment that also re-sends a few files unchanged (new inodes, same bytes: no upload).
fn increment_with_resent(cut: &CutTime) -> Vec<(String, Vec<u8>)> {
    let mut files = packages::increment(cut, SEED);
    let full = packages::full_site(cut, SEED);
    files.extend(
        full.into_iter()
            .filter(|(p, _)| p.ends_with(".html"))
            .take(5),
    );
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_night_of_cuts_ends_with_the_bucket_equal_to_the_live_cut() {
    let g = Garage::start().await;
    let mut node = Node::new(&g, "");
    node.start("increment");
    let stop = Arc::new(AtomicBool::new(false));
    let reader = spawn_reader(&g, Arc::clone(&stop));

    let first = CutTime::new(2024, 6, 2, 20, 15);
    let cut = |i: i64| first.plus_minutes(15 * i);
    // archivoCorte → files of that cut (read from the cut directory once it is live).
    let mut expected: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    let mut previous: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut put_checks = 0;
    let wait = Duration::from_secs(30);

    // One cut pushed and mirrored; checks the PUT count against what really changed.
    macro_rules! cut_and_count {
        ($c:expr, $files:expr) => {{
            let c: CutTime = $c;
            let name = c.name(".zip");
            let before = g.requests("PutObject");
            node.push(&name, &packages::zip_bytes(&$files)).await;
            let live = node.live().unwrap();
            let files = cut_files(&node.data().join("cuts").join(&live));
            wait_for_bucket_cut(&g, &node, &name, wait).await;
            let puts = g.requests("PutObject") - before;
            assert_eq!(
                puts as usize,
                changed(&previous, &files),
                "cut {name}: PutObject requests vs files that changed"
            );
            put_checks += 1;
            eprintln!("cut {name}: {puts} PutObject for {} files", files.len());
            expected.insert(name, files.clone());
            previous = files;
        }};
    }

    // 1. The full site, then increments (one re-sending unchanged files).
    cut_and_count!(cut(0), packages::full_site(&cut(0), SEED));
    for i in 1..=5 {
        let files = if i == 3 {
            increment_with_resent(&cut(i))
        } else {
            packages::increment(&cut(i), SEED)
        };
        cut_and_count!(cut(i), files);
    }
    let resent_check = changed(
        &expected[&cut(2).name(".zip")],
        &expected[&cut(3).name(".zip")],
    );
    assert_eq!(
        resent_check,
        packages::increment(&cut(3), SEED).len(),
        "the 5 re-sent pages did not count as changed"
    );

    // 2. A burst: two cuts back to back; the bucket may skip the first, never mix them.
    for i in 6..=7 {
        let name = cut(i).name(".zip");
        node.push(
            &name,
            &packages::zip_bytes(&packages::increment(&cut(i), SEED)),
        )
        .await;
        let live = node.live().unwrap();
        let files = cut_files(&node.data().join("cuts").join(&live));
        expected.insert(name, files.clone());
        previous = files;
    }
    wait_for_bucket_cut(&g, &node, &cut(7).name(".zip"), wait).await;

    // 3. A replace cut: the ingest mode is global, so the server is restarted on the same data
    //    directory with mode = "replace" (and back to increment after). The new site drops
    //    two pages and every earlier cut's database zip.
    node.stop();
    node.start("replace");
    let mut replace = packages::full_site(&cut(8), SEED);
    replace.retain(|(p, _)| p != "glosario.html" && p != "avisos/terminos.html");
    let removed: Vec<String> = previous
        .keys()
        .filter(|k| !replace.iter().any(|(p, _)| p == *k))
        .cloned()
        .collect();
    assert!(
        removed.len() >= 9,
        "the replace cut removes files: {removed:?}"
    );
    cut_and_count!(cut(8), replace);
    // Removed files stay for the grace period (3 s), then go.
    let listed = g.list("").await;
    assert!(
        removed.iter().all(|k| listed.contains_key(k)),
        "removed files deleted before the grace period"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let listed = g.list("").await;
        if removed.iter().all(|k| !listed.contains_key(k)) {
            break;
        }
        assert!(Instant::now() < deadline, "removed files never deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.stop();
    node.start("increment");
    for i in 9..=10 {
        cut_and_count!(cut(i), packages::increment(&cut(i), SEED));
    }

    stop.store(true, Ordering::Relaxed);
    let seen = reader.await.unwrap();
    assert_bucket_equals_live(&g, &node).await;
    assert_eq!(put_checks, 9);

    // The reader never saw a main.json whose cut's files were not all in the bucket.
    let cuts_seen: BTreeSet<&String> = seen.iter().map(|(c, _)| c).collect();
    eprintln!("reader: {} samples of {} cuts", seen.len(), cuts_seen.len());
    assert!(
        seen.len() >= 20 && cuts_seen.len() >= 8,
        "reader saw {} samples of {} cuts",
        seen.len(),
        cuts_seen.len()
    );
    for (cut, keys) in &seen {
        let files = expected
            .get(cut)
            .unwrap_or_else(|| panic!("main.json named {cut}, not a cut that was live"));
        let absent: Vec<&String> = files.keys().filter(|k| !keys.contains(*k)).collect();
        assert!(
            absent.is_empty(),
            "main.json said {cut} while {absent:?} were not in the bucket"
        );
    }

    let out = node.cli(&["verify"]);
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "verify: {shown}");
    assert!(node.incidents("mirror-failed").is_empty());
    node.assert_no_credentials(&g, &shown);
}

/// A first cut of many files, for tests that need a mirror to take a while.
fn big_cut(c: &CutTime, extra: usize) -> Vec<(String, Vec<u8>)> {
    let mut files = packages::full_site(c, SEED);
    for i in 0..extra {
        files.push((
            format!("json/seccion/{i:05}.json"),
            format!(
                "{{\"seccion\":{i},\"corte\":\"{}\",\"pad\":\"{}\"}}\n",
                c.hora(),
                "x".repeat(i % 700)
            )
            .into_bytes(),
        ));
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_mirror_then_restart_converges_without_uploading_twice() {
    let g = Garage::start().await;
    let mut node = Node::new(&g, "concurrency = 2");
    node.start("increment");
    let c = CutTime::new(2024, 6, 2, 20, 15);
    let files = big_cut(&c, 1500);
    let total = files.len() as u64;
    node.push(&c.name(".zip"), &packages::zip_bytes(&files))
        .await;
    // Kill it once a part of the cut is up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while g.requests("PutObject") < total / 4 {
        assert!(
            Instant::now() < deadline,
            "mirror did not start:\n{}",
            tail(&node.log())
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node.kill9();
    let before = g.requests("PutObject");
    assert!(
        before < total,
        "killed after the whole cut was up ({before}/{total}): too late"
    );
    assert!(
        g.get(MAIN).await.is_none(),
        "main.json went up before the rest of its cut"
    );

    node.start("increment");
    wait_for_bucket_cut(&g, &node, &c.name(".zip"), Duration::from_secs(60)).await;
    let after = g.requests("PutObject") - before;
    eprintln!("kill -9 after {before} of {total} PUTs; the restart made {after}");
    // At most the uploads in flight at the kill (concurrency 2) are done again.
    assert!(
        after <= total - before + 2,
        "restart uploaded {after} objects; {} were missing",
        total - before
    );
    assert_bucket_equals_live(&g, &node).await;
    // A second restart finds nothing to do.
    node.stop();
    let before = g.requests("PutObject");
    node.start("increment");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        g.requests("PutObject"),
        before,
        "a converged bucket was uploaded again"
    );
    node.stop();
    node.assert_no_credentials(&g, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_down_mid_mirror_gives_one_incident_then_catches_up() {
    let mut g = Garage::start().await;
    let mut node = Node::new(
        &g,
        "concurrency = 2\nmax_retries = 1\nrequest_timeout_secs = 5",
    );
    node.start("increment");
    let c0 = CutTime::new(2024, 6, 2, 20, 15);
    node.push(
        &c0.name(".zip"),
        &packages::zip_bytes(&packages::full_site(&c0, SEED)),
    )
    .await;
    wait_for_bucket_cut(&g, &node, &c0.name(".zip"), Duration::from_secs(30)).await;

    // A large increment; the S3 server dies while it is going up.
    let c1 = c0.plus_minutes(15);
    let mut inc = packages::increment(&c1, SEED);
    inc.extend(
        big_cut(&c1, 1200)
            .into_iter()
            .filter(|(p, _)| p.starts_with("json/seccion/")),
    );
    let before = g.requests("PutObject");
    node.push(&c1.name(".zip"), &packages::zip_bytes(&inc))
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while g.requests("PutObject") < before + 100 {
        assert!(Instant::now() < deadline, "increment not mirroring");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    g.stop();

    // Publishing and local serving go on: the next cut is live and served at once.
    let c2 = c1.plus_minutes(15);
    let t = Instant::now();
    node.push(
        &c2.name(".zip"),
        &packages::zip_bytes(&packages::increment(&c2, SEED)),
    )
    .await;
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "the pipeline waited for the mirror"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new("curl")
            .args(["-sk", "--max-time", "5"])
            .arg(format!(
                "https://127.0.0.1:{}/json/main.json",
                node.https_port
            ))
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains(&c2.name(".zip")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "HTTPS does not serve the new cut"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // One incident for the outage, however many retries.
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.incidents("mirror-failed").is_empty() {
        assert!(
            Instant::now() < deadline,
            "no mirror-failed incident:\n{}",
            tail(&node.log())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let failed = node.incidents("mirror-failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["subject"], "garage");
    assert!(
        node.log().matches("mirror attempt failed").count() >= 3,
        "retries continued during the outage"
    );

    g.restart().await;
    wait_for_bucket_cut(&g, &node, &c2.name(".zip"), Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.incidents("mirror-recovered").is_empty() {
        assert!(Instant::now() < deadline, "no mirror-recovered incident");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(node.incidents("mirror-failed").len(), 1);
    assert_bucket_equals_live(&g, &node).await;
    node.stop();
    node.assert_no_credentials(&g, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_differences_and_sync_repairs_them() {
    let g = Garage::start().await;
    // Multipart from 5 MiB, so the 12 MB file below goes up in three parts.
    let mut node = Node::new(
        &g,
        "multipart_threshold_bytes = 5242880\npart_size_bytes = 5242880",
    );
    let c0 = CutTime::new(2024, 6, 2, 20, 15);
    node.start("increment");
    let mut site = packages::full_site(&c0, SEED);
    let mut rng = packages::Rng::new(99);
    site.push(("assets/video-explicativo.mp4".into(), rng.bytes(12 << 20)));
    node.push(&c0.name(".zip"), &packages::zip_bytes(&site))
        .await;
    wait_for_bucket_cut(&g, &node, &c0.name(".zip"), Duration::from_secs(30)).await;
    assert_eq!(g.requests("CreateMultipartUpload"), 1);
    assert_eq!(g.requests("UploadPart"), 3);
    assert_eq!(g.requests("CompleteMultipartUpload"), 1);
    let video = g.get("assets/video-explicativo.mp4").await.unwrap();
    assert_eq!(video.bytes.len(), 12 << 20);
    assert_eq!(video.content_type.as_deref(), Some("video/mp4"));
    let mut outputs = String::new();
    fn cli(node: &Node, outputs: &mut String, args: &[&str]) -> (Option<i32>, String) {
        let out = node.cli(args);
        let s = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push_str(&s);
        (out.status.code(), s)
    }
    macro_rules! run {
        ($args:expr) => {
            cli(&node, &mut outputs, $args)
        };
    }
    let (code, s) = run!(&["verify"]);
    assert_eq!(code, Some(0), "{s}");
    assert!(s.contains("OK, equal to live cut"), "{s}");

    // Tamper: same size, other bytes; a missing file; an extra one; wrong headers.
    async fn tamper(g: &Garage) -> String {
        let index = g.get("index.html").await.unwrap();
        let mut flipped = index.bytes.clone();
        flipped[10] ^= 0x20;
        g.put("index.html", &flipped, Some("text/html; charset=utf-8"))
            .await;
        let css = g.list("css/").await.into_keys().next().unwrap();
        g.delete(&css).await;
        g.put("stray.txt", b"not part of any cut", None).await;
        let page = g.get("presidencia.html").await.unwrap();
        g.put(
            "presidencia.html",
            &page.bytes,
            Some("application/octet-stream"),
        )
        .await;
        css
    }
    let css = tamper(&g).await;
    let (code, s) = run!(&["verify"]);
    assert_eq!(code, Some(1), "{s}");
    assert!(s.contains(&format!("missing   {css}")), "{s}");
    assert!(s.contains("extra     stray.txt"), "{s}");
    assert!(s.contains("different index.html: content sha256"), "{s}");
    assert!(s.contains("different presidencia.html: headers"), "{s}");
    assert!(s.contains("1 missing, 1 extra, 2 different"), "{s}");
    let (code, s) = run!(&["verify", "--target", "nope"]);
    assert_ne!(code, Some(0), "{s}");

    // Sync while the server runs: the server does it, on request.
    let (code, s) = run!(&["sync"]);
    assert_eq!(code, Some(0), "{s}");
    assert!(s.contains("the running server"), "{s}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, s) = run!(&["verify"]);
        if code == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sync did not repair the bucket: {s}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The server's journal agrees with the repaired bucket: a new cut uploads only its changes.
    let c1 = c0.plus_minutes(15);
    let before = g.requests("PutObject");
    node.push(
        &c1.name(".zip"),
        &packages::zip_bytes(&packages::increment(&c1, SEED)),
    )
    .await;
    wait_for_bucket_cut(&g, &node, &c1.name(".zip"), Duration::from_secs(30)).await;
    assert_eq!(
        (g.requests("PutObject") - before) as usize,
        packages::increment(&c1, SEED).len()
    );

    // Sync with the server stopped: this process does it, grace period included.
    node.stop();
    tamper(&g).await;
    let (code, s) = run!(&["sync"]);
    assert_eq!(code, Some(0), "{s}");
    assert!(s.contains("this process"), "{s}");
    let (code, s) = run!(&["verify"]);
    assert_eq!(code, Some(0), "{s}");
    assert_bucket_equals_live(&g, &node).await;
    let restart_before = g.requests("PutObject");
    node.start("increment");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        g.requests("PutObject"),
        restart_before,
        "sync left the journal behind the bucket"
    );
    node.stop();
    node.assert_no_credentials(&g, &outputs);
}

#[test]
fn a_target_without_its_credentials_stops_the_server_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("difusor.toml"),
        "[ssh]\nlisten = \"127.0.0.1:0\"\n[web]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"off\"\n\
         [[mirror.s3]]\nname = \"r2\"\nendpoint = \"https://example.invalid\"\nbucket = \"b\"\n\
         access_key_env = \"DIFUSOR_TEST_UNSET_KEY\"\nsecret_key_env = \"DIFUSOR_TEST_UNSET_SECRET\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_difusor"))
        .args(["serve", "--config", "difusor.toml"])
        .current_dir(dir.path())
        .env_remove("DIFUSOR_TEST_UNSET_KEY")
        .env_remove("DIFUSOR_TEST_UNSET_SECRET")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("DIFUSOR_TEST_UNSET_KEY is not set"), "{err}");
}

/// In process: `Mirror::subscribe_mirrored` (what the CDN purge follows) announces a cut only
/// once `json/main.json` of it is in the bucket, `previous_live` covering skipped cuts; `lag()`
/// counts the cuts and seconds the bucket is behind, and `healthy` follows the incidents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_cuts_are_announced_after_main_json_and_lag_is_measured() {
    let mut g = Garage::start().await;
    let mut key = None;
    let extra = format!(
        "[[mirror.s3]]\nname = \"garage\"\nendpoint = \"{}\"\nallow_http = true\nregion = \"garage\"\n\
         bucket = \"{}\"\ncredentials_file = \"s3.credentials\"\nmax_backoff_secs = 1\nmax_retries = 0\n",
        g.endpoint(),
        g.bucket
    );
    let srv = start_ingest_server(
        &[User {
            name: "institute",
            role: "publisher",
            keys: "keys/institute.pub",
        }],
        &extra,
        |dir| {
            key = Some(ssh_keygen(
                &dir.join("keys"),
                "institute",
                &["-t", "ed25519"],
            ));
            g.write_credentials_file(&dir.join("s3.credentials"));
        },
    )
    .await;
    let key = key.unwrap();
    let mirror = srv.running.mirror.clone().expect("a mirror");
    let mut mirrored = mirror.subscribe_mirrored();
    let lag = mirror.lag();
    assert_eq!(lag.len(), 1);
    assert_eq!((lag[0].cuts_behind, lag[0].healthy), (0, true));
    assert_eq!(lag[0].last_mirrored_cut, None);

    let push = |name: String, bytes: Vec<u8>| {
        let dir = srv.root().to_owned();
        let addr = srv.addr;
        let key = key.private.clone();
        async move {
            let local = dir.join("upload.zip");
            std::fs::write(&local, bytes).unwrap();
            let out = sftp(
                addr,
                "institute",
                &key,
                &format!("put {} {name}\n", local.display()),
                &[],
            )
            .await;
            assert!(out.status.success(), "{}", text(&out));
        }
    };
    let c0 = CutTime::new(2024, 6, 2, 20, 15);
    push(
        c0.name(".zip"),
        packages::zip_bytes(&packages::full_site(&c0, SEED)),
    )
    .await;
    let ev = tokio::time::timeout(Duration::from_secs(30), mirrored.recv())
        .await
        .expect("cut announced")
        .unwrap();
    let live0 = srv.running.pipeline.store().live().unwrap();
    assert_eq!(ev.cut_id, live0);
    assert_eq!(
        bucket_cut(&g).await.as_deref(),
        Some(c0.name(".zip").as_str()),
        "announced before main.json was up"
    );
    let lag = mirror.lag();
    assert_eq!(lag[0].cuts_behind, 0);
    assert_eq!(lag[0].seconds_behind, 0.0);
    assert_eq!(lag[0].last_mirrored_cut.as_deref(), Some(live0.as_str()));

    // Target down: two cuts go live locally, none is announced, lag grows.
    g.stop();
    let c1 = c0.plus_minutes(15);
    let c2 = c0.plus_minutes(30);
    push(
        c1.name(".zip"),
        packages::zip_bytes(&packages::increment(&c1, SEED)),
    )
    .await;
    push(
        c2.name(".zip"),
        packages::zip_bytes(&packages::increment(&c2, SEED)),
    )
    .await;
    let live2 = srv.running.pipeline.store().live().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let l = &mirror.lag()[0];
        if !l.healthy && l.cuts_behind == 2 && l.seconds_behind > 0.5 {
            assert!(l.failures_total >= 1);
            break;
        }
        assert!(Instant::now() < deadline, "lag while down: {l:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        mirrored.try_recv().is_err(),
        "a cut was announced while the bucket was down"
    );

    // Back: the newest cut is announced, its previous_live the last announced one.
    g.restart().await;
    let ev = tokio::time::timeout(Duration::from_secs(30), mirrored.recv())
        .await
        .expect("catch-up announced")
        .unwrap();
    assert_eq!(ev.cut_id, live2);
    assert_eq!(ev.previous_live.as_deref(), Some(live0.as_str()));
    assert_eq!(
        bucket_cut(&g).await.as_deref(),
        Some(c2.name(".zip").as_str())
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mirror.lag()[0].healthy {
        assert!(Instant::now() < deadline, "healthy again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let l = &mirror.lag()[0];
    assert_eq!((l.cuts_behind, l.seconds_behind), (0, 0.0));
    assert_eq!(l.last_mirrored_cut.as_deref(), Some(live2.as_str()));
}

/// The CDN purge waits for the mirror: purging before the new files are in the bucket would
/// have the CDN re-cache the old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cdn_is_purged_only_once_the_bucket_has_the_cut() {
    use common::receiver::{Receiver, Reply};
    let mut g = Garage::start().await;
    let cdn = Receiver::start(vec![], Reply::cloudflare_ok()).await;
    let mut node = Node::new(
        &g,
        &format!(
            "max_retries = 1\nrequest_timeout_secs = 5\n\
             [[notify]]\ntype = \"cloudflare\"\nname = \"cdn\"\nzone_id = \"z1\"\n\
             token_file = \"keys/cf.token\"\nbase_urls = [\"https://prep.example.mx\"]\n\
             api_base = \"{}\"\nretry_backoff_ms = 100\n",
            cdn.url("")
        ),
    );
    std::fs::write(node.dir.path().join("keys/cf.token"), "tok\n").unwrap();
    node.start("increment");
    let c0 = CutTime::new(2024, 6, 2, 20, 15);
    node.push(
        &c0.name(".zip"),
        &packages::zip_bytes(&packages::full_site(&c0, SEED)),
    )
    .await;
    wait_for_bucket_cut(&g, &node, &c0.name(".zip"), Duration::from_secs(30)).await;
    cdn.wait_for(1, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_first = cdn.count();

    // The bucket is down: the next cut goes live here, and the CDN is left alone.
    g.stop();
    let c1 = c0.plus_minutes(15);
    node.push(
        &c1.name(".zip"),
        &packages::zip_bytes(&packages::increment(&c1, SEED)),
    )
    .await;
    let live = node.live().unwrap();
    assert!(live.starts_with("20240603T0230Z"), "{live}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        cdn.count(),
        after_first,
        "no purge while the bucket lacks the cut"
    );

    // The bucket is back: the mirror catches up, and only then the purge goes out.
    g.restart().await;
    let calls = cdn.wait_for(after_first + 1, Duration::from_secs(40)).await;
    assert_eq!(
        bucket_cut(&g).await.as_deref(),
        Some(c1.name(".zip").as_str()),
        "the purge came after the bucket had the new main.json"
    );
    drop(calls);
    // The cut's purge, in batches of at most 30 URLs, covers its main.json.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let files: Vec<String> = cdn.requests()[after_first..]
        .iter()
        .flat_map(|r| {
            let v = r.json();
            let batch: Vec<String> = v["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_owned())
                .collect();
            assert!(batch.len() <= 30);
            batch
        })
        .collect();
    assert!(
        files.contains(&"https://prep.example.mx/json/main.json".to_owned()),
        "{files:?}"
    );
}
