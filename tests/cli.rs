//! The `difusor` command line, run as a real process.
//!
//! Behaviours covered:
//! - `serve` with no config starts on the embedded defaults: makes host keys and the
//!   publisher's key pair under `keys/`, prints the `sftp` command, and that command works
//! - host keys are reused on the next start (same fingerprints)
//! - a bad config (unknown key, bad value) is a clear error naming the key; nothing starts
//! - `keygen --user` makes a PEM RSA key (or ed25519), authorizes it, prints the sftp command

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn difusor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_difusor"))
}

/// A `difusor serve` child, killed when dropped: a failing assertion must not leave it holding
/// the default ports for the next test run.
struct Served(std::process::Child);

impl Served {
    fn stop(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `difusor serve` in `dir` and waits until every port of `ports` accepts connections.
/// Its log goes to `dir/serve.log` (a pipe nobody reads would block the server once full).
fn serve(dir: &std::path::Path, args: &[&str], ports: &[u16]) -> Served {
    let log = dir.join("serve.log");
    let mut child = Served(
        difusor()
            .arg("serve")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    for &port in ports {
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.0.try_wait() {
                let err = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("server exited with {status}: {err}");
            }
            assert!(Instant::now() < deadline, "server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    child
}

#[test]
fn first_start_without_config_makes_keys_and_prints_a_working_sftp_command() {
    // The embedded default ports are 2222 and 8443; run only if they are free (they are in CI).
    if std::net::TcpListener::bind("127.0.0.1:2222").is_err()
        || std::net::TcpListener::bind("127.0.0.1:8443").is_err()
        || std::net::TcpListener::bind("127.0.0.1:9090").is_err()
    {
        eprintln!("port 2222, 8443 or 9090 busy; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // SSH listens before HTTPS (whose first start makes a certificate): wait for both.
    let mut child = serve(dir.path(), &[], &[2222, 8443]);
    let stdout = child.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut command = None;
    for line in lines.by_ref().take(20) {
        let line = line.unwrap();
        if line.trim_start().starts_with("sftp ") {
            command = Some(line.trim().to_owned());
            break;
        }
    }
    let command = command.expect("the sftp command is printed");
    assert_eq!(
        command,
        "sftp -P 2222 -i keys/institute_id_rsa institute@127.0.0.1"
    );
    let keys = dir.path().join("keys");
    for f in [
        "ssh_host_ed25519_key",
        "ssh_host_rsa_key",
        "institute_id_rsa",
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(keys.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    assert!(
        std::fs::read_to_string(keys.join("institute_id_rsa"))
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );
    // The printed command, run as printed (plus non-interactive options), logs in.
    let mut args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let target = args.pop().unwrap();
    let out = Command::new("sftp")
        .current_dir(dir.path())
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-b",
            "-",
        ])
        .args(&args)
        .arg(target)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"pwd\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("/incoming"));
    // The site, on its default port, says it is waiting for the first cut.
    let page = Command::new("curl")
        .args(["-sSk", "--max-time", "10", "https://127.0.0.1:8443/"])
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&page.stdout).to_lowercase();
    assert!(
        body.contains("waiting") || body.contains("esperando"),
        "{body}{}",
        String::from_utf8_lossy(&page.stderr)
    );
    let fp1 = std::fs::read(keys.join("ssh_host_rsa_key.pub")).unwrap();
    drop(lines);
    child.stop();
    // Second start: same host keys, no new publisher key.
    serve(dir.path(), &[], &[2222]).stop();
    assert_eq!(
        fp1,
        std::fs::read(keys.join("ssh_host_rsa_key.pub")).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(keys.join("institute.authorized_keys"))
            .unwrap()
            .lines()
            .count(),
        1
    );
}

fn config_error(toml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("d.toml"), toml).unwrap();
    let out = difusor()
        .args(["serve", "--config", "d.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a bad config must not start: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_config_is_a_clear_error_naming_the_key() {
    let e = config_error("[ssh]\nlisten = \"127.0.0.1:0\"\nmax_conections = 5\n");
    assert!(e.contains("max_conections") && e.contains("line 3"), "{e}");
    let e = config_error("[ssh]\nlisten = \"nowhere\"\n");
    assert!(e.contains("ssh.listen"), "{e}");
    let e = config_error("[[users]]\nname = \"x\"\nrole = \"root\"\nauthorized_keys = \"k\"\n");
    assert!(e.contains("role") && e.contains("root"), "{e}");
    let e = config_error(
        "[ssh]\nlisten = \"127.0.0.1:0\"\n[[users]]\nname = \"x\"\nrole = \"publisher\"\nauthorized_keys = \"missing.pub\"\n",
    );
    assert!(e.contains("missing.pub"), "{e}");
    let e = config_error("[ssh.defender]\nban_secs = -1\n");
    assert!(e.contains("ban_secs"), "{e}");
}

#[test]
fn keygen_makes_an_authorized_pem_key_and_prints_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("difusor.toml"),
        format!("[admin]\nlisten = \"127.0.0.1:0\"\n[web]\nlisten = \"127.0.0.1:0\"\n[ssh]\nlisten = \"127.0.0.1:{port}\"\n[[users]]\nname = \"ieqroo\"\nrole = \"publisher\"\nauthorized_keys = \"keys/ieqroo.pub\"\n[[users]]\nname = \"ops\"\nrole = \"operator\"\nauthorized_keys = \"keys/ops.pub\"\n"),
    )
    .unwrap();
    for (user, kind) in [("ieqroo", "rsa"), ("ops", "ed25519")] {
        let out = difusor()
            .args([
                "keygen",
                "--config",
                "difusor.toml",
                "--user",
                user,
                "--type",
                kind,
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("sftp -P {port} -i"))
                && stdout.contains(&format!("{user}@127.0.0.1")),
            "{stdout}"
        );
    }
    let pem = std::fs::read_to_string(dir.path().join("keys/ieqroo_id_rsa")).unwrap();
    assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    // Unknown user: clear error.
    let out = difusor()
        .args(["keygen", "--config", "difusor.toml", "--user", "nobody"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody"));
    // The keys log in.
    let child = serve(dir.path(), &["--config", "difusor.toml"], &[port]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let o = rt.block_on(sftp(
        addr,
        "ieqroo",
        &dir.path().join("keys/ieqroo_id_rsa"),
        "pwd\n",
        &[],
    ));
    let o2 = rt.block_on(sftp(
        addr,
        "ops",
        &dir.path().join("keys/ops_id_ed25519"),
        "pwd\n",
        &[],
    ));
    child.stop();
    assert!(o.status.success(), "{}", text(&o));
    assert!(o2.status.success(), "{}", text(&o2));
    assert!(String::from_utf8_lossy(&o2.stdout).contains("Remote working directory: /\n"));
}
