#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]
//! Test-only archive writers: zip and tar built byte by byte, so tests can write exactly the
//! broken or hostile archives that real writers refuse to produce (lying sizes, shared data,
//! `../` names, devices, CP437 names...).
//!
//! Must never be compiled outside `cfg(test)`.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::{DeflateEncoder, GzEncoder};

use super::{ExtractError, Extracted, Format, Limits};

pub const S_IFREG: u32 = 0o100000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFIFO: u32 = 0o010000;

/// The default limits with links allowed (inside the cut).
pub fn links() -> Limits {
    Limits {
        allow_links: true,
        ..Limits::default()
    }
}

pub fn deflate(data: &[u8]) -> Vec<u8> {
    // Level 6: zlib-rs' level 1 only reaches ~100:1 on zeros, too little for bomb tests.
    let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A deterministic, poorly compressible byte string.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// One zip entry as `zip()` writes it.
#[derive(Clone, Debug)]
pub struct Z {
    pub name: Vec<u8>,
    pub data: Vec<u8>,
    /// 0 stored, 8 deflate (others are written as stored bytes with that method number).
    pub method: u16,
    pub flags: u16,
    pub made_by: u16,
    pub ext_attrs: u32,
    /// Bit 3 + a signed data descriptor after the data.
    pub descriptor: bool,
    pub local_extra: Vec<u8>,
    pub central_extra: Vec<u8>,
    /// Replaces the compressed bytes.
    pub raw: Option<Vec<u8>>,
    /// Overrides (crc, csize, usize) in the local header only.
    pub local_lie: Option<(u32, u32, u32)>,
    /// Overrides (crc, csize, usize) in the central directory only.
    pub central_lie: Option<(u32, u32, u32)>,
    /// Overrides (crc, csize, usize) in both headers.
    pub both_lie: Option<(u32, u32, u32)>,
    /// Overrides the local header's name.
    pub local_name: Option<Vec<u8>>,
    /// No local header of its own: the central record points at entry N's local header.
    pub alias_of: Option<usize>,
    /// The central record points this many bytes after its real local header.
    pub offset_shift: i64,
}

impl Z {
    pub fn new(name: impl Into<Vec<u8>>, data: &[u8]) -> Z {
        Z {
            name: name.into(),
            data: data.to_vec(),
            method: 8,
            flags: 0,
            made_by: (3 << 8) | 30,
            ext_attrs: (S_IFREG | 0o644) << 16,
            descriptor: false,
            local_extra: Vec::new(),
            central_extra: Vec::new(),
            raw: None,
            local_lie: None,
            central_lie: None,
            both_lie: None,
            local_name: None,
            alias_of: None,
            offset_shift: 0,
        }
    }
    pub fn stored(name: impl Into<Vec<u8>>, data: &[u8]) -> Z {
        Z {
            method: 0,
            ..Z::new(name, data)
        }
    }
    pub fn dir(name: impl Into<Vec<u8>>) -> Z {
        Z {
            method: 0,
            ext_attrs: ((S_IFDIR | 0o755) << 16) | 0x10,
            ..Z::new(name, b"")
        }
    }
    pub fn symlink(name: impl Into<Vec<u8>>, target: &str) -> Z {
        Z {
            method: 0,
            ext_attrs: (S_IFLNK | 0o777) << 16,
            ..Z::new(name, target.as_bytes())
        }
    }
    pub fn mode(mut self, mode: u32) -> Z {
        self.ext_attrs = mode << 16;
        self
    }
    fn compressed(&self) -> Vec<u8> {
        match (&self.raw, self.method) {
            (Some(r), _) => r.clone(),
            (None, 8) => deflate(&self.data),
            (None, _) => self.data.clone(),
        }
    }
}

fn p16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn p32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn p64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}

/// Writes a zip of `entries` (with an optional zip64 end record).
pub fn zip_with(entries: &[Z], zip64_end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    let mut offsets: Vec<u64> = Vec::new();
    for e in entries {
        let comp = e.compressed();
        let crc = crc32fast::hash(&e.data);
        let truth = (crc, comp.len() as u32, e.data.len() as u32);
        let both = e.both_lie.unwrap_or(truth);
        let flags = e.flags | if e.descriptor { 8 } else { 0 };
        let offset = match e.alias_of {
            Some(i) => offsets[i],
            None => {
                let at = out.len() as u64;
                let (lc, lcs, lus) = if e.descriptor {
                    (0, 0, 0)
                } else {
                    e.local_lie.unwrap_or(both)
                };
                let lname = e.local_name.as_ref().unwrap_or(&e.name);
                p32(&mut out, 0x04034b50);
                p16(&mut out, 20);
                p16(&mut out, flags);
                p16(&mut out, e.method);
                p32(&mut out, 0); // time, date
                p32(&mut out, lc);
                p32(&mut out, lcs);
                p32(&mut out, lus);
                p16(&mut out, lname.len() as u16);
                p16(&mut out, e.local_extra.len() as u16);
                out.extend_from_slice(lname);
                out.extend_from_slice(&e.local_extra);
                out.extend_from_slice(&comp);
                if e.descriptor {
                    p32(&mut out, 0x08074b50);
                    p32(&mut out, both.0);
                    p32(&mut out, both.1);
                    p32(&mut out, both.2);
                }
                at
            }
        };
        offsets.push(offset);
        let (cc, ccs, cus) = e.central_lie.unwrap_or(both);
        p32(&mut central, 0x02014b50);
        p16(&mut central, e.made_by);
        p16(&mut central, 20);
        p16(&mut central, flags);
        p16(&mut central, e.method);
        p32(&mut central, 0);
        p32(&mut central, cc);
        p32(&mut central, ccs);
        p32(&mut central, cus);
        p16(&mut central, e.name.len() as u16);
        p16(&mut central, e.central_extra.len() as u16);
        p16(&mut central, 0); // comment
        p16(&mut central, 0); // disk
        p16(&mut central, 0); // internal attrs
        p32(&mut central, e.ext_attrs);
        p32(&mut central, (offset as i64 + e.offset_shift) as u32);
        central.extend_from_slice(&e.name);
        central.extend_from_slice(&e.central_extra);
    }
    let cd_offset = out.len() as u64;
    out.extend_from_slice(&central);
    let n = entries.len() as u64;
    if zip64_end {
        let z64_at = out.len() as u64;
        p32(&mut out, 0x06064b50);
        p64(&mut out, 44);
        p16(&mut out, 45);
        p16(&mut out, 45);
        p32(&mut out, 0);
        p32(&mut out, 0);
        p64(&mut out, n);
        p64(&mut out, n);
        p64(&mut out, central.len() as u64);
        p64(&mut out, cd_offset);
        p32(&mut out, 0x07064b50);
        p32(&mut out, 0);
        p64(&mut out, z64_at);
        p32(&mut out, 1);
    }
    p32(&mut out, 0x06054b50);
    p16(&mut out, 0);
    p16(&mut out, 0);
    let n16 = if zip64_end { 0xffff } else { n as u16 };
    p16(&mut out, n16);
    p16(&mut out, n16);
    p32(
        &mut out,
        if zip64_end {
            u32::MAX
        } else {
            central.len() as u32
        },
    );
    p32(
        &mut out,
        if zip64_end {
            u32::MAX
        } else {
            cd_offset as u32
        },
    );
    p16(&mut out, 0);
    out
}

pub fn zip(entries: &[Z]) -> Vec<u8> {
    zip_with(entries, false)
}

/// One tar member as `tar()` writes it.
#[derive(Clone, Debug)]
pub struct T {
    pub name: Vec<u8>,
    pub typ: u8,
    pub mode: u32,
    pub data: Vec<u8>,
    pub link: Vec<u8>,
    pub mtime: u64,
    /// PAX records written in an `x` member before this one.
    pub pax: Vec<(String, Vec<u8>)>,
    /// Overrides the size field.
    pub size: Option<u64>,
}

impl T {
    pub fn file(name: impl Into<Vec<u8>>, data: &[u8]) -> T {
        T {
            name: name.into(),
            typ: b'0',
            mode: 0o644,
            data: data.to_vec(),
            link: Vec::new(),
            mtime: 1_717_380_900,
            pax: Vec::new(),
            size: None,
        }
    }
    pub fn dir(name: impl Into<Vec<u8>>) -> T {
        T {
            typ: b'5',
            mode: 0o755,
            ..T::file(name, b"")
        }
    }
    pub fn link(typ: u8, name: impl Into<Vec<u8>>, target: &str) -> T {
        T {
            typ,
            mode: 0o777,
            link: target.as_bytes().to_vec(),
            ..T::file(name, b"")
        }
    }
    pub fn special(typ: u8, name: &str) -> T {
        T {
            typ,
            ..T::file(name, b"")
        }
    }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0w$o}\0", v, w = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

/// A POSIX ustar header block with a correct checksum.
pub fn header(name: &[u8], typ: u8, mode: u32, size: u64, link: &[u8], mtime: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 1000);
    octal(&mut h[116..124], 1000);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = typ;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    set_checksum(&mut h);
    h
}

pub fn set_checksum(h: &mut [u8; 512]) {
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
}

fn member(out: &mut Vec<u8>, h: &[u8; 512], data: &[u8]) {
    out.extend_from_slice(h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// Writes a tar of `entries` (GNU long names for names over 100 bytes), with the two end
/// blocks and padding to a 10 KiB record, as GNU tar does.
pub fn tar_raw(entries: &[T]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        if !e.pax.is_empty() {
            let mut recs = Vec::new();
            for (k, v) in &e.pax {
                let body_len = k.len() + v.len() + 3;
                let mut len = body_len + 1;
                while len.to_string().len() + body_len != len {
                    len += 1;
                }
                recs.extend_from_slice(format!("{len} {k}=").as_bytes());
                recs.extend_from_slice(v);
                recs.push(b'\n');
            }
            let h = header(b"././@PaxHeader", b'x', 0o644, recs.len() as u64, b"", 0);
            member(&mut out, &h, &recs);
        }
        if e.name.len() > 100 {
            let mut n = e.name.clone();
            n.push(0);
            let h = header(b"././@LongLink", b'L', 0o644, n.len() as u64, b"", 0);
            member(&mut out, &h, &n);
        }
        let size = e.size.unwrap_or(e.data.len() as u64);
        let h = header(&e.name, e.typ, e.mode, size, &e.link, e.mtime);
        member(&mut out, &h, &e.data);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out.resize(out.len().div_ceil(10240) * 10240, 0);
    out
}

pub fn tgz(entries: &[T]) -> Vec<u8> {
    gz(&tar_raw(entries))
}

/// A temp dir holding a package and an empty cut directory.
pub struct Scene {
    pub dir: tempfile::TempDir,
    pub pkg: PathBuf,
    pub dest: PathBuf,
}

impl Scene {
    pub fn new(name: &str, bytes: &[u8]) -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join(name);
        std::fs::write(&pkg, bytes).unwrap();
        let dest = dir.path().join("cut");
        std::fs::create_dir(&dest).unwrap();
        Scene { dir, pkg, dest }
    }
    pub fn format(&self) -> Format {
        if self.pkg.to_string_lossy().ends_with(".zip") {
            Format::Zip
        } else {
            Format::TarGz
        }
    }
    pub fn extract(&self, limits: &Limits) -> Result<Extracted, ExtractError> {
        super::extract(&self.pkg, self.format(), &self.dest, limits)
    }
    pub fn verify(&self, limits: &Limits) -> Result<Extracted, ExtractError> {
        super::verify_only(&self.pkg, self.format(), limits)
    }
    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.dest.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }
    pub fn mode(&self, rel: &str) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::symlink_metadata(self.dest.join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dest.join(rel)
    }
}

/// Extracts a zip with default limits and returns the error kind (or "ok").
pub fn zip_kind(bytes: &[u8], limits: &Limits) -> (String, String) {
    outcome(&Scene::new("20240602_2015_PREP.zip", bytes), limits)
}

/// Extracts a tar.gz with the given limits and returns the error kind (or "ok").
pub fn tgz_kind(bytes: &[u8], limits: &Limits) -> (String, String) {
    outcome(&Scene::new("20240602_2015_PREP.tar.gz", bytes), limits)
}

fn outcome(s: &Scene, limits: &Limits) -> (String, String) {
    let r = s.extract(limits);
    // verify_only must reach the same verdict without writing.
    let v = s.verify(limits);
    assert_eq!(
        r.as_ref().map_err(|e| e.kind()).map(|x| x.files),
        v.as_ref().map_err(|e| e.kind()).map(|x| x.files),
        "extract and verify_only disagree"
    );
    match r {
        Ok(_) => ("ok".into(), String::new()),
        Err(e) => (e.kind().into(), e.to_string()),
    }
}

/// Every regular file under `root`, relative.
pub fn files_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else {
                out.push(
                    e.path()
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

/// A PREP-like site: `n` JSON files in a few directories, an index, and a nested database
/// zip under `assets/`.
pub fn site(n: usize) -> Vec<(String, Vec<u8>)> {
    let mut v = vec![(
        "index.html".to_string(),
        b"<!DOCTYPE html><title>PREP</title>\n".to_vec(),
    )];
    for i in 0..n {
        let dir = ["json/entidad", "json/distrito", "json/seccion"][i % 3];
        let body = format!(
            "{{\"id\":{i},\"actasCapturadas\":{},\"votos\":[{}]}}\n",
            i * 7,
            (0..(i % 50))
                .map(|k| (k * i % 997).to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        v.push((format!("{dir}/{i:05}.json"), body.into_bytes()));
    }
    let nested = zip(&[Z::new("PRES_2024.csv", &noise(30_000, 5))]);
    v.push(("assets/20240602_2015_PREP.zip".to_string(), nested));
    v
}
