//! The extractor against hostile packages and against packages shaped like the real PREP ones.
//!
//! - every entry of `hostile_corpus()` gets exactly its expected `ExtractError::kind()` (or is
//!   accepted, for "ok"; sidecar mismatches are the pipeline's check and are skipped here), and a
//!   refused package leaves nothing behind outside the cut directory: not in the directories
//!   around it, not in the absolute/escape targets the corpus aims at;
//! - accepted tricky packages are neutralised: CP437 (zip) and Latin-1 (tar) names decoded to
//!   UTF-8, setuid/world-writable modes normalised to 0644, `./` prefixes stripped, GNU LongLink
//!   and PAX long names honoured, data-descriptor zips read;
//! - full-site and increment packages, zip and tar.gz, extract every file byte-identical;
//! - the real Quintana Roo 2019 package extracts byte-identical to `unzip -p`;
//! - the generators are deterministic, and standard tools (`unzip -t`, `gzip -t`, `tar t`)
//!   accept what they write.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::packages::*;
use difusor::ingest::extract::{self, Format, Limits};

const FIXTURE: &str = "tests/fixtures/20190603_0547_PREP_DIP_QROO.zip";

/// Everything under `root` except the subtree `exclude`: path → kind, size, mode, links, bytes.
fn snapshot(root: &Path, exclude: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p == exclude {
                continue;
            }
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let ft = m.file_type();
            let what = if ft.is_symlink() {
                format!("link -> {:?}", std::fs::read_link(&p).ok())
            } else if ft.is_dir() {
                stack.push(p.clone());
                format!("dir {:o}", m.mode())
            } else if ft.is_file() {
                let bytes = std::fs::read(&p).unwrap_or_default();
                format!(
                    "file {:o} nlink {} {}",
                    m.mode(),
                    m.nlink(),
                    sha256_hex(&bytes)
                )
            } else {
                format!("special {:o}", m.mode())
            };
            out.insert(p, what);
        }
    }
    out
}

/// The escape targets of the corpus: `ESCAPE_DIR` with a file a hard link could capture.
fn prepare_escape_dir() {
    std::fs::create_dir_all(ESCAPE_DIR).unwrap();
    let target = Path::new(ESCAPE_DIR).join("hardlink-target");
    if !target.exists() {
        std::fs::write(&target, b"original\n").unwrap();
    }
}

/// Paths the corpus aims at that must never appear (relative escapes from the dest).
fn escape_probes(parent: &Path) -> Vec<PathBuf> {
    let mut v = vec![
        Path::new(ESCAPE_DIR).join("absolute-zip"),
        Path::new(ESCAPE_DIR).join("absolute-tgz"),
        Path::new(ESCAPE_DIR).join("symlink-escape-tgz"),
        Path::new(ESCAPE_DIR).join("symlink-absolute-tgz"),
        Path::new(ESCAPE_DIR).join("symlink-escape-zip"),
    ];
    // `../../x`, `json/../../x`, `../../pax-x` from dest = parent/l1/l2/l3/l4/dest.
    let mut d = parent.join("l1/l2/l3/l4/dest");
    for _ in 0..5 {
        d = d.parent().unwrap().to_path_buf();
        v.push(d.join("x"));
        v.push(d.join("pax-x"));
    }
    v
}

struct Outcome {
    kind: String,
    detail: String,
    elapsed: Duration,
    /// What changed outside dest (empty when nothing did).
    escaped: Vec<String>,
    /// For accepted packages: problems with what landed in dest.
    content: Vec<String>,
}

/// Writes the package, runs detect_format + extract into parent/l1/l2/l3/l4/dest with the
/// default limits, and checks what happened around dest.
fn run_entry(h: &Hostile) -> Outcome {
    prepare_escape_dir();
    let pkg_dir = tempfile::tempdir().unwrap();
    let pkg = pkg_dir.path().join(&h.file_name);
    std::fs::write(&pkg, &h.bytes).unwrap();
    let parent = tempfile::tempdir().unwrap();
    let deep = parent.path().join("l1/l2/l3/l4");
    let dest = deep.join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(parent.path().join("canary.txt"), b"canary\n").unwrap();
    std::fs::create_dir_all(deep.join("sibling")).unwrap();
    std::fs::write(deep.join("sibling/keep.txt"), b"keep\n").unwrap();
    let before = snapshot(parent.path(), &dest);
    let escape_before = snapshot(Path::new(ESCAPE_DIR), Path::new("/nonexistent"));

    let t = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let format = extract::detect_format(&pkg, &h.file_name)?;
        extract::extract(&pkg, format, &dest, &Limits::default())
    }));
    let elapsed = t.elapsed();
    let (kind, detail, extracted) = match result {
        Ok(Ok(x)) => ("ok".to_string(), String::new(), Some(x)),
        Ok(Err(e)) => (e.kind().to_string(), e.to_string(), None),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            ("panic".to_string(), msg, None)
        }
    };

    let mut escaped = Vec::new();
    let after = snapshot(parent.path(), &dest);
    diff_into(&before, &after, &mut escaped);
    let escape_after = snapshot(Path::new(ESCAPE_DIR), Path::new("/nonexistent"));
    diff_into(&escape_before, &escape_after, &mut escaped);
    for p in escape_probes(parent.path()) {
        if std::fs::symlink_metadata(&p).is_ok() {
            escaped.push(format!("{} exists", p.display()));
        }
    }
    let mut content = Vec::new();
    if let Some(x) = extracted {
        check_accepted(h, &dest, &x, &mut content);
    }
    Outcome {
        kind,
        detail,
        elapsed,
        escaped,
        content,
    }
}

fn diff_into(
    before: &BTreeMap<PathBuf, String>,
    after: &BTreeMap<PathBuf, String>,
    out: &mut Vec<String>,
) {
    for (p, a) in after {
        match before.get(p) {
            None => out.push(format!("created {} ({a})", p.display())),
            Some(b) if b != a => out.push(format!("changed {} ({b} -> {a})", p.display())),
            _ => {}
        }
    }
    for p in before.keys() {
        if !after.contains_key(p) {
            out.push(format!("removed {}", p.display()));
        }
    }
}

/// Every file, directory, link or special file under `dest`, relative, with its metadata.
fn tree_of(dest: &Path) -> BTreeMap<String, std::fs::Metadata> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dest.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_dir() {
                stack.push(p.clone());
            }
            let rel = p.strip_prefix(dest).unwrap().to_string_lossy().into_owned();
            out.insert(rel, m);
        }
    }
    out
}

/// Checks an accepted package's tree: generic rules for all, plus the decoded names and
/// normalised modes of the tricky ones.
fn check_accepted(h: &Hostile, dest: &Path, x: &extract::Extracted, problems: &mut Vec<String>) {
    let tree = tree_of(dest);
    let mut files = 0u64;
    for (rel, m) in &tree {
        let ft = m.file_type();
        let mode = m.mode() & 0o7777;
        if ft.is_file() {
            files += 1;
            if mode != 0o644 {
                problems.push(format!("{rel}: mode {mode:o}, want 644"));
            }
        } else if ft.is_dir() {
            if mode & 0o7002 != 0 {
                problems.push(format!("{rel}/: directory mode {mode:o}"));
            }
        } else {
            problems.push(format!("{rel}: neither file nor directory ({:?})", ft));
        }
    }
    if files != x.files {
        problems.push(format!(
            "Extracted.files = {} but {files} files on disk",
            x.files
        ));
    }
    let want: Vec<(String, Vec<u8>)> = match h.name {
        "control-zip"
        | "control-tgz"
        | "sidecar-ok"
        | "data-descriptor-zip"
        | "bad-sidecar"
        | "malformed-sidecar" => mini_files(&CutTime::parse(&h.file_name).unwrap()),
        "dot-slash-tgz" => vec![
            ("index.html".into(), b"<html></html>\n".to_vec()),
            (
                "json/main.json".into(),
                Site::new(1).main_json(&CutTime::parse(&h.file_name).unwrap()),
            ),
        ],
        "long-names-ok-tgz" => vec![
            (long_ok_name("gnu"), b"gnu\n".to_vec()),
            (long_ok_name("pax"), b"pax\n".to_vec()),
        ],
        "utf8-names-zip" => vec![
            ("Año_2024.txt".into(), b"utf8\n".to_vec()),
            ("estadística/Mérida.json".into(), b"{}\n".to_vec()),
        ],
        "cp437-names-zip" => vec![
            ("Año_2024.txt".into(), b"cp437\n".to_vec()),
            ("estadística/Mérida.json".into(), b"{}\n".to_vec()),
        ],
        "latin1-names-tgz" => vec![
            ("Año_2024.txt".into(), b"latin1\n".to_vec()),
            ("estadística/Mérida.json".into(), b"{}\n".to_vec()),
        ],
        "setuid-zip" => ["bin/suid", "bin/sgid", "bin/world", "bin/all"]
            .iter()
            .map(|n| (n.to_string(), b"#!/bin/sh\n".to_vec()))
            .collect(),
        "setuid-tgz" => ["tmp/suid", "tmp/sgid", "tmp/world", "tmp/all"]
            .iter()
            .map(|n| (n.to_string(), b"#!/bin/sh\n".to_vec()))
            .collect(),
        other => {
            problems.push(format!(
                "no content expectations for accepted entry {other}"
            ));
            Vec::new()
        }
    };
    for (rel, data) in &want {
        match std::fs::read(dest.join(rel)) {
            Ok(got) if &got == data => {}
            Ok(got) => problems.push(format!(
                "{rel}: {} bytes, want {} bytes",
                got.len(),
                data.len()
            )),
            Err(e) => problems.push(format!(
                "{rel}: {e} (on disk: {:?})",
                tree.keys().collect::<Vec<_>>()
            )),
        }
    }
    if h.name == "long-names-ok-tgz" && tree.contains_key("pax-placeholder") {
        problems.push("the PAX path was ignored: pax-placeholder written".into());
    }
}

#[test]
fn corpus_entries_get_their_expected_kind_and_touch_nothing_outside() {
    let t = Instant::now();
    let corpus = hostile_corpus();
    println!(
        "corpus: {} entries built in {:?}",
        corpus.len(),
        t.elapsed()
    );
    let mut failures = Vec::new();
    let mut lines = Vec::new();
    for h in &corpus {
        if h.expect_kind == "checksum" {
            lines.push(format!(
                "SKIP {:28} {:20} (sidecar check: pipeline)",
                h.name, h.expect_kind
            ));
            continue;
        }
        let o = run_entry(h);
        let kind_ok = o.kind == h.expect_kind;
        let pass = kind_ok && o.escaped.is_empty() && o.content.is_empty();
        lines.push(format!(
            "{} {:28} want {:20} got {:20} {:>8.1?} {}",
            if pass { "PASS" } else { "FAIL" },
            h.name,
            h.expect_kind,
            o.kind,
            o.elapsed,
            o.detail.chars().take(160).collect::<String>()
        ));
        if !kind_ok {
            failures.push(format!(
                "{}: expected {:?}, got {:?}: {}",
                h.name, h.expect_kind, o.kind, o.detail
            ));
        }
        for e in &o.escaped {
            failures.push(format!("{}: WROTE OUTSIDE dest: {e}", h.name));
        }
        for c in &o.content {
            failures.push(format!("{}: accepted content: {c}", h.name));
        }
    }
    println!("{}", lines.join("\n"));
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn corpus_is_well_formed() {
    const KINDS: [&str; 18] = [
        "wrong-format",
        "truncated",
        "corrupt",
        "unsafe-path",
        "link-escape",
        "link-not-allowed",
        "special-file",
        "duplicate-path",
        "name-too-long",
        "too-many-entries",
        "too-large",
        "ratio-exceeded",
        "empty-archive",
        "overlapping-entries",
        "encrypted",
        "unsupported",
        "checksum",
        "ok",
    ];
    let t = Instant::now();
    let corpus = hostile_corpus();
    let built = t.elapsed();
    let mut names = BTreeSet::new();
    let mut files = BTreeSet::new();
    let mut kinds = BTreeSet::new();
    for h in &corpus {
        assert!(names.insert(h.name), "duplicate corpus name {}", h.name);
        assert!(
            files.insert(h.file_name.clone()),
            "duplicate file name {}",
            h.file_name
        );
        assert!(
            KINDS.contains(&h.expect_kind),
            "{}: unknown kind {}",
            h.name,
            h.expect_kind
        );
        assert!(
            CutTime::parse(&h.file_name).is_some(),
            "{}: {}",
            h.name,
            h.file_name
        );
        assert_eq!(
            h.sidecar.is_some(),
            h.expect_kind == "checksum" || h.name == "sidecar-ok"
        );
        kinds.insert(h.expect_kind);
    }
    assert!(corpus.len() >= 25, "{} entries", corpus.len());
    let missing: Vec<_> = KINDS.iter().filter(|k| !kinds.contains(*k)).collect();
    assert!(missing.is_empty(), "no corpus entry for {missing:?}");
    // Debug builds: a few seconds at most (the 200,001-entry archives dominate).
    assert!(built < Duration::from_secs(20), "corpus took {built:?}");
}

/// Extracts `files` packed by `pack` and checks every file landed byte-identical.
fn roundtrip(label: &str, files: &[(String, Vec<u8>)], bytes: Vec<u8>, file_name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join(file_name);
    std::fs::write(&pkg, &bytes).unwrap();
    let dest = dir.path().join("cut");
    std::fs::create_dir(&dest).unwrap();
    let format = extract::detect_format(&pkg, file_name).unwrap();
    assert_eq!(
        format,
        if file_name.ends_with(".zip") {
            Format::Zip
        } else {
            Format::TarGz
        }
    );
    let t = Instant::now();
    let x = extract::extract(&pkg, format, &dest, &Limits::default())
        .unwrap_or_else(|e| panic!("{label}: {} {e}", e.kind()));
    println!(
        "{label}: {} files, {} bytes from {} in {:?}",
        x.files,
        x.uncompressed_bytes,
        bytes.len(),
        t.elapsed()
    );
    assert_eq!(x.files, files.len() as u64, "{label}: Extracted.files");
    assert_eq!(x.written.len(), files.len(), "{label}: Extracted.written");
    let on_disk: Vec<_> = tree_of(&dest)
        .into_iter()
        .filter(|(_, m)| m.is_file())
        .map(|(p, _)| p)
        .collect();
    assert_eq!(on_disk.len(), files.len(), "{label}: files on disk");
    let total: u64 = files.iter().map(|f| f.1.len() as u64).sum();
    assert_eq!(x.uncompressed_bytes, total, "{label}: uncompressed bytes");
    for (p, data) in files {
        let got = std::fs::read(dest.join(p)).unwrap_or_else(|e| panic!("{label}: {p}: {e}"));
        assert!(&got == data, "{label}: {p} differs");
    }
}

#[test]
fn full_site_and_increment_extract_every_file_byte_identical() {
    let cut = CutTime::example();
    let full = full_site(&cut, 42);
    assert!(full.len() > 300, "{} files", full.len());
    roundtrip("full zip", &full, zip_bytes(&full), &cut.name(".zip"));
    roundtrip(
        "full tar.gz",
        &full,
        tar_gz_bytes(&full),
        &cut.name(".tar.gz"),
    );
    let next = cut.plus_minutes(15);
    let inc = increment(&next, 42);
    roundtrip("increment zip", &inc, zip_bytes(&inc), &next.name(".zip"));
    roundtrip(
        "increment tar.gz",
        &inc,
        tar_gz_bytes(&inc),
        &next.name(".tar.gz"),
    );
}

#[test]
#[ignore = "benchmark-sized (~40 MB); run with --ignored"]
fn big_site_extracts_every_file_byte_identical() {
    let cut = CutTime::example();
    let t = Instant::now();
    let big = big_site(&cut, 7);
    let zip = zip_bytes(&big);
    println!(
        "big_site: {} files, zip {} bytes, built in {:?}",
        big.len(),
        zip.len(),
        t.elapsed()
    );
    roundtrip("big zip", &big, zip, &cut.name(".zip"));
}

#[test]
fn real_fixture_extracts_byte_identical_to_unzip() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("cut");
    std::fs::create_dir(&dest).unwrap();
    let pkg = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    let name = "20190603_0547_PREP_DIP_QROO.zip";
    let format = extract::detect_format(&pkg, name).unwrap();
    assert_eq!(format, Format::Zip);
    let x = extract::extract(&pkg, format, &dest, &Limits::default()).unwrap();
    assert_eq!(x.files, 3);
    let names = [
        "LEEME.txt",
        "QROO_DIP_LOC_2019.csv",
        "QROO_DIP_CANDIDATURAS_2019.csv",
    ];
    assert_eq!(
        x.written
            .iter()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        names.into_iter().collect::<BTreeSet<_>>()
    );
    let sizes = [19_082usize, 681_462, 18_712];
    for (n, size) in names.iter().zip(sizes) {
        let got = std::fs::read(dest.join(n)).unwrap();
        assert_eq!(got.len(), size, "{n}");
        match Command::new("unzip").arg("-p").arg(&pkg).arg(n).output() {
            Ok(o) if o.status.success() => assert!(o.stdout == got, "{n} differs from unzip -p"),
            Ok(o) => panic!("unzip -p failed: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => println!("unzip not available ({e}); sizes checked only"),
        }
        let mode = std::fs::metadata(dest.join(n))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(mode, 0o644, "{n}: the archive says 0666, the cut gets 0644");
    }
    let csv = std::fs::read(dest.join("QROO_DIP_LOC_2019.csv")).unwrap();
    assert!(csv.starts_with(b"sep=|\nDIPUTACIONES LOCALES\n2019/06/03 05:47 (UTC-5)\n"));
}

/// Runs a standard tool on bytes written to a temp file; None if the tool is missing.
fn tool_accepts(prog: &str, args: &[&str], bytes: &[u8], name: &str) -> Option<bool> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    let out = Command::new(prog).args(args).arg(&p).output().ok()?;
    if !out.status.success() {
        println!(
            "{prog} {args:?} {name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Some(out.status.success())
}

#[test]
fn generated_archives_pass_standard_tools() {
    let cut = CutTime::example();
    let full = full_site(&cut, 3);
    let nested = &full
        .iter()
        .find(|(p, _)| p == &format!("assets/{}", cut.name(".zip")))
        .expect("nested database zip")
        .1;
    let checks: Vec<(&str, Vec<&str>, Vec<u8>, &str)> = vec![
        ("unzip", vec!["-tq"], zip_bytes(&full), "full.zip"),
        ("unzip", vec!["-tq"], nested.clone(), "nested.zip"),
        (
            "unzip",
            vec!["-tq"],
            zip_bytes(&increment(&cut, 3)),
            "inc.zip",
        ),
        ("gzip", vec!["-t"], tar_gz_bytes(&full), "full.tar.gz"),
        ("tar", vec!["-tzf"], tar_gz_bytes(&full), "full.tar.gz"),
        (
            "unzip",
            vec!["-tq"],
            many_entries_zip(70_000, &cut),
            "zip64-count.zip",
        ),
    ];
    for (prog, args, bytes, name) in checks {
        match tool_accepts(prog, &args, &bytes, name) {
            Some(ok) => assert!(ok, "{prog} rejects {name}"),
            None => println!("{prog} not installed: {name} not checked"),
        }
    }
}

#[test]
fn generators_are_deterministic_and_follow_the_night() {
    let cut = CutTime::example();
    assert_eq!(cut.name(".zip"), "20240602_2015_PREP.zip");
    assert_eq!(
        cut.name("_DIP_QROO.tar.gz"),
        "20240602_2015_PREP_DIP_QROO.tar.gz"
    );
    assert_eq!(
        CutTime::parse("20190603_0547_PREP_DIP_QROO.zip"),
        Some(CutTime::new(2019, 6, 3, 5, 47))
    );
    assert_eq!(
        CutTime::new(2024, 6, 30, 23, 50).plus_minutes(15),
        CutTime::new(2024, 7, 1, 0, 5)
    );
    assert_eq!(
        CutTime::new(2024, 12, 31, 23, 59).plus_minutes(1),
        CutTime::new(2025, 1, 1, 0, 0)
    );
    assert_eq!(
        CutTime::new(2024, 3, 1, 0, 0).plus_minutes(-1),
        CutTime::new(2024, 2, 29, 23, 59)
    );

    let a = full_site(&cut, 5);
    assert!(a == full_site(&cut, 5), "same cut and seed, same files");
    assert!(zip_bytes(&a) == zip_bytes(&a) && tar_gz_bytes(&a) == tar_gz_bytes(&a));
    assert!(a != full_site(&cut, 6), "another seed, other content");
    let main = String::from_utf8(
        a.iter()
            .find(|f| f.0 == "json/main.json")
            .unwrap()
            .1
            .clone(),
    )
    .unwrap();
    for field in [
        "\"fechaCorte\":\"02/06/2024\"",
        "\"horaCorte\":\"20:15\"",
        "\"archivoCorte\":\"20240602_2015_PREP.zip\"",
        "\"totalActas\":",
        "\"actasCapturadas\":",
    ] {
        assert!(main.contains(field), "{field} in {main}");
    }
    let count = |prefix: &str| a.iter().filter(|f| f.0.starts_with(prefix)).count();
    assert_eq!(count("json/entidad/"), 32);
    assert_eq!(count("json/distrito/"), 300);
    assert!(count("img/") >= 5 && count("fonts/") >= 2 && count("css/") >= 2 && count("js/") >= 2);
    let pages: Vec<_> = a.iter().filter(|f| f.0.ends_with(".html")).collect();
    assert!(pages.len() >= 20 && pages.iter().any(|p| p.0.contains('/')));
    for (p, html) in &pages {
        let html = String::from_utf8_lossy(html);
        assert!(
            html.contains("<title>") && html.contains("css/") && html.contains("js/"),
            "{p}"
        );
    }
    // The CSVs: title, cut line, 13 summary names and values, blank, header, `|` rows with SHA.
    let csv = String::from_utf8(
        a.iter()
            .find(|f| f.0 == "csv/PRES_2024.csv")
            .unwrap()
            .1
            .clone(),
    )
    .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[1], "02/06/2024 20:15 (UTC-6)");
    assert_eq!(lines[2].split('|').count(), 13);
    assert_eq!(lines[3].split('|').count(), 13);
    assert_eq!(lines[4], "");
    let cols = lines[5].split('|').count();
    let sha = lines[5].split('|').position(|c| c == "SHA").unwrap();
    assert!(lines.len() > 6);
    for row in &lines[6..] {
        let f: Vec<&str> = row.split('|').collect();
        assert_eq!(f.len(), cols, "{row}");
        assert!(
            f[sha].len() == 64 && f[sha].bytes().all(|b| b.is_ascii_hexdigit()),
            "{row}"
        );
    }

    // An increment: only json/** and the new database zip; actas grow cut after cut.
    let mut last = 0;
    let site = Site::new(5);
    for i in 0..95 {
        let c = cut.plus_minutes(15 * i);
        let cap = site.actas_capturadas(&c);
        assert!(
            cap > last || (i == 0 && cap > 0),
            "cut {i}: {cap} after {last}"
        );
        assert!(cap <= site.total_actas());
        last = cap;
    }
    let next = cut.plus_minutes(15);
    let inc = increment(&next, 5);
    assert!(
        inc.iter()
            .all(|(p, _)| p.starts_with("json/") || p == &format!("assets/{}", next.name(".zip")))
    );
    assert!(inc.len() == 1 + 32 + 300 + 1);
}

#[test]
fn outside_writes_are_noticed_by_the_snapshot() {
    // The harness itself: a file created, changed or hard-linked next to dest must show up.
    let parent = tempfile::tempdir().unwrap();
    let dest = parent.path().join("l1/dest");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(parent.path().join("keep.txt"), b"a").unwrap();
    let before = snapshot(parent.path(), &dest);
    std::fs::write(dest.join("inside.txt"), b"ignored").unwrap();
    let mut changes = Vec::new();
    diff_into(&before, &snapshot(parent.path(), &dest), &mut changes);
    assert!(changes.is_empty(), "{changes:?}");
    std::fs::write(parent.path().join("l1/x"), b"escaped").unwrap();
    std::fs::hard_link(parent.path().join("keep.txt"), dest.join("captured")).unwrap();
    diff_into(&before, &snapshot(parent.path(), &dest), &mut changes);
    assert_eq!(changes.len(), 2, "{changes:?}");
}
