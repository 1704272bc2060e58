//! Crash safety: the server is killed (abort at a test-only crash point, or SIGKILL) at each
//! step of the pipeline, restarted, and the invariants checked:
//! - each package is live exactly once, or in quarantine with a reason, or (upload
//!   incomplete) absent — never lost, never half-published;
//! - the previous live cut keeps being the live cut until the new one is complete;
//! - leftover build directories are cleaned at start, and the recovery is an incident;
//! - a verification slower than `close_timeout_secs` answers the uploader OK at the timeout
//!   and still publishes (test-only delay `DIFUSOR_TEST_SLOW_INGEST_MS`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::packages::{self, CutTime};
use common::*;

struct Instance {
    dir: tempfile::TempDir,
    port: u16,
    key: ClientKey,
}

impl Instance {
    fn new() -> Instance {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::create_dir_all(dir.path().join("keys")).unwrap();
        let key = ssh_keygen(&dir.path().join("keys"), "institute", &["-t", "ed25519"]);
        std::fs::write(
            dir.path().join("difusor.toml"),
            format!("[admin]\nlisten = \"127.0.0.1:0\"\n[web]\nlisten = \"127.0.0.1:0\"\n[ssh]\nlisten = \"127.0.0.1:{port}\"\n[[users]]\nname = \"institute\"\nrole = \"publisher\"\nauthorized_keys = \"keys/institute.pub\"\n"),
        )
        .unwrap();
        Instance { dir, port, key }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn start(&self, crash_at: Option<&str>) -> Child {
        self.start_env(crash_at, &[])
    }

    fn start_env(&self, crash_at: Option<&str>, env: &[(&str, &str)]) -> Child {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_difusor"));
        cmd.args(["serve", "--config", "difusor.toml"])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("server.log"))
                    .unwrap(),
            );
        if let Some(step) = crash_at {
            cmd.env("DIFUSOR_TEST_CRASH_AT", step);
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "server exited at start"
            );
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    fn push(&self, name: &str, bytes: &[u8], extra: &[&str]) -> std::process::Output {
        let local = self.dir.path().join("upload.tmp");
        std::fs::write(&local, bytes).unwrap();
        let addr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(sftp(
            addr,
            "institute",
            &self.key.private,
            &format!("put {} {name}\n", local.display()),
            extra,
        ))
    }

    fn live(&self) -> Option<String> {
        let t = std::fs::read_link(self.data().join("live")).ok()?;
        Some(t.file_name()?.to_string_lossy().into_owned())
    }

    fn manifests(&self) -> Vec<serde_json::Value> {
        std::fs::read_dir(self.data().join("history"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
            .collect()
    }

    fn incidents(&self) -> String {
        std::fs::read_to_string(self.data().join("state/incidents.jsonl")).unwrap_or_default()
    }
}

fn wait_exit(child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "server did not crash at its crash point"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Waits until `pred` holds (the restarted server works through its backlog).
fn eventually(what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn no_build_leftovers(data: &Path) {
    for e in std::fs::read_dir(data.join("cuts")).unwrap().flatten() {
        assert!(
            !e.file_name().to_string_lossy().starts_with('.'),
            "leftover {:?}",
            e.path()
        );
    }
}

#[test]
fn a_crash_at_any_pipeline_step_leaves_each_package_live_exactly_once() {
    let a_cut = CutTime {
        y: 2024,
        mo: 6,
        d: 2,
        h: 20,
        mi: 0,
    };
    let b_cut = a_cut.plus_minutes(15);
    let a = packages::zip_bytes(&packages::full_site(&a_cut, 1));
    let b_files = packages::increment(&b_cut, 1);
    let b = packages::zip_bytes(&b_files);
    for step in ["after-extract", "after-cut", "after-archive", "after-live"] {
        let inst = Instance::new();
        let server = inst.start(None);
        assert!(
            inst.push(&a_cut.name(".zip"), &a, &[]).status.success(),
            "{step}"
        );
        let a_id = inst.live().unwrap();
        kill(server);

        let mut crashing = inst.start(Some(step));
        let o = inst.push(&b_cut.name(".zip"), &b, &[]);
        assert!(
            !o.status.success(),
            "{step}: the upload's close cannot succeed when the server dies"
        );
        wait_exit(&mut crashing);
        // At the instant of the crash the live pointer is A, or (after-live) B — never partial.
        let at_crash = inst.live().unwrap();
        if step == "after-live" {
            assert_ne!(at_crash, a_id, "{step}");
        } else {
            assert_eq!(at_crash, a_id, "{step}");
        }

        let server = inst.start(None);
        eventually("the package to be live", || {
            inst.live().is_some_and(|l| l != a_id)
        });
        eventually(
            "incoming to drain and both cuts to be recorded as published",
            || {
                std::fs::read_dir(inst.data().join("incoming"))
                    .unwrap()
                    .flatten()
                    .count()
                    == 0
                    && inst.manifests().len() == 2
                    && inst
                        .manifests()
                        .iter()
                        .all(|m| !m["published_at"].is_null())
            },
        );
        kill(server);
        let manifests = inst.manifests();
        let b_sha = sha(&b);
        let b_count = manifests
            .iter()
            .filter(|m| m["sha256"] == b_sha.as_str())
            .count();
        assert_eq!(b_count, 1, "{step}: B is in history exactly once");
        assert_eq!(manifests.len(), 2, "{step}");
        let b_m = manifests
            .iter()
            .find(|m| m["sha256"] == b_sha.as_str())
            .unwrap();
        assert_eq!(
            b_m["uploader"],
            "institute",
            "{step}: provenance survives the crash; log:\n{}",
            std::fs::read_to_string(inst.dir.path().join("server.log")).unwrap_or_default()
        );
        for m in &manifests {
            assert!(!m["published_at"].is_null(), "{step}: {m}");
        }
        let live = inst.live().unwrap();
        let m = manifests
            .iter()
            .find(|m| m["cut_id"] == live.as_str())
            .unwrap();
        assert_eq!(m["sha256"], b_sha.as_str(), "{step}");
        let archived =
            std::fs::read(inst.data().join("history").join(format!("{live}.zip"))).unwrap();
        assert_eq!(archived, b, "{step}: archived byte for byte");
        for (p, bytes) in &b_files {
            assert_eq!(
                &std::fs::read(inst.data().join("live").join(p)).unwrap(),
                bytes,
                "{step}: {p}"
            );
        }
        assert!(
            inst.data().join("live/index.html").exists(),
            "{step}: increment kept the site"
        );
        no_build_leftovers(&inst.data());
        assert!(
            inst.incidents().contains("crash-recovery"),
            "{step}: {}",
            inst.incidents()
        );
    }
}

#[test]
fn a_kill_during_the_upload_leaves_the_package_absent_and_the_live_cut_serving() {
    let inst = Instance::new();
    let server = inst.start(None);
    let a_cut = CutTime {
        y: 2024,
        mo: 6,
        d: 2,
        h: 20,
        mi: 0,
    };
    assert!(
        inst.push(
            &a_cut.name(".zip"),
            &packages::zip_bytes(&packages::full_site(&a_cut, 1)),
            &[]
        )
        .status
        .success()
    );
    let a_id = inst.live().unwrap();
    // A slow upload (rate-limited), and the server killed while it runs.
    let big = inst.dir.path().join("big.zip");
    random_file(&big, 8 << 20, 3);
    let batch = inst.dir.path().join("b");
    std::fs::write(
        &batch,
        format!("put {} 20240602_2015_PREP.zip\n", big.display()),
    )
    .unwrap();
    let mut client = Command::new("sftp")
        .args(sftp_args(
            inst.port,
            "institute",
            &inst.key.private,
            &batch,
            &["-l", "4000"],
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("the upload to start", || {
        std::fs::read_dir(inst.data().join("incoming"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".difusor-"))
    });
    kill(server);
    let _ = client.wait();
    let server = inst.start(None);
    std::thread::sleep(Duration::from_millis(500));
    kill(server);
    assert_eq!(inst.live().unwrap(), a_id);
    let incoming: Vec<_> = std::fs::read_dir(inst.data().join("incoming"))
        .unwrap()
        .flatten()
        .collect();
    assert!(
        incoming.is_empty(),
        "{:?}",
        incoming.iter().map(|e| e.path()).collect::<Vec<_>>()
    );
    assert_eq!(inst.manifests().len(), 1);
}

#[test]
fn a_slow_verification_answers_the_close_after_the_timeout_and_still_publishes() {
    let inst = Instance::new();
    let cfg = inst.dir.path().join("difusor.toml");
    let mut toml = std::fs::read_to_string(&cfg).unwrap();
    toml.push_str("[ingest]\nclose_timeout_secs = 1\n");
    std::fs::write(&cfg, toml).unwrap();
    let server = inst.start_env(None, &[("DIFUSOR_TEST_SLOW_INGEST_MS", "4000")]);
    let cut = CutTime {
        y: 2024,
        mo: 6,
        d: 2,
        h: 20,
        mi: 0,
    };
    let started = Instant::now();
    let o = inst.push(
        &cut.name(".zip"),
        &packages::zip_bytes(&packages::full_site(&cut, 1)),
        &[],
    );
    let took = started.elapsed();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        took < Duration::from_secs(4),
        "the close was answered at the timeout, not after processing: {took:?}"
    );
    assert!(
        inst.live().is_none(),
        "still verifying when the client got its answer"
    );
    eventually("the package to be published anyway", || {
        inst.live().is_some()
    });
    kill(server);
    assert!(
        std::fs::read_to_string(inst.dir.path().join("server.log"))
            .unwrap()
            .contains("answering the upload's close with OK")
    );
}
