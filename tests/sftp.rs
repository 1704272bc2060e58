//! The SSH/SFTP front door, driven by the real OpenSSH clients (`sftp`, `scp`, `scp -O`, `ssh`).
//!
//! Behaviours covered:
//! - a publisher logs in with PEM RSA, PKCS#8, OpenSSH ed25519 and ECDSA keys; key files may
//!   be authorized_keys files, RFC 4716 public keys or private keys
//! - unknown keys, SHA-1-only `ssh-rsa` clients and keys used outside their `from=` are refused
//! - the publisher is jailed: ≥ 10 escape attempts fail and nothing appears outside the jail
//! - operators list and read everything, write nothing
//! - a large upload arrives byte-identical and raises exactly one upload-completed event
//! - an interrupted upload leaves nothing under its real name and raises no event
//! - temp-name-then-rename uploads raise their event on the rename
//! - legacy `scp -O` and modern `scp` upload; other exec requests and shells are refused
//! - repeated failed logins ban the address; a bad config is a clear error

mod common;

use std::time::Duration;

use common::*;

const PUBLISHER: &str = "institute";

async fn publisher_server(key_args: &[&str]) -> (TestServer, ClientKey) {
    let mut key = None;
    let srv = start_server_with(
        &[User {
            name: PUBLISHER,
            role: "publisher",
            keys: "keys/institute.pub",
        }],
        "",
        |dir| {
            let k = ssh_keygen(&dir.join("keys"), "institute", key_args);
            key = Some(k);
        },
    )
    .await;
    (srv, key.unwrap())
}

fn assert_ok(o: &std::process::Output) {
    assert!(o.status.success(), "{}", text(o));
}

fn assert_fails(o: &std::process::Output) {
    assert!(!o.status.success(), "expected failure: {}", text(o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pem_rsa_key_uploads_a_large_file_byte_identical_with_one_event() {
    let (mut srv, key) = publisher_server(&["-t", "rsa", "-b", "3072", "-m", "PEM"]).await;
    assert!(
        std::fs::read_to_string(&key.private)
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );
    let local = srv.root().join("big.zip");
    random_file(&local, 48 << 20, 1);
    let o = sftp(
        srv.addr,
        PUBLISHER,
        &key.private,
        &format!("put {} 20240602_2015_PREP.zip\n", local.display()),
        &[],
    )
    .await;
    assert_ok(&o);
    let arrived = srv.incoming().join("20240602_2015_PREP.zip");
    assert_eq!(
        std::fs::read(&arrived).unwrap(),
        std::fs::read(&local).unwrap()
    );
    let ev = srv
        .next_upload(Duration::from_secs(5))
        .await
        .expect("upload-completed event");
    assert_eq!(ev.user, PUBLISHER);
    assert_eq!(ev.vpath, "/incoming/20240602_2015_PREP.zip");
    assert_eq!(ev.size, 48 << 20);
    assert_eq!(ev.disk_path, arrived);
    assert!(ev.bytes_per_sec() > 0.0);
    assert!(
        srv.next_upload(Duration::from_millis(300)).await.is_none(),
        "exactly one event"
    );
    // Only the real name: no staging leftovers.
    assert_eq!(
        tree(&srv.incoming()),
        vec!["20240602_2015_PREP.zip".to_owned()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs8_ed25519_and_ecdsa_keys_log_in() {
    for args in [
        &["-t", "rsa", "-b", "2048", "-m", "PKCS8"][..],
        &["-t", "ed25519"][..],
        &["-t", "ecdsa", "-b", "256"][..],
        &["-t", "ecdsa", "-b", "384"][..],
    ] {
        let (srv, key) = publisher_server(args).await;
        let o = sftp(srv.addr, PUBLISHER, &key.private, "pwd\n", &[]).await;
        assert_ok(&o);
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("/incoming"),
            "{args:?}: {}",
            text(&o)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_files_as_institutes_hand_them_over_are_accepted() {
    // RFC 4716 public key, and a private key file given as the "authorized key".
    let mut keys = Vec::new();
    let srv = start_server_with(
        &[
            User {
                name: "rfc",
                role: "publisher",
                keys: "keys/rfc.pub.rfc4716",
            },
            User {
                name: "priv",
                role: "publisher",
                keys: "keys/priv",
            },
        ],
        "",
        |dir| {
            let k = ssh_keygen(
                &dir.join("keys"),
                "rfc",
                &["-t", "rsa", "-b", "2048", "-m", "PEM"],
            );
            let out = std::process::Command::new("ssh-keygen")
                .arg("-e")
                .arg("-f")
                .arg(&k.public)
                .output()
                .unwrap();
            std::fs::write(dir.join("keys/rfc.pub.rfc4716"), out.stdout).unwrap();
            keys.push(k);
            let p = ssh_keygen(
                &dir.join("keys"),
                "priv",
                &["-t", "rsa", "-b", "2048", "-m", "PEM"],
            );
            keys.push(p);
        },
    )
    .await;
    assert_ok(&sftp(srv.addr, "rfc", &keys[0].private, "pwd\n", &[]).await);
    assert_ok(&sftp(srv.addr, "priv", &keys[1].private, "pwd\n", &[]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_and_wrong_user_are_refused() {
    let (srv, _key) = publisher_server(&["-t", "ed25519"]).await;
    let stranger = ssh_keygen(srv.root(), "stranger", &["-t", "ed25519"]);
    let o = sftp(srv.addr, PUBLISHER, &stranger.private, "pwd\n", &[]).await;
    assert_fails(&o);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Permission denied"),
        "{}",
        text(&o)
    );
    let o = sftp(srv.addr, "nobody", &stranger.private, "pwd\n", &[]).await;
    assert_fails(&o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha1_only_rsa_client_is_refused_but_sha2_works() {
    let (srv, key) = publisher_server(&["-t", "rsa", "-b", "2048", "-m", "PEM"]).await;
    let o = sftp(
        srv.addr,
        PUBLISHER,
        &key.private,
        "pwd\n",
        &["-o", "PubkeyAcceptedAlgorithms=ssh-rsa"],
    )
    .await;
    assert_fails(&o);
    let o = sftp(
        srv.addr,
        PUBLISHER,
        &key.private,
        "pwd\n",
        &["-o", "PubkeyAcceptedAlgorithms=rsa-sha2-256"],
    )
    .await;
    assert_ok(&o);
    let o = sftp(
        srv.addr,
        PUBLISHER,
        &key.private,
        "pwd\n",
        &["-o", "PubkeyAcceptedAlgorithms=rsa-sha2-512"],
    )
    .await;
    assert_ok(&o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_option_in_authorized_keys_is_enforced() {
    let mut keys = Vec::new();
    let srv = start_server_with(
        &[
            User {
                name: "far",
                role: "publisher",
                keys: "keys/far.authorized_keys",
            },
            User {
                name: "near",
                role: "publisher",
                keys: "keys/near.authorized_keys",
            },
        ],
        "",
        |dir| {
            let k = dir.join("keys");
            let far = ssh_keygen(&k, "far", &["-t", "ed25519"]);
            std::fs::write(
                k.join("far.authorized_keys"),
                format!("from=\"10.0.0.0/8,192.168.*\" {}", far.public_line()),
            )
            .unwrap();
            let near = ssh_keygen(&k, "near", &["-t", "ed25519"]);
            std::fs::write(
                k.join("near.authorized_keys"),
                format!(
                    "from=\"10.0.0.0/8,127.0.0.1\",no-pty {}",
                    near.public_line()
                ),
            )
            .unwrap();
            keys.push(far);
            keys.push(near);
        },
    )
    .await;
    assert_fails(&sftp(srv.addr, "far", &keys[0].private, "pwd\n", &[]).await);
    assert_ok(&sftp(srv.addr, "near", &keys[1].private, "pwd\n", &[]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_cannot_escape_the_jail() {
    let (srv, key) = publisher_server(&["-t", "ed25519"]).await;
    let root = srv.root().to_path_buf();
    let local = root.join("x.zip");
    random_file(&local, 1000, 2);
    // A symlink inside the jail pointing out of it (as a careless admin might leave).
    std::os::unix::fs::symlink("/etc", srv.incoming().join("etc-link")).unwrap();
    std::os::unix::fs::symlink(&root, srv.incoming().join("root-link")).unwrap();
    std::fs::write(root.join("secret.txt"), "outside").unwrap();
    let before = tree(&root);
    let l = local.display();
    let attempts = [
        format!("put {l} ../x.zip"),
        format!("put {l} ../../../../../tmp/x.zip"),
        format!("put {l} /x.zip"),
        format!("put {l} /etc/x.zip"),
        format!("put {l} etc-link/x.zip"),
        format!("put {l} root-link/x.zip"),
        "get /etc/passwd /dev/null".to_owned(),
        "get ../../../../etc/passwd /dev/null".to_owned(),
        "get etc-link/passwd /dev/null".to_owned(),
        "get root-link/secret.txt /dev/null".to_owned(),
        "mkdir /newdir".to_owned(),
        "mkdir ../newdir".to_owned(),
        "mkdir root-link/newdir".to_owned(),
        "ln -s /etc evil".to_owned(),
        "ln /etc/passwd evil".to_owned(),
        "rm /incoming".to_owned(),
        "rmdir /incoming".to_owned(),
        "rename etc-link/passwd stolen".to_owned(),
        "rm root-link/secret.txt".to_owned(),
        "chmod 777 /incoming".to_owned(),
        format!("put {l} .difusor-part-1"),
        format!("put {l} bad\u{1b}name.zip"),
    ];
    // Listing through the outward link shows nothing of what is behind it.
    let o = sftp(srv.addr, PUBLISHER, &key.private, "ls -l etc-link/\n", &[]).await;
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("passwd"),
        "{}",
        text(&o)
    );
    for a in &attempts {
        let o = sftp(srv.addr, PUBLISHER, &key.private, &format!("{a}\n"), &[]).await;
        assert_fails(&o);
        // Refused with a status, never a dropped connection.
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !err.contains("Connection closed") && !err.contains("Broken pipe"),
            "{a}: {}",
            text(&o)
        );
    }
    // A good upload then a rename out of the jail.
    assert_ok(
        &sftp(
            srv.addr,
            PUBLISHER,
            &key.private,
            &format!("put {l} ok.zip\n"),
            &[],
        )
        .await,
    );
    for a in [
        "rename ok.zip ../ok.zip",
        "rename ok.zip /ok.zip",
        "rename ok.zip root-link/ok.zip",
        "rename ok.zip etc-link/ok.zip",
    ] {
        assert_fails(&sftp(srv.addr, PUBLISHER, &key.private, &format!("{a}\n"), &[]).await);
    }
    let mut after = tree(&root);
    // The server's own records (health samples) may appear meanwhile; they are not uploads.
    let own = |p: &String| p.starts_with("data/state/");
    after.retain(|p| p != "data/incoming/ok.zip" && !own(p));
    let before: Vec<String> = before.into_iter().filter(|p| !own(p)).collect();
    assert_eq!(
        before, after,
        "nothing written outside the jail (or inside, but ok.zip)"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("secret.txt")).unwrap(),
        "outside"
    );
    assert!(!std::path::Path::new("/etc/x.zip").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_names_are_refused() {
    let (srv, key) = publisher_server(&["-t", "ed25519"]).await;
    let local = srv.root().join("x.zip");
    random_file(&local, 10, 3);
    let dir = tempfile::tempdir().unwrap();
    let batch = dir.path().join("b");
    let mut bytes = format!("put {} bad", local.display()).into_bytes();
    bytes.extend_from_slice(b"\xff\xfe.zip\n");
    std::fs::write(&batch, bytes).unwrap();
    let o = tokio::process::Command::new("sftp")
        .args(sftp_args(
            srv.addr.port(),
            PUBLISHER,
            &key.private,
            &batch,
            &[],
        ))
        .output()
        .await
        .unwrap();
    assert_fails(&o);
    assert!(
        tree(&srv.incoming()).is_empty(),
        "{:?}",
        tree(&srv.incoming())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_lists_and_reads_but_cannot_write_rename_or_remove() {
    let mut keys = Vec::new();
    let srv = start_server_with(
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
        "",
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
    let local = srv.root().join("p.zip");
    random_file(&local, 100_000, 4);
    let l = local.display();
    assert_ok(
        &sftp(
            srv.addr,
            "institute",
            &keys[0].private,
            &format!("put {l} p.zip\nmkdir sub\n"),
            &[],
        )
        .await,
    );
    let got = srv.root().join("got.zip");
    let o = sftp(
        srv.addr,
        "ops",
        &keys[1].private,
        &format!(
            "pwd\nls -l /\nls -l /incoming\nget /incoming/p.zip {}\n",
            got.display()
        ),
        &[],
    )
    .await;
    assert_ok(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("Remote working directory: /"), "{out}");
    assert!(out.contains("p.zip") && out.contains("100000"), "{out}");
    // Operators see read-only modes.
    assert!(
        out.contains("dr-xr-xr-x") && out.contains("-r--r--r--"),
        "{out}"
    );
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(&local).unwrap());
    let before = tree(srv.root());
    for a in [
        format!("put {l} /incoming/new.zip"),
        format!("put {l} /incoming/p.zip"),
        "rename /incoming/p.zip /incoming/q.zip".to_owned(),
        "rm /incoming/p.zip".to_owned(),
        "mkdir /incoming/d".to_owned(),
        "rmdir /incoming/sub".to_owned(),
        "chmod 600 /incoming/p.zip".to_owned(),
        "ln -s p.zip /incoming/l".to_owned(),
    ] {
        let o = sftp(srv.addr, "ops", &keys[1].private, &format!("{a}\n"), &[]).await;
        assert_fails(&o);
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("ermission denied"),
            "{a}: {}",
            text(&o)
        );
    }
    // The server's own records (health samples) may change meanwhile; they are not uploads.
    let uploads = |t: Vec<String>| -> Vec<String> {
        t.into_iter()
            .filter(|p| !p.starts_with("data/state/"))
            .collect()
    };
    assert_eq!(uploads(before), uploads(tree(srv.root())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_upload_leaves_nothing_and_raises_no_event() {
    let (mut srv, key) = publisher_server(&["-t", "ed25519"]).await;
    let local = srv.root().join("big.zip");
    random_file(&local, 32 << 20, 5);
    let dir = tempfile::tempdir().unwrap();
    let batch = dir.path().join("b");
    std::fs::write(&batch, format!("put {} cut.zip\n", local.display())).unwrap();
    // Throttled to ~8 Mbit/s so the upload is surely in progress when the client dies.
    let mut child = tokio::process::Command::new("sftp")
        .args(sftp_args(
            srv.addr.port(),
            PUBLISHER,
            &key.private,
            &batch,
            &["-l", "8000"],
        ))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Wait until bytes are arriving in a staging file.
    let mut seen_staging = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let names: Vec<String> = std::fs::read_dir(srv.incoming())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n == "cut.zip"),
            "real name appeared mid-upload"
        );
        if names.iter().any(|n| n.starts_with(".difusor-")) {
            seen_staging = true;
            break;
        }
    }
    assert!(seen_staging, "upload never started");
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.kill().await.unwrap();
    // The server notices the dropped connection and discards the staging file.
    let mut clean = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if tree(&srv.incoming()).is_empty() {
            clean = true;
            break;
        }
    }
    assert!(clean, "leftovers: {:?}", tree(&srv.incoming()));
    assert!(
        srv.next_upload(Duration::from_millis(500)).await.is_none(),
        "no event for an aborted upload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_name_upload_raises_its_event_on_rename() {
    let (mut srv, key) = publisher_server(&["-t", "ed25519"]).await;
    let local = srv.root().join("p.zip");
    random_file(&local, 200_000, 6);
    let o = sftp(
        srv.addr,
        PUBLISHER,
        &key.private,
        &format!("put {} 20240602_2015_PREP.zip.filepart\nrename 20240602_2015_PREP.zip.filepart 20240602_2015_PREP.zip\n", local.display()),
        &[],
    )
    .await;
    assert_ok(&o);
    let ev = srv
        .next_upload(Duration::from_secs(5))
        .await
        .expect("event on rename");
    assert_eq!(ev.vpath, "/incoming/20240602_2015_PREP.zip");
    assert_eq!(ev.size, 200_000);
    assert!(srv.next_upload(Duration::from_millis(300)).await.is_none());
    // A plain v3 rename onto an existing name fails; posix-rename (sftp's default) replaces.
    assert_ok(
        &sftp(
            srv.addr,
            PUBLISHER,
            &key.private,
            &format!("put {} other.zip\n", local.display()),
            &[],
        )
        .await,
    );
    let _ = srv.next_upload(Duration::from_secs(2)).await;
    assert_ok(
        &sftp(
            srv.addr,
            PUBLISHER,
            &key.private,
            "rename other.zip 20240602_2015_PREP.zip\n",
            &[],
        )
        .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scp_modern_and_legacy_upload_and_raise_events() {
    let (mut srv, key) = publisher_server(&["-t", "rsa", "-b", "2048", "-m", "PEM"]).await;
    let local = srv.root().join("p.zip");
    random_file(&local, 3 << 20, 7);
    let l = local.display().to_string();
    assert_ok(
        &scp(
            srv.addr,
            &key.private,
            &[],
            &l,
            &format!("{PUBLISHER}@127.0.0.1:modern.zip"),
        )
        .await,
    );
    assert_ok(
        &scp(
            srv.addr,
            &key.private,
            &["-O"],
            &l,
            &format!("{PUBLISHER}@127.0.0.1:legacy.zip"),
        )
        .await,
    );
    assert_ok(
        &scp(
            srv.addr,
            &key.private,
            &["-O", "-p"],
            &l,
            &format!("{PUBLISHER}@127.0.0.1:/incoming/"),
        )
        .await,
    );
    for name in ["modern.zip", "legacy.zip", "p.zip"] {
        assert_eq!(
            std::fs::read(srv.incoming().join(name)).unwrap(),
            std::fs::read(&local).unwrap(),
            "{name}"
        );
    }
    let mut seen = Vec::new();
    while let Some(ev) = srv.next_upload(Duration::from_secs(2)).await {
        seen.push(ev.vpath);
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "/incoming/legacy.zip",
            "/incoming/modern.zip",
            "/incoming/p.zip"
        ]
    );
    // Legacy scp outside the jail or recursively is refused with a message.
    let o = scp(
        srv.addr,
        &key.private,
        &["-O"],
        &l,
        &format!("{PUBLISHER}@127.0.0.1:/etc/x.zip"),
    )
    .await;
    assert_fails(&o);
    let o = scp(
        srv.addr,
        &key.private,
        &["-O", "-r"],
        srv.root().join("keys").to_str().unwrap(),
        &format!("{PUBLISHER}@127.0.0.1:"),
    )
    .await;
    assert_fails(&o);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("recursive"),
        "{}",
        text(&o)
    );
    // Downloads over legacy scp are not offered.
    let o = scp(
        srv.addr,
        &key.private,
        &["-O"],
        &format!("{PUBLISHER}@127.0.0.1:p.zip"),
        srv.root().join("back.zip").to_str().unwrap(),
    )
    .await;
    assert_fails(&o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shells_commands_and_forwarding_are_refused() {
    let (srv, key) = publisher_server(&["-t", "ed25519"]).await;
    let o = ssh(srv.addr, PUBLISHER, &key.private, &[], "cat /etc/passwd").await;
    assert_fails(&o);
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("root:"),
        "{}",
        text(&o)
    );
    let o = ssh(srv.addr, PUBLISHER, &key.private, &["-T"], "").await;
    assert_fails(&o);
    let o = ssh(
        srv.addr,
        PUBLISHER,
        &key.private,
        &[
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            "0:127.0.0.1:22",
            "-N",
        ],
        "",
    )
    .await;
    assert_fails(&o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_logins_ban_the_address() {
    let mut key = None;
    let srv = start_server_with(
        &[User { name: PUBLISHER, role: "publisher", keys: "keys/institute.pub" }],
        "[ssh]\nlisten = \"127.0.0.1:0\"\n[ssh.defender]\nmax_failures = 3\nwindow_secs = 60\nban_secs = 60\n",
        |dir| key = Some(ssh_keygen(&dir.join("keys"), "institute", &["-t", "ed25519"])),
    )
    .await;
    let key = key.unwrap();
    // The right key works before the attack.
    assert_ok(&sftp(srv.addr, PUBLISHER, &key.private, "pwd\n", &[]).await);
    let stranger = ssh_keygen(srv.root(), "stranger", &["-t", "ed25519"]);
    for _ in 0..3 {
        assert_fails(&sftp(srv.addr, PUBLISHER, &stranger.private, "pwd\n", &[]).await);
    }
    // Banned now: even the right key is turned away at the door.
    let o = sftp(srv.addr, PUBLISHER, &key.private, "pwd\n", &[]).await;
    assert_fails(&o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_downloads_and_directory_listings_complete() {
    let (srv, key) = publisher_server(&["-t", "ed25519"]).await;
    let local = srv.root().join("big.zip");
    random_file(&local, 40 << 20, 8);
    std::fs::copy(&local, srv.incoming().join("big.zip")).unwrap();
    for i in 0..250 {
        std::fs::write(srv.incoming().join(format!("f{i:03}.json")), format!("{i}")).unwrap();
    }
    let got = srv.root().join("got.zip");
    // 512 outstanding reads: far beyond the SSH window, the deadlock case for naive servers.
    let o = sftp(
        srv.addr,
        PUBLISHER,
        &key.private,
        &format!("get big.zip {}\nls -l\n", got.display()),
        &["-R", "512", "-B", "261120"],
    )
    .await;
    assert_ok(&o);
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(&local).unwrap());
    let listing = String::from_utf8_lossy(&o.stdout);
    assert_eq!(listing.matches(".json").count(), 250, "{listing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_modes_statvfs_and_fsync_work() {
    let (srv, key) = publisher_server(&["-t", "ed25519"]).await;
    let local = srv.root().join("t.zip");
    random_file(&local, 5000, 9);
    let t = filetime_secs(&local, 1_600_000_000);
    let o = sftp(
        srv.addr,
        PUBLISHER,
        &key.private,
        &format!(
            "put -p -f {} t.zip\nchmod 640 t.zip\ndf\nls -l t.zip\n",
            local.display()
        ),
        &[],
    )
    .await;
    assert_ok(&o);
    let m = std::fs::metadata(srv.incoming().join("t.zip")).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(m.mtime(), t);
    assert_eq!(m.permissions().mode() & 0o7777, 0o640);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("Avail"), "df output: {out}");
    // setuid bits are never set.
    assert_ok(&sftp(srv.addr, PUBLISHER, &key.private, "chmod 4755 t.zip\n", &[]).await);
    let m = std::fs::metadata(srv.incoming().join("t.zip")).unwrap();
    assert_eq!(m.permissions().mode() & 0o7000, 0);
}

fn filetime_secs(path: &std::path::Path, secs: i64) -> i64 {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    let t = std::time::UNIX_EPOCH + Duration::from_secs(secs as u64);
    f.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
    secs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_changed_on_disk_take_effect_without_restart() {
    let (srv, key) = publisher_server(&["-t", "ed25519"]).await;
    let second = ssh_keygen(srv.root(), "second", &["-t", "ed25519"]);
    assert_fails(&sftp(srv.addr, PUBLISHER, &second.private, "pwd\n", &[]).await);
    let ak = srv.root().join("keys/institute.pub");
    let mut text = std::fs::read_to_string(&ak).unwrap();
    text.push_str(&second.public_line());
    std::fs::write(&ak, text).unwrap();
    assert_ok(&sftp(srv.addr, PUBLISHER, &second.private, "pwd\n", &[]).await);
    assert_ok(&sftp(srv.addr, PUBLISHER, &key.private, "pwd\n", &[]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_dropped_after_the_login_grace_time() {
    let mut key = None;
    let srv = start_server_with(
        &[User {
            name: PUBLISHER,
            role: "publisher",
            keys: "keys/institute.pub",
        }],
        "[ssh]\nlisten = \"127.0.0.1:0\"\nlogin_grace_secs = 1\n",
        |dir| {
            key = Some(ssh_keygen(
                &dir.join("keys"),
                "institute",
                &["-t", "ed25519"],
            ))
        },
    )
    .await;
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = vec![0u8; 4096];
    // Read the server's banner and whatever follows until it hangs up on us.
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("a silent client was not disconnected"),
        }
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // Real clients are unaffected.
    assert_ok(&sftp(srv.addr, PUBLISHER, &key.unwrap().private, "pwd\n", &[]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_capped() {
    let mut key = None;
    let srv = start_server_with(
        &[User {
            name: PUBLISHER,
            role: "publisher",
            keys: "keys/institute.pub",
        }],
        "[ssh]\nlisten = \"127.0.0.1:0\"\nmax_connections = 10\nmax_connections_per_address = 2\n",
        |dir| {
            key = Some(ssh_keygen(
                &dir.join("keys"),
                "institute",
                &["-t", "ed25519"],
            ))
        },
    )
    .await;
    let key = key.unwrap();
    use tokio::io::AsyncReadExt;
    let a = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let b = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The third is closed at once, without even a banner.
    let mut c = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "third connection should be refused");
    assert_fails(&sftp(srv.addr, PUBLISHER, &key.private, "pwd\n", &[]).await);
    drop((a, b));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_ok(&sftp(srv.addr, PUBLISHER, &key.private, "pwd\n", &[]).await);
}
