//! Fuzz target for the package extractor: arbitrary bytes as a `.zip` or `.tar.gz` package.
//!
//! Checks, beyond "no panic, no hang, bounded memory": `verify_only` and `extract` reach the
//! same verdict; an accepted package's `written` paths are regular files inside the cut; and
//! nothing at all appears outside the cut directory.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The extractor is compiled straight from the main crate's sources: it depends on nothing else
// of the crate, and this keeps the fuzz build small (no SSH/TLS stack under sanitizers).
#[path = "../../src/ingest/extract/mod.rs"]
#[allow(dead_code)]
mod extract;

use extract::{Format, Limits};

fuzz_target!(|data: &[u8]| {
    // First byte: bit 0 selects the format, bit 1 allows links.
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let (format, name) = if sel & 1 == 0 {
        (Format::Zip, "20240602_2015_PREP.zip")
    } else {
        (Format::TarGz, "20240602_2015_PREP.tar.gz")
    };
    // Small limits keep each run fast; the limit logic is the same at any size.
    let limits = Limits {
        max_total_bytes: 16 << 20,
        max_entries: 2_000,
        max_ratio: 200,
        allow_links: sel & 2 != 0,
    };
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    let pkg = base.path().join(name);
    std::fs::write(&pkg, body).unwrap();
    let dest = base.path().join("cut");
    std::fs::create_dir(&dest).unwrap();

    let _ = extract::detect_format(&pkg, name);
    let verified = extract::verify_only(&pkg, format, &limits);
    let extracted = extract::extract(&pkg, format, &dest, &limits);
    assert_eq!(
        verified
            .as_ref()
            .map(|x| (x.files, x.entries))
            .map_err(|e| e.kind()),
        extracted
            .as_ref()
            .map(|x| (x.files, x.entries))
            .map_err(|e| e.kind()),
        "verify_only and extract disagree"
    );
    if let Ok(x) = &extracted {
        assert_eq!(x.written.len() as u64, x.files);
        for p in &x.written {
            let m = std::fs::symlink_metadata(dest.join(p)).unwrap();
            assert!(m.is_file(), "{p} is not a regular file");
        }
    }
    // Nothing outside the cut: the temp dir holds exactly the package and the cut.
    let mut names: Vec<_> = std::fs::read_dir(base.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want = vec!["cut".to_string(), name.to_string()];
    want.sort();
    assert_eq!(names, want, "something was written outside the cut");
});
