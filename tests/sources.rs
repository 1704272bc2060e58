//! Pull sources: difusor fetches packages from an institute's HTTPS service (a real TLS
//! server on loopback, `tests/common/pkgserver.rs`) or S3 bucket (Garage) and publishes them
//! like SFTP uploads.
//!
//! Behaviours covered:
//! - a listing source picks up new packages in name order, with their `.sha256`, sends the
//!   token as a Bearer header, polls the listing conditionally, and publishes each through the
//!   pipeline (manifests say `source:<name>`); a package already in history under another
//!   name is not processed again; a bad sidecar is rejected like an SFTP upload's
//! - a single package URL is polled with `If-None-Match`, and an interrupted download resumes
//!   with `Range` + `If-Range` instead of starting over; a resumed file that disagrees with its
//!   `.sha256` is fetched again whole instead of being quarantined
//! - a source that fails for many polls raises one `source-failed`, then `source-recovered`
//! - an S3 source (a real Garage server) picks up packages put in the institute's bucket,
//!   under its prefix and pattern, with their sidecar, in name order
//! - an S3 download resumes the partial a killed run left (ranged GET, only for the same
//!   ETag; a partial of another version starts over), and a resumed file that disagrees with
//!   its `.sha256` is fetched again whole: one `source-failed`, nothing quarantined
//! - an S3 package replaced between the listing and the ranged GET: the GET carries the listed
//!   ETag, the bucket refuses it, and nothing of the new version is appended to the old partial

mod common;

use std::time::{Duration, Instant};

use common::packages::{self, CutTime};
use common::pkgserver::PkgServer;
use common::*;

const CUT: CutTime = CutTime {
    y: 2024,
    mo: 6,
    d: 2,
    h: 20,
    mi: 0,
};

async fn server_with_source(pkg: &PkgServer, source_toml: &str) -> TestServer {
    server_with_source_seeded(pkg, source_toml, |_| {}).await
}

/// [`server_with_source`], with `seed` run on the server's directory before it starts.
async fn server_with_source_seeded(
    pkg: &PkgServer,
    source_toml: &str,
    seed: impl FnOnce(&std::path::Path),
) -> TestServer {
    let ca = pkg.ca_pem.clone();
    start_ingest_server(
        &[User {
            name: "institute",
            role: "publisher",
            keys: "keys/institute.pub",
        }],
        &format!(
            "[[sources.https]]\nca_file = \"keys/institute-ca.pem\"\npoll_secs = 1\n{source_toml}\n"
        ),
        |dir| {
            std::fs::write(dir.join("keys/institute-ca.pem"), ca).unwrap();
            std::fs::write(dir.join("keys/source.token"), "s3cr3t-token\n").unwrap();
            ssh_keygen(&dir.join("keys"), "institute", &["-t", "ed25519"]);
            seed(dir);
        },
    )
    .await
}

/// A server with the `[[sources.s3]]` source `ieqroo` on `garage`'s bucket under `paquetes/`;
/// `seed` runs on the server's directory before it starts. Keep the returned directory (the
/// credentials file) alive as long as the server.
async fn server_with_s3_source(
    garage: &common::garage::Garage,
    seed: impl FnOnce(&std::path::Path),
) -> (TestServer, tempfile::TempDir) {
    let creds = tempfile::tempdir().unwrap();
    let creds_file = creds.path().join("garage.credentials");
    garage.write_credentials_file(&creds_file);
    let srv = start_ingest_server(
        &[User {
            name: "institute",
            role: "publisher",
            keys: "keys/institute.pub",
        }],
        &format!(
            "[[sources.s3]]\nname = \"ieqroo\"\nendpoint = \"{}\"\nregion = \"{}\"\nbucket = \"{}\"\nprefix = \"paquetes/\"\nallow_http = true\ncredentials_file = \"{}\"\npoll_secs = 1\n",
            garage.endpoint(),
            garage.region(),
            garage.bucket,
            creds_file.display()
        ),
        |dir| {
            ssh_keygen(&dir.join("keys"), "institute", &["-t", "ed25519"]);
            seed(dir);
        },
    )
    .await;
    (srv, creds)
}

fn manifests(srv: &TestServer) -> Vec<difusor::store::Manifest> {
    let mut m = srv.running.pipeline.store().manifests();
    m.sort_by_key(|m| m.received_at);
    m
}

fn kinds(srv: &TestServer) -> Vec<String> {
    srv.running
        .pipeline
        .store()
        .incidents()
        .into_iter()
        .map(|i| i.kind)
        .collect()
}

/// The one `source-failed` incident there must be (`why`: why only one).
fn the_one_source_failed(srv: &TestServer, why: &str) -> difusor::store::Incident {
    let incidents = srv.running.pipeline.store().incidents();
    let mut failed: Vec<_> = incidents
        .iter()
        .filter(|i| i.kind == "source-failed")
        .cloned()
        .collect();
    assert_eq!(failed.len(), 1, "{why}: {incidents:#?}");
    failed.remove(0)
}

async fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_source_fetches_new_packages_in_order_and_publishes_them() {
    let pkg = PkgServer::start().await;
    let first = packages::zip_bytes(&packages::full_site(&CUT, 1));
    let c2 = CUT.plus_minutes(15);
    let second = packages::zip_bytes(&packages::increment(&c2, 1));
    // Listed in reverse order of arrival on purpose: names sort by cut time.
    pkg.put(&c2.name(".zip"), &second);
    pkg.put(
        &format!("{}.sha256", c2.name(".zip")),
        packages::sidecar_for(&c2.name(".zip"), &second).as_bytes(),
    );
    pkg.put(&CUT.name(".zip"), &first);
    pkg.put("LEEME.txt", b"not a package");
    let srv = server_with_source(
        &pkg,
        &format!(
            "name = \"ine\"\nlisting_url = \"{}\"\npattern = \"*_PREP*.zip\"\ntoken_file = \"keys/source.token\"\n",
            pkg.url("list/")
        ),
    )
    .await;
    wait_for("two cuts", Duration::from_secs(20), || {
        manifests(&srv).len() == 2
    })
    .await;
    let m = manifests(&srv);
    assert_eq!(m[0].original_name, CUT.name(".zip"));
    assert_eq!(m[1].original_name, c2.name(".zip"));
    assert!(m.iter().all(|m| m.uploader == "source:ine"), "{m:?}");
    assert_eq!(m[0].sha256, packages::sha256_hex(&first));
    let store = srv.running.pipeline.store();
    wait_for("the second cut live", Duration::from_secs(5), || {
        store.live().as_deref() == Some(m[1].cut_id.as_str())
    })
    .await;
    // The sidecar went along (and matched); the token was sent; the listing was conditional.
    let seen = pkg.seen();
    assert!(seen.iter().any(|s| s.path.ends_with(".zip.sha256")));
    assert!(
        seen.iter()
            .all(|s| s.header("authorization") == Some("Bearer s3cr3t-token")),
        "every request carries the token"
    );
    assert!(
        !seen.iter().any(|s| s.path.ends_with("LEEME.txt")),
        "pattern filters"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let listing: Vec<_> = pkg
        .seen()
        .into_iter()
        .filter(|s| s.path == "/list/")
        .collect();
    assert!(listing.len() >= 2);
    assert!(
        listing[1..]
            .iter()
            .all(|s| s.header("if-none-match").is_some())
    );
    // The same bytes under a new name: already in history, never processed again.
    pkg.put(&c2.plus_minutes(15).name(".zip"), &second);
    // A package whose sidecar does not match: rejected, quarantined, an incident.
    let c4 = c2.plus_minutes(30);
    let fourth = packages::zip_bytes(&packages::increment(&c4, 1));
    pkg.put(&c4.name(".zip"), &fourth);
    pkg.put(
        &format!("{}.sha256", c4.name(".zip")),
        packages::sidecar_for(&c4.name(".zip"), b"other").as_bytes(),
    );
    wait_for("the rejection", Duration::from_secs(20), || {
        kinds(&srv).contains(&"package-rejected".to_owned())
    })
    .await;
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(srv.root().join("data/state/sources/ine.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        state["seen"][c2.plus_minutes(15).name(".zip")]["result"],
        "already in history"
    );
    assert!(
        state["seen"][c4.name(".zip")]["result"]
            .as_str()
            .unwrap()
            .starts_with("rejected")
    );
    assert_eq!(manifests(&srv).len(), 2, "nothing processed twice");
    assert!(
        std::fs::read_dir(srv.root().join("data/quarantine"))
            .unwrap()
            .any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(&c4.stem()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_url_is_polled_conditionally_and_an_interrupted_download_resumes() {
    let pkg = PkgServer::start().await;
    let path = "prep/ultimo/20240602_2000_PREP.zip";
    // A big enough package that half of it is a real transfer.
    let first = packages::zip_bytes(&packages::big_site(&CUT, 1));
    assert!(first.len() > 1 << 20, "{}", first.len());
    pkg.put(path, &first);
    pkg.cut_off_next(path, first.len() / 2);
    let srv = server_with_source(
        &pkg,
        &format!("name = \"ultimo\"\nurl = \"{}\"\n", pkg.url(path)),
    )
    .await;
    wait_for("the cut", Duration::from_secs(30), || {
        manifests(&srv).len() == 1
    })
    .await;
    let m = &manifests(&srv)[0];
    assert_eq!(
        m.sha256,
        packages::sha256_hex(&first),
        "resumed bytes are the package"
    );
    let seen: Vec<_> = pkg
        .seen()
        .into_iter()
        .filter(|s| s.path == format!("/{path}"))
        .collect();
    let resume = seen
        .iter()
        .find(|s| s.header("range").is_some())
        .expect("the interrupted download was resumed, not restarted");
    // From what reached the disk before the cut (at most what the server sent).
    let from: usize = resume
        .header("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .expect("bytes=N-");
    assert!(from > 0 && from <= first.len() / 2, "resumed from {from}");
    assert!(resume.header("if-range").is_some());
    assert!(m.transfer_mb_per_s >= 0.0);
    // The interruption was a failure of the source, and it recovered.
    let k = kinds(&srv);
    assert_eq!(
        k.iter().filter(|k| *k == "source-failed").count(),
        1,
        "{k:?}"
    );
    wait_for("recovered", Duration::from_secs(5), || {
        kinds(&srv).contains(&"source-recovered".to_owned())
    })
    .await;
    // Later polls are conditional and fetch nothing.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let polls: Vec<_> = pkg
        .seen()
        .into_iter()
        .filter(|s| s.path == format!("/{path}"))
        .collect();
    assert!(polls.len() > seen.len());
    assert!(polls.last().unwrap().header("if-none-match").is_some());
    assert_eq!(manifests(&srv).len(), 1);
    // The institute replaces the package at the same URL: a new cut.
    let second = packages::zip_bytes(&packages::increment(&CUT.plus_minutes(15), 1));
    pkg.put(path, &second);
    wait_for("the second cut", Duration::from_secs(10), || {
        manifests(&srv).len() == 2
    })
    .await;
    assert_eq!(manifests(&srv)[1].sha256, packages::sha256_hex(&second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_source_raises_one_incident_then_recovers() {
    let pkg = PkgServer::start().await;
    pkg.outage(Some(503));
    let srv = server_with_source(
        &pkg,
        &format!("name = \"caido\"\nlisting_url = \"{}\"\n", pkg.url("list/")),
    )
    .await;
    wait_for("several polls", Duration::from_secs(10), || {
        pkg.seen().len() >= 4
    })
    .await;
    let failed = the_one_source_failed(&srv, "one incident per outage, not per poll");
    assert_eq!(failed.subject.as_deref(), Some("caido"));
    assert!(failed.reason.contains("503"), "{}", failed.reason);
    pkg.outage(None);
    pkg.put(
        &CUT.name(".zip"),
        &packages::zip_bytes(&packages::full_site(&CUT, 1)),
    );
    wait_for("recovered and published", Duration::from_secs(15), || {
        kinds(&srv).contains(&"source-recovered".to_owned()) && manifests(&srv).len() == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_source_picks_up_packages_put_in_the_institutes_bucket() {
    let garage = common::garage::Garage::start().await;
    let first = packages::zip_bytes(&packages::full_site(&CUT, 1));
    let c2 = CUT.plus_minutes(15);
    let second = packages::tar_gz_bytes(&packages::increment(&c2, 1));
    garage
        .put(&format!("paquetes/{}", CUT.name(".zip")), &first, None)
        .await;
    garage
        .put(&format!("paquetes/{}", c2.name(".tar.gz")), &second, None)
        .await;
    let sidecar = packages::sidecar_for(&c2.name(".tar.gz"), &second);
    garage
        .put(
            &format!("paquetes/{}.sha256", c2.name(".tar.gz")),
            sidecar.as_bytes(),
            None,
        )
        .await;
    garage
        .put("paquetes/LEEME.txt", b"not a package", None)
        .await;
    garage
        .put("otro/20240602_2100_PREP.zip", &first, None)
        .await;
    let (srv, _creds) = server_with_s3_source(&garage, |_| {}).await;
    wait_for("two cuts from the bucket", Duration::from_secs(20), || {
        manifests(&srv).len() == 2
    })
    .await;
    let m = manifests(&srv);
    assert_eq!(m[0].original_name, CUT.name(".zip"));
    assert_eq!(m[1].original_name, c2.name(".tar.gz"));
    assert_eq!(m[1].sha256, packages::sha256_hex(&second));
    assert!(m.iter().all(|m| m.uploader == "source:ieqroo"), "{m:?}");
    // A new package in the bucket is published on a later poll; nothing is fetched twice.
    let c3 = c2.plus_minutes(15);
    let third = packages::zip_bytes(&packages::increment(&c3, 1));
    garage
        .put(&format!("paquetes/{}", c3.name(".zip")), &third, None)
        .await;
    wait_for("the third cut", Duration::from_secs(15), || {
        manifests(&srv).len() == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(manifests(&srv).len(), 3);
    assert!(
        !kinds(&srv).iter().any(|k| k == "source-failed"),
        "{:?}",
        kinds(&srv)
    );
    let store = srv.running.pipeline.store();
    assert_eq!(
        store.live().as_deref(),
        Some(manifests(&srv)[2].cut_id.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_download_resumes_its_partial_and_a_resume_that_went_bad_is_fetched_again() {
    use object_store::ObjectStoreExt;
    let garage = common::garage::Garage::start().await;
    // Two packages, each with its sidecar. The server starts with a partial of each, as a
    // run killed mid-download leaves them (`state/sources/<name>/partial/<file>` + `.meta`
    // holding the ETag it was listed with).
    let c1 = CUT;
    let c2 = CUT.plus_minutes(15);
    let one = packages::zip_bytes(&packages::full_site(&c1, 1));
    let two = packages::zip_bytes(&packages::increment(&c2, 1));
    for (cut, bytes) in [(&c1, &one), (&c2, &two)] {
        let name = cut.name(".zip");
        garage.put(&format!("paquetes/{name}"), bytes, None).await;
        let sc = packages::sidecar_for(&name, bytes);
        garage
            .put(&format!("paquetes/{name}.sha256"), sc.as_bytes(), None)
            .await;
    }
    let etag = |key: String| {
        let c = garage.client();
        async move {
            c.head(&object_store::path::Path::parse(key).unwrap())
                .await
                .unwrap()
                .e_tag
                .expect("Garage lists an ETag")
        }
    };
    let etag_two = etag(format!("paquetes/{}", c2.name(".zip"))).await;
    // Package 1: a partial of another version of the object (its ETag differs) — it must
    // not be resumed. Package 2: a partial of this very version whose bytes went bad on
    // disk — resumed (only the rest is fetched), so it disagrees with its sidecar, and must
    // then be fetched again whole.
    let stale: Vec<u8> = vec![b'x'; one.len() / 2];
    let mut bad_prefix = two[..two.len() / 2].to_vec();
    for b in bad_prefix.iter_mut().take(64) {
        *b ^= 0xff;
    }
    let (n1, n2) = (c1.name(".zip"), c2.name(".zip"));
    let (srv, _creds) = server_with_s3_source(&garage, |dir| {
        let partial = dir.join("data/state/sources/ieqroo/partial");
        std::fs::create_dir_all(&partial).unwrap();
        std::fs::write(partial.join(&n1), &stale).unwrap();
        std::fs::write(partial.join(format!("{n1}.meta")), "\"0123456789abcdef\"").unwrap();
        std::fs::write(partial.join(&n2), &bad_prefix).unwrap();
        std::fs::write(partial.join(format!("{n2}.meta")), &etag_two).unwrap();
    })
    .await;
    wait_for("both packages published", Duration::from_secs(30), || {
        manifests(&srv).len() == 2
    })
    .await;
    let m = manifests(&srv);
    assert_eq!(m[0].original_name, n1);
    assert_eq!(
        m[0].sha256,
        packages::sha256_hex(&one),
        "the stale partial was not resumed"
    );
    assert_eq!(m[1].original_name, n2);
    assert_eq!(
        m[1].sha256,
        packages::sha256_hex(&two),
        "fetched again whole"
    );
    // The bad resume is the one incident (an operator should know a download went bad), then
    // the source recovers; nothing is quarantined.
    let failed = the_one_source_failed(&srv, "the bad resume");
    assert!(
        failed.reason.contains(&n2) && failed.reason.contains("resumed download"),
        "{}",
        failed.reason
    );
    wait_for("source-recovered", Duration::from_secs(10), || {
        kinds(&srv).contains(&"source-recovered".to_owned())
    })
    .await;
    assert!(
        !kinds(&srv).contains(&"package-rejected".to_owned()),
        "{:?}",
        kinds(&srv)
    );
    let left = std::fs::read_dir(srv.root().join("data/state/sources/ieqroo/partial"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "no partial left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_resume_that_disagrees_with_its_sidecar_is_fetched_again_whole() {
    let pkg = PkgServer::start().await;
    let path = "prep/ultimo/20240602_2000_PREP.zip";
    let bytes = packages::zip_bytes(&packages::full_site(&CUT, 1));
    pkg.put(path, &bytes);
    pkg.put(
        &format!("{path}.sha256"),
        packages::sidecar_for("20240602_2000_PREP.zip", &bytes).as_bytes(),
    );
    // What a killed run left: the first half of this very version (its ETag in `.meta`),
    // whose bytes then went bad on disk.
    let etag = format!("\"{}\"", &packages::sha256_hex(&bytes)[..16]);
    let mut bad_prefix = bytes[..bytes.len() / 2].to_vec();
    for b in bad_prefix.iter_mut().take(64) {
        *b ^= 0xff;
    }
    let half = bad_prefix.len();
    let srv = server_with_source_seeded(
        &pkg,
        &format!("name = \"ultimo\"\nurl = \"{}\"\n", pkg.url(path)),
        |dir| {
            let partial = dir.join("data/state/sources/ultimo/partial");
            std::fs::create_dir_all(&partial).unwrap();
            std::fs::write(partial.join("package"), &bad_prefix).unwrap();
            std::fs::write(partial.join("package.meta"), &etag).unwrap();
        },
    )
    .await;
    wait_for("the cut", Duration::from_secs(30), || {
        manifests(&srv).len() == 1
    })
    .await;
    assert_eq!(manifests(&srv)[0].sha256, packages::sha256_hex(&bytes));
    let gets: Vec<_> = pkg
        .seen()
        .into_iter()
        .filter(|s| s.path == format!("/{path}"))
        .collect();
    assert_eq!(
        gets.first().and_then(|s| s.header("range")),
        Some(format!("bytes={half}-").as_str()),
        "the partial was resumed first"
    );
    assert!(
        gets.iter().skip(1).any(|s| s.header("range").is_none()),
        "then fetched again whole"
    );
    let failed = the_one_source_failed(&srv, "the bad resume");
    assert!(
        failed.reason.contains("resumed download"),
        "{}",
        failed.reason
    );
    assert!(
        !kinds(&srv).contains(&"package-rejected".to_owned()),
        "{:?}",
        kinds(&srv)
    );
}

/// The race between an S3 source's listing and its ranged GET: when the object is replaced
/// in between, the GET carries the listed ETag (`If-Match`), so the bucket refuses to send the
/// new version's bytes and nothing is appended to the old version's partial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_replaced_after_the_listing_is_never_appended_to_the_old_partial() {
    use difusor::mirror::client::{Bucket, Credentials};
    use difusor::mirror::config::RawS3Target;
    let g = common::garage::Garage::start().await;
    let dir = tempfile::tempdir().unwrap();
    let creds_file = dir.path().join("s3.credentials");
    g.write_credentials_file(&creds_file);
    let raw: RawS3Target = toml::from_str(&format!(
        "name = \"inst\"\nendpoint = \"{}\"\nallow_http = true\nregion = \"{}\"\n\
         bucket = \"{}\"\nprefix = \"paquetes/\"\ncredentials_file = \"{}\"\n",
        g.endpoint(),
        g.region(),
        g.bucket,
        creds_file.display()
    ))
    .unwrap();
    let target = raw.validate_as("sources.s3", dir.path()).unwrap();
    let bucket = Bucket::new(
        &target,
        &Credentials::load("inst", &target.credentials).unwrap(),
    )
    .unwrap();
    let key = "20240602_2015_PREP.zip";
    let v1: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let v2: Vec<u8> = (0..100_000u32).map(|i| (i % 241) as u8).collect();
    g.put(&format!("paquetes/{key}"), &v1, None).await;
    let listed = bucket.list().await.unwrap();
    let etag_v1 = listed
        .iter()
        .find(|o| o.key == key)
        .and_then(|o| o.e_tag.clone())
        .expect("listed with an ETag");

    // A killed run left the first half of v1; then the institute replaced the package.
    let partial = dir.path().join("partial");
    std::fs::write(&partial, &v1[..50_000]).unwrap();
    g.put(&format!("paquetes/{key}"), &v2, None).await;
    let refused = bucket
        .download_to(key, &partial, 50_000, Some(&etag_v1))
        .await;
    assert!(
        matches!(
            refused,
            Err(difusor::mirror::client::BucketError::Remote(
                object_store::Error::Precondition { .. }
            ))
        ),
        "a ranged GET for the listed version must be refused (412) once it changed: {refused:?}"
    );
    assert_eq!(
        std::fs::read(&partial).unwrap(),
        &v1[..50_000],
        "nothing of v2 was appended to v1's half"
    );

    // The next poll lists v2's ETag and resumes (here: from the same offset) with v2's bytes.
    let etag_v2 = bucket
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|o| o.key == key)
        .and_then(|o| o.e_tag)
        .unwrap();
    assert_ne!(etag_v1, etag_v2);
    let fresh = dir.path().join("fresh");
    std::fs::write(&fresh, &v2[..50_000]).unwrap();
    let n = bucket
        .download_to(key, &fresh, 50_000, Some(&etag_v2))
        .await
        .unwrap();
    assert_eq!(n, 50_000);
    assert_eq!(std::fs::read(&fresh).unwrap(), v2);
}
