//! Package checksums: the SHA-256 of the file and the optional `<package>.sha256` sidecar.
//!
//! Owns: reading a sidecar in `sha256sum` format (`<64 hex>  <name>`, or just the hash) and
//! hashing a package in one streaming read.
//! Must never: read the whole package into memory.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Where the sidecar of `package` would be.
pub fn sidecar_path(package: &Path) -> PathBuf {
    PathBuf::from(format!("{}.sha256", package.display()))
}

/// The expected hash from a sidecar's text, lowercase hex.
pub fn parse_sidecar(text: &str) -> Result<String, String> {
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or("the .sha256 file is empty")?;
    let hash = first.split_whitespace().next().unwrap_or("");
    // BSD style: "SHA256 (name) = hash"
    let hash = if first.starts_with("SHA256 (") {
        first.rsplit('=').next().map(str::trim).unwrap_or("")
    } else {
        hash
    };
    if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hash.to_ascii_lowercase())
    } else {
        Err(format!(
            "the .sha256 file does not hold a SHA-256 hash: {:?}",
            first.chars().take(80).collect::<String>()
        ))
    }
}

pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// SHA-256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    to_hex(&Sha256::digest(bytes))
}

/// SHA-256 of a file, streaming.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    // 64 KiB: under malloc's mmap threshold, so hashing many small files (the mirror's scan
    // of an increment) does not pay an mmap/munmap per file; large files hash as fast.
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(buf.get(..n).unwrap_or_default());
    }
    Ok(to_hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_formats() {
        let h = "a".repeat(64);
        assert_eq!(parse_sidecar(&format!("{h}  x.zip\n")).unwrap(), h);
        assert_eq!(
            parse_sidecar(&format!("{}\n", h.to_uppercase())).unwrap(),
            h
        );
        assert_eq!(
            parse_sidecar(&format!("SHA256 (x.zip) = {h}\n")).unwrap(),
            h
        );
        assert!(parse_sidecar("").is_err());
        assert!(parse_sidecar("abc  x.zip").is_err());
    }

    #[test]
    fn hashes_a_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
