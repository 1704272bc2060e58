//! The ingest pipeline, fed by real `sftp` uploads.
//!
//! Behaviours covered:
//! - a night of ≥ 10 packages (full site, then increments; zip and tar.gz) each becomes the
//!   live cut as the uploader's `close` returns; history keeps every package byte for byte
//!   with its manifest; unchanged files carry over, changed ones change, the previous cut's
//!   files are never modified in place
//! - `mode = "replace"` publishes each package as the whole site
//! - every kind in the hostile corpus is quarantined with its reason, recorded as an
//!   incident, never changes the live cut, writes nothing outside the cut, and the uploader's
//!   `sftp` fails and prints the reason
//! - a rejected name may be re-sent and then succeeds; identical re-sends are not re-published
//! - `.sha256` sidecars are enforced (then consumed: deleted once published, quarantined with
//!   a rejected package), and `require_checksum` demands one
//! - non-package files stay in `/incoming` untouched
//! - operators see `/history`, `/live`, `/quarantine` and `/status.json` read-only
//! - the real PREP package from a past election publishes
//! - `difusor verify` says what it would publish or why not (exit 0/1)

mod common;

use std::path::{Path, PathBuf};

use common::packages::{self, CutTime};
use common::*;

async fn ingest_server(extra: &str) -> (TestServer, ClientKey, ClientKey) {
    let mut keys = Vec::new();
    let srv = start_ingest_server(
        &[
            User {
                name: "institute",
                role: "publisher",
                keys: "keys/institute.pub",
            },
            User {
                name: "ops",
                role: "operator",
                keys: "keys/ops.pub",
            },
        ],
        extra,
        |dir| {
            keys.push(ssh_keygen(
                &dir.join("keys"),
                "institute",
                &["-t", "ed25519"],
            ));
            keys.push(ssh_keygen(&dir.join("keys"), "ops", &["-t", "ed25519"]));
        },
    )
    .await;
    let ops = keys.pop().unwrap();
    let inst = keys.pop().unwrap();
    (srv, inst, ops)
}

/// Uploads `bytes` as `name` (after its sidecar, if given) with real sftp.
async fn push(
    srv: &TestServer,
    key: &ClientKey,
    name: &str,
    bytes: &[u8],
    sidecar: Option<&str>,
) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("pkg");
    std::fs::write(&local, bytes).unwrap();
    let mut batch = String::new();
    if let Some(sc) = sidecar {
        let sp = dir.path().join("sidecar");
        std::fs::write(&sp, sc).unwrap();
        batch.push_str(&format!("put {} \"{name}.sha256\"\n", sp.display()));
    }
    batch.push_str(&format!("put {} \"{name}\"\n", local.display()));
    sftp(srv.addr, "institute", &key.private, &batch, &[]).await
}

fn live_id(srv: &TestServer) -> Option<String> {
    srv.running.pipeline.store().live()
}

fn live_dir(srv: &TestServer) -> PathBuf {
    srv.root().join("data/live")
}

fn read_live(srv: &TestServer, path: &str) -> Option<Vec<u8>> {
    std::fs::read(live_dir(srv).join(path)).ok()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_night_of_packages_each_becomes_live_and_history_keeps_them_all() {
    let (srv, key, _) = ingest_server("").await;
    let mut cut = CutTime {
        y: 2024,
        mo: 6,
        d: 2,
        h: 20,
        mi: 0,
    };
    let mut history = Vec::new();
    let full = packages::full_site(&cut, 1);
    let full_count = full.len();
    let mut expected: std::collections::BTreeMap<String, Vec<u8>> = full.iter().cloned().collect();
    let first = packages::zip_bytes(&full);
    let name = cut.name(".zip");
    let o = push(&srv, &key, &name, &first, None).await;
    assert!(o.status.success(), "{}", text(&o));
    let first_id = live_id(&srv).expect("first cut live");
    history.push((first_id.clone(), first.clone()));
    let first_index = read_live(&srv, "index.html").unwrap();
    // Keep an inode of the first cut to prove increments never modify it.
    let first_main = std::fs::read(
        srv.root()
            .join("data/cuts")
            .join(&first_id)
            .join("json/main.json"),
    )
    .unwrap();

    for i in 1..=10u64 {
        cut = cut.plus_minutes(15);
        let inc = packages::increment(&cut, 1);
        for (p, b) in &inc {
            expected.insert(p.clone(), b.clone());
        }
        let (bytes, ext) = if i % 2 == 0 {
            (packages::tar_gz_bytes(&inc), "tar.gz")
        } else {
            (packages::zip_bytes(&inc), "zip")
        };
        let o = push(&srv, &key, &cut.name(&format!(".{ext}")), &bytes, None).await;
        assert!(o.status.success(), "cut {i}: {}", text(&o));
        let id = live_id(&srv).unwrap();
        assert_ne!(history.last().unwrap().0, id, "cut {i} became live");
        history.push((id, bytes));
        // The live tree is the union: unchanged files from the full site, new json.
        assert_eq!(
            read_live(&srv, "json/main.json").unwrap(),
            expected["json/main.json"]
        );
    }
    // Every file of the final live cut is what the packages say, and nothing else is there.
    let live_files: Vec<String> = tree(&live_dir(&srv))
        .into_iter()
        .filter(|p| live_dir(&srv).join(p).is_file())
        .collect();
    assert_eq!(
        live_files.len(),
        expected.len(),
        "{} files vs {full_count} + increments",
        live_files.len()
    );
    for (p, b) in &expected {
        assert_eq!(&read_live(&srv, p).unwrap(), b, "{p}");
    }
    assert_eq!(
        read_live(&srv, "index.html").unwrap(),
        first_index,
        "unchanged files carry over"
    );
    // The first cut is untouched (hard links were replaced, not written through).
    assert_eq!(
        std::fs::read(
            srv.root()
                .join("data/cuts")
                .join(&first_id)
                .join("json/main.json")
        )
        .unwrap(),
        first_main
    );
    // History: every package byte for byte, with a manifest.
    let store = srv.running.pipeline.store();
    let manifests = store.manifests();
    assert_eq!(manifests.len(), 11);
    for (id, bytes) in &history {
        let m = store.read_manifest(id).unwrap();
        let archived = std::fs::read(store.package_path(id, &m.extension)).unwrap();
        assert_eq!(&archived, bytes, "{id}");
        assert_eq!(m.sha256, sha256_hex(bytes));
        assert_eq!(m.uploader, "institute");
        assert!(m.published_at.is_some() && m.cut_time.is_some());
        assert!(
            id.starts_with(
                &m.cut_time
                    .unwrap()
                    .to_offset(time::UtcOffset::UTC)
                    .format(time::macros::format_description!(
                        "[year][month][day]T[hour][minute]Z"
                    ))
                    .unwrap()
            )
        );
    }
    // Cut ids sort by time.
    let ids: Vec<&String> = history.iter().map(|(id, _)| id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    // Incoming is empty again.
    assert!(
        tree(&srv.incoming()).is_empty(),
        "{:?}",
        tree(&srv.incoming())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_mode_publishes_each_package_as_the_whole_site() {
    let (srv, key, _) = ingest_server("[ingest]\nmode = \"replace\"\n").await;
    let cut = CutTime {
        y: 2024,
        mo: 6,
        d: 2,
        h: 20,
        mi: 0,
    };
    assert!(
        push(
            &srv,
            &key,
            &cut.name(".zip"),
            &packages::zip_bytes(&packages::full_site(&cut, 1)),
            None
        )
        .await
        .status
        .success()
    );
    assert!(read_live(&srv, "index.html").is_some());
    let next = cut.plus_minutes(15);
    let inc = packages::increment(&next, 1);
    assert!(
        push(
            &srv,
            &key,
            &next.name(".zip"),
            &packages::zip_bytes(&inc),
            None
        )
        .await
        .status
        .success()
    );
    assert!(
        read_live(&srv, "index.html").is_none(),
        "replace: files not in the package are gone"
    );
    for (p, b) in &inc {
        assert_eq!(&read_live(&srv, p).unwrap(), b);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_packages_are_quarantined_with_their_reason_and_the_live_cut_stays() {
    // A generous close timeout: a loaded CI machine must still get every verdict in time.
    let (srv, key, _) = ingest_server("[ingest]\nclose_timeout_secs = 600\n").await;
    let cut = CutTime {
        y: 2024,
        mo: 6,
        d: 2,
        h: 20,
        mi: 0,
    };
    assert!(
        push(
            &srv,
            &key,
            &cut.name(".zip"),
            &packages::zip_bytes(&packages::full_site(&cut, 1)),
            None
        )
        .await
        .status
        .success()
    );
    let mut live_before = live_id(&srv).unwrap();
    let mut live_tree = tree(&live_dir(&srv));
    let outside_before: Vec<String> = tree(srv.root())
        .into_iter()
        .filter(|p| !p.starts_with("data/"))
        .collect();
    let corpus = packages::hostile_corpus();
    assert!(corpus.len() >= 25, "{} kinds", corpus.len());
    let mut rejected = 0;
    for h in &corpus {
        // 200,001 entries in a tar.gz: refused only after 200,000 files were created (tar
        // cannot be counted up front) — tens of seconds in a debug build. The extractor
        // test (tests/extract_corpus.rs) covers it; over sftp it only adds minutes.
        if h.name == "too-many-entries-tgz" {
            continue;
        }
        let before_incidents = srv.running.pipeline.store().incidents().len();
        let o = push(&srv, &key, &h.file_name, &h.bytes, h.sidecar.as_deref()).await;
        if h.expect_kind == "ok" {
            assert!(
                o.status.success(),
                "{} must be accepted: {}",
                h.name,
                text(&o)
            );
            live_before = live_id(&srv).unwrap();
            live_tree = tree(&live_dir(&srv));
            continue;
        }
        rejected += 1;
        assert!(
            !o.status.success(),
            "{} must be refused: {}",
            h.name,
            text(&o)
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("rejected"),
            "{}: the uploader sees why: {err}",
            h.name
        );
        assert_eq!(
            live_id(&srv).unwrap(),
            live_before,
            "{}: live cut unchanged",
            h.name
        );
        let incidents = srv.running.pipeline.store().incidents();
        assert_eq!(incidents.len(), before_incidents + 1, "{}", h.name);
        let last = incidents.last().unwrap();
        assert_eq!(last.kind, "package-rejected");
        assert!(
            last.reason.contains(&format!("({})", h.expect_kind)),
            "{}: expected kind {}, got {}",
            h.name,
            h.expect_kind,
            last.reason
        );
        assert_eq!(last.package.as_deref(), Some(h.file_name.as_str()));
        // Quarantined with a .reason file.
        let q = srv.root().join("data/quarantine");
        let reason_files: Vec<PathBuf> = std::fs::read_dir(&q)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.to_string_lossy()
                    .ends_with(&format!("{}.reason", h.file_name))
            })
            .collect();
        assert!(!reason_files.is_empty(), "{}: no reason file", h.name);
        // Not left in incoming.
        assert!(!srv.incoming().join(&h.file_name).exists(), "{}", h.name);
        // Remove sidecars so later entries start clean.
        let _ = std::fs::remove_file(srv.incoming().join(format!("{}.sha256", h.file_name)));
    }
    assert!(rejected >= 20);
    // The live tree and everything outside the data dir are as before.
    assert_eq!(live_id(&srv).unwrap(), live_before);
    assert_eq!(tree(&live_dir(&srv)), live_tree);
    let outside_after: Vec<String> = tree(srv.root())
        .into_iter()
        .filter(|p| !p.starts_with("data/"))
        .collect();
    assert_eq!(outside_before, outside_after);
    // Nothing outside data/cuts/<id> from any extraction: no stray files in data/ itself.
    for e in std::fs::read_dir(srv.root().join("data"))
        .unwrap()
        .flatten()
    {
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(
            [
                "incoming",
                "history",
                "quarantine",
                "cuts",
                "state",
                "live",
                "logs"
            ]
            .contains(&n.as_str()),
            "stray {n}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_name_can_be_resent_and_identical_resends_are_not_republished() {
    let (srv, key, _) = ingest_server("").await;
    let cut = CutTime {
        y: 2024,
        mo: 6,
        d: 2,
        h: 20,
        mi: 0,
    };
    let name = cut.name(".zip");
    let good = packages::zip_bytes(&packages::full_site(&cut, 1));
    let mut broken = good.clone();
    broken.truncate(good.len() / 2);
    assert!(
        !push(&srv, &key, &name, &broken, None)
            .await
            .status
            .success()
    );
    assert!(live_id(&srv).is_none());
    let o = push(&srv, &key, &name, &good, None).await;
    assert!(o.status.success(), "{}", text(&o));
    let id = live_id(&srv).unwrap();
    let o = push(&srv, &key, &name, &good, None).await;
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(live_id(&srv).unwrap(), id);
    assert_eq!(srv.running.pipeline.store().manifests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_checksums_are_enforced() {
    let (srv, key, _) = ingest_server("").await;
    let cut = CutTime {
        y: 2024,
        mo: 6,
        d: 2,
        h: 20,
        mi: 0,
    };
    let bytes = packages::zip_bytes(&packages::full_site(&cut, 1));
    let name = cut.name(".zip");
    let good = format!("{}  {name}\n", sha256_hex(&bytes));
    let o = push(&srv, &key, &name, &bytes, Some(&good)).await;
    assert!(o.status.success(), "{}", text(&o));
    // The sidecar is consumed (its hash is the manifest's): incoming/ is clean for a re-send.
    assert!(!srv.incoming().join(format!("{name}.sha256")).exists());
    assert_eq!(
        srv.running.pipeline.store().manifests()[0].sha256,
        sha256_hex(&bytes)
    );
    let next = cut.plus_minutes(15);
    let name2 = next.name(".zip");
    let bytes2 = packages::zip_bytes(&packages::increment(&next, 1));
    let o = push(
        &srv,
        &key,
        &name2,
        &bytes2,
        Some(&format!("{}  {name2}\n", "0".repeat(64))),
    )
    .await;
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("SHA-256 mismatch"),
        "{}",
        text(&o)
    );
    // The refused package's sidecar went to quarantine with it.
    assert!(!srv.incoming().join(format!("{name2}.sha256")).exists());
    let quarantined: Vec<String> = std::fs::read_dir(srv.root().join("data/quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        quarantined
            .iter()
            .any(|n| n.ends_with(&format!("{name2}.sha256"))),
        "{quarantined:?}"
    );

    let (srv, key, _) = ingest_server("[ingest]\nrequire_checksum = true\n").await;
    let o = push(&srv, &key, &name, &bytes, None).await;
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("checksum is required"),
        "{}",
        text(&o)
    );
    assert!(
        push(&srv, &key, &name, &bytes, Some(&good))
            .await
            .status
            .success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_package_files_stay_in_incoming() {
    let (srv, key, _) = ingest_server("").await;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("notes.txt");
    std::fs::write(&f, "hola").unwrap();
    assert!(
        sftp(
            srv.addr,
            "institute",
            &key.private,
            &format!("put {} notes.txt\n", f.display()),
            &[]
        )
        .await
        .status
        .success()
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        std::fs::read_to_string(srv.incoming().join("notes.txt")).unwrap(),
        "hola"
    );
    assert!(srv.running.pipeline.store().incidents().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_history_live_quarantine_and_status_read_only() {
    let (srv, key, ops) = ingest_server("").await;
    let cut = CutTime {
        y: 2024,
        mo: 6,
        d: 2,
        h: 20,
        mi: 0,
    };
    assert!(
        push(
            &srv,
            &key,
            &cut.name(".zip"),
            &packages::zip_bytes(&packages::full_site(&cut, 1)),
            None
        )
        .await
        .status
        .success()
    );
    assert!(
        !push(&srv, &key, "20240602_2030_PREP.zip", b"garbage", None)
            .await
            .status
            .success()
    );
    let got = srv.root().join("status.json");
    let o = sftp(
        srv.addr,
        "ops",
        &ops.private,
        &format!(
            "ls -l /\nls -l /history\nls /live/json\nls -l /quarantine\nget /status.json {}\n",
            got.display()
        ),
        &[],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for want in [
        "history",
        "live",
        "quarantine",
        "status.json",
        ".zip",
        "main.json",
        "20240602_2030_PREP.zip.reason",
    ] {
        assert!(out.contains(want), "{want} missing in {out}");
    }
    let status: serde_json::Value = serde_json::from_slice(&std::fs::read(&got).unwrap()).unwrap();
    assert_eq!(status["live_cut"].as_str(), live_id(&srv).as_deref());
    assert_eq!(status["packages_in_history"], 1);
    assert!(
        status["last_incident"]["reason"]
            .as_str()
            .unwrap()
            .contains("wrong-format")
    );
    assert!(status["disk"]["history_bytes"].as_u64().unwrap() > 0);
    // Read-only for operators; invisible to the publisher (except status.json).
    assert!(
        !sftp(srv.addr, "ops", &ops.private, "rm /history/x\n", &[])
            .await
            .status
            .success()
    );
    let o = sftp(srv.addr, "institute", &key.private, "ls /\n", &[]).await;
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("incoming") && out.contains("status.json") && !out.contains("history"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_prep_package_of_a_past_election_publishes() {
    let (srv, key, _) = ingest_server("").await;
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/20190603_0547_PREP_DIP_QROO.zip");
    let bytes = std::fs::read(&fixture).unwrap();
    let o = push(&srv, &key, "20190603_0547_PREP_DIP_QROO.zip", &bytes, None).await;
    assert!(o.status.success(), "{}", text(&o));
    let csv = read_live(&srv, "QROO_DIP_LOC_2019.csv").unwrap();
    assert_eq!(csv.len(), 681_462);
    let m = srv
        .running
        .pipeline
        .store()
        .read_manifest(&live_id(&srv).unwrap())
        .unwrap();
    assert_eq!(m.files, 3);
    assert!(m.cut_id.starts_with("20190603T1147Z-"), "{}", m.cut_id);
}

#[test]
fn verify_command_reports_what_it_would_publish_or_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let cut = CutTime {
        y: 2024,
        mo: 6,
        d: 2,
        h: 20,
        mi: 0,
    };
    let good = dir.path().join(cut.name(".zip"));
    std::fs::write(&good, packages::zip_bytes(&packages::full_site(&cut, 1))).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_difusor"))
        .arg("verify")
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("would be published as cut 20240603T0200Z-")
    );
    for h in packages::hostile_corpus()
        .iter()
        .filter(|h| h.expect_kind != "ok" && h.expect_kind != "checksum")
    {
        let p = dir.path().join(&h.file_name);
        std::fs::write(&p, &h.bytes).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_difusor"))
            .arg("verify")
            .arg(&p)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}: {}", h.name, text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&format!("({})", h.expect_kind)),
            "{}: {}",
            h.name,
            text(&out)
        );
        std::fs::remove_file(&p).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_old_extracted_cuts_but_never_history_or_the_live_cut() {
    let (srv, key, _) = ingest_server("[ingest]\nkeep_cuts = 1\n").await;
    let mut cut = CutTime {
        y: 2024,
        mo: 6,
        d: 2,
        h: 20,
        mi: 0,
    };
    assert!(
        push(
            &srv,
            &key,
            &cut.name(".zip"),
            &packages::zip_bytes(&packages::full_site(&cut, 1)),
            None
        )
        .await
        .status
        .success()
    );
    for _ in 0..3 {
        cut = cut.plus_minutes(15);
        let o = push(
            &srv,
            &key,
            &cut.name(".zip"),
            &packages::zip_bytes(&packages::increment(&cut, 1)),
            None,
        )
        .await;
        assert!(o.status.success(), "{}", text(&o));
    }
    let cuts: Vec<String> = std::fs::read_dir(srv.root().join("data/cuts"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(cuts.len(), 2, "live + 1 kept: {cuts:?}");
    assert!(cuts.contains(&live_id(&srv).unwrap()));
    let store = srv.running.pipeline.store();
    assert_eq!(store.manifests().len(), 4, "history keeps every package");
    for m in store.manifests() {
        assert!(store.package_path(&m.cut_id, &m.extension).exists());
    }
    // The live cut still has the full site (increments were built on it before pruning).
    assert!(read_live(&srv, "index.html").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_site_waits_for_the_first_cut_then_serves_each_published_cut_over_https() {
    let (srv, key, _) = ingest_server("").await;
    let base = format!("https://{}", srv.running.web.https_addr);
    let o = curl(&["-i", &format!("{base}/")]).await;
    let page = String::from_utf8_lossy(&o.stdout).to_lowercase();
    assert!(page.contains("x-difusor-cut: none"), "{page}");
    let mut cut = CutTime {
        y: 2024,
        mo: 6,
        d: 2,
        h: 20,
        mi: 0,
    };
    let full = packages::full_site(&cut, 1);
    assert!(
        push(
            &srv,
            &key,
            &cut.name(".zip"),
            &packages::zip_bytes(&full),
            None
        )
        .await
        .status
        .success()
    );
    for _ in 0..3 {
        let id = live_id(&srv).unwrap();
        // The snapshot swap follows the publish event: allow it a moment.
        let mut served = String::new();
        for _ in 0..100 {
            let o = curl(&[
                "-D",
                "-",
                "-o",
                "/dev/null",
                &format!("{base}/json/main.json"),
            ])
            .await;
            served = String::from_utf8_lossy(&o.stdout).to_lowercase();
            if served.contains(&format!("x-difusor-cut: {}", id.to_lowercase())) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(
            served.contains(&format!("x-difusor-cut: {}", id.to_lowercase())),
            "{served}"
        );
        assert!(
            served.contains("cache-control: no-cache, no-store, must-revalidate"),
            "{served}"
        );
        let body = curl(&[&format!("{base}/json/main.json")]).await.stdout;
        assert_eq!(body, read_live(&srv, "json/main.json").unwrap());
        cut = cut.plus_minutes(15);
        let o = push(
            &srv,
            &key,
            &cut.name(".zip"),
            &packages::zip_bytes(&packages::increment(&cut, 1)),
            None,
        )
        .await;
        assert!(o.status.success(), "{}", text(&o));
    }
    // A rejected package changes nothing on the site (once the last good cut is served).
    let id = live_id(&srv).unwrap();
    let served = |o: &std::process::Output| {
        String::from_utf8_lossy(&o.stdout)
            .to_lowercase()
            .contains(&format!("x-difusor-cut: {}", id.to_lowercase()))
    };
    let mut ok = false;
    for _ in 0..100 {
        if served(&curl(&["-D", "-", "-o", "/dev/null", &format!("{base}/index.html")]).await) {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ok, "the last cut is served");
    assert!(
        !push(&srv, &key, "20240602_2300_PREP.zip", b"garbage", None)
            .await
            .status
            .success()
    );
    let o = curl(&["-D", "-", "-o", "/dev/null", &format!("{base}/index.html")]).await;
    assert!(served(&o), "{}", text(&o));
}
