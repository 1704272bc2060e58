//! Headless Chromium for the tests that must see a page render: a screenshot of a URL into
//! `target/test-artifacts/<name>` (kept for a person to look at), decoded to RGB pixels.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A decoded screenshot.
pub struct Shot {
    pub width: u32,
    pub height: u32,
    /// RGB, row by row.
    pub pixels: Vec<[u8; 3]>,
}

impl Shot {
    /// Pixels matching `f`.
    pub fn count(&self, f: impl Fn(&[u8; 3]) -> bool) -> usize {
        self.pixels.iter().filter(|p| f(p)).count()
    }

    /// Pixels within 8 of `c` on every channel.
    pub fn near(&self, c: [u8; 3]) -> usize {
        self.count(|p| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) < 8))
    }

    pub fn distinct_colours(&self) -> usize {
        self.pixels
            .iter()
            .copied()
            .collect::<std::collections::HashSet<_>>()
            .len()
    }
}

pub fn artifacts_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Renders `url` (https with any certificate, http, or file://) at `width`×`height`.
/// Blocking: from an async test, call it through `spawn_blocking`.
pub fn screenshot(url: &str, name: &str, width: u32, height: u32) -> Shot {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chromium is installed (apt-get install -y chromium)");
    let shot = artifacts_dir().join(name);
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--ignore-certificate-errors",
        ])
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish in 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "chromium: {status}");
    let data = std::fs::read(&shot).expect("screenshot written");
    assert!(data.len() > 4000, "screenshot is only {} bytes", data.len());
    let decoder = png::Decoder::new(std::io::Cursor::new(data));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let pixels = buf[..info.buffer_size()]
        .chunks(px)
        .filter(|p| p.len() >= 3)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    assert_eq!((info.width, info.height), (width, height));
    Shot {
        width: info.width,
        height: info.height,
        pixels,
    }
}
