//! The operator documentation and the deployment files stay true to the code.
//!
//! Behaviours covered:
//! - the complete example of `docs/config.md`, its all-defaults block, `deploy/difusor.toml`
//!   and `docker/difusor.toml` are accepted by `Config::parse` (the secret files and hook
//!   programs the complete example names are created in a temporary directory first, because
//!   validation reads them)
//! - the all-defaults block gives exactly the configuration of an empty file
//! - every key of every `Raw*` config struct under `src/` is documented in its section of
//!   `docs/config.md` and appears (possibly commented out) in the complete example
//! - every subcommand `difusor --help` lists appears in `docs/runbook.md`, and every
//!   `difusor SUBCOMMAND --option` written in the docs and deployment files exists
//! - the container files agree with `docker/difusor.toml` (exposed and published ports, the
//!   healthcheck's port, the admin port published on loopback only), the systemd unit grants
//!   the capability its config's low ports need, and all three stop the server with one signal
//! - that stop signal really stops `difusor serve` cleanly, and the image's healthcheck
//!   command really answers "healthy" against a running server (loopback only)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use difusor::config::Config;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn difusor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_difusor"))
}

/// The ```` ```toml ```` block on the line after `marker` in `doc`.
fn fenced_after(doc: &str, marker: &str) -> String {
    let mut lines = doc.lines().skip_while(|l| l.trim() != marker);
    assert!(
        lines.next().is_some(),
        "docs/config.md has no line {marker:?}"
    );
    assert_eq!(
        lines.next().map(str::trim),
        Some("```toml"),
        "the line after {marker:?} in docs/config.md must open a ```toml block"
    );
    let body: Vec<&str> = lines.take_while(|l| l.trim() != "```").collect();
    body.join("\n") + "\n"
}

/// `key = "value"` on an uncommented line → value.
fn string_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.trim().strip_prefix(key)?.trim_start();
    let rest = rest.strip_prefix('=')?.trim_start().strip_prefix('"')?;
    rest.split('"').next()
}

/// Creates, under `dir`, the relative secret files and hook programs `example` names, so that
/// validation (which reads them) can succeed.
fn create_referenced_files(example: &str, dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for line in example.lines() {
        let secret = string_value(line, "secret_file").or_else(|| string_value(line, "token_file"));
        if let Some(p) = secret.filter(|p| !p.starts_with('/')) {
            let path = dir.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "not-a-real-secret\n").unwrap();
        }
        let program = line
            .trim()
            .strip_prefix("command")
            .and_then(|r| r.trim_start().strip_prefix('='))
            .and_then(|r| r.trim_start().strip_prefix("[\""))
            .and_then(|r| r.split('"').next());
        if let Some(p) = program.filter(|p| p.contains('/') && !p.starts_with('/')) {
            let path = dir.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}

#[test]
fn complete_example_in_config_md_is_a_valid_config() {
    let example = fenced_after(&read("docs/config.md"), "<!-- full-example -->");
    let dir = tempfile::tempdir().unwrap();
    create_referenced_files(&example, dir.path());
    let cfg = Config::parse(&example, dir.path(), None)
        .unwrap_or_else(|e| panic!("the complete example in docs/config.md is refused: {e}"));
    let types: BTreeSet<&str> = cfg.notify.iter().map(|n| n.target.type_name()).collect();
    assert_eq!(
        types,
        BTreeSet::from(["cloudflare", "command", "webhook"]),
        "the complete example shows every notifier type"
    );
    assert!(!cfg.default_users, "the complete example defines [[users]]");
}

#[test]
fn defaults_block_in_config_md_equals_an_empty_file() {
    let block = fenced_after(&read("docs/config.md"), "<!-- defaults -->");
    let base = Path::new("/etc/difusor");
    let written = Config::parse(&block, base, None)
        .unwrap_or_else(|e| panic!("the defaults block in docs/config.md is refused: {e}"));
    let empty = Config::parse("", base, None).unwrap();
    assert_eq!(
        format!("{written:#?}"),
        format!("{empty:#?}"),
        "docs/config.md's all-defaults block no longer matches the embedded defaults"
    );
}

#[test]
fn deployment_configs_are_valid() {
    for path in ["deploy/difusor.toml", "docker/difusor.toml"] {
        Config::parse(&read(path), Path::new("/etc/difusor"), None)
            .unwrap_or_else(|e| panic!("{path} is refused: {e}"));
    }
}

/// A field of a `Raw*` config struct: the TOML key it reads, and whether it is a sub-table.
struct RawField {
    key: String,
    table: bool,
}

/// Every `pub struct Raw… { … }` deriving `Deserialize` in `text`, with its fields.
fn raw_structs(text: &str) -> Vec<(String, Vec<RawField>)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.strip_prefix("pub struct Raw") else {
            continue;
        };
        let Some(name) = rest.strip_suffix(" {") else {
            continue;
        };
        let derives = lines[..i]
            .iter()
            .rev()
            .take_while(|l| l.starts_with("#[") || l.starts_with("///"))
            .any(|l| l.contains("derive(") && l.contains("Deserialize"));
        if !derives {
            continue;
        }
        let mut fields = Vec::new();
        let mut rename: Option<String> = None;
        for l in lines[i + 1..].iter().take_while(|l| !l.starts_with('}')) {
            let t = l.trim();
            if t.starts_with("#[serde(") {
                if let Some(r) = t.split("rename = \"").nth(1) {
                    rename = r.split('"').next().map(str::to_owned);
                }
                continue;
            }
            let Some(decl) = t.strip_prefix("pub ") else {
                continue;
            };
            let Some((field, ty)) = decl.split_once(':') else {
                continue;
            };
            fields.push(RawField {
                key: rename.take().unwrap_or_else(|| field.trim().to_owned()),
                table: ty.contains("Raw"),
            });
        }
        out.push((format!("Raw{name}"), fields));
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Config struct → (its heading in docs/config.md, its TOML table in the complete example).
const SECTIONS: &[(&str, &str, &str)] = &[
    ("RawConfig", "## Top level", ""),
    ("RawSsh", "## `[ssh]`", "ssh"),
    ("RawDefender", "## `[ssh.defender]`", "ssh.defender"),
    ("RawIngest", "## `[ingest]`", "ingest"),
    ("RawWeb", "## `[web]`", "web"),
    ("RawCacheRule", "## `[[web.cache]]`", "web.cache"),
    ("RawRateLimit", "## `[web.rate_limit]`", "web.rate_limit"),
    ("RawAccessLog", "## `[web.access_log]`", "web.access_log"),
    ("RawMonitor", "## `[monitor]`", "monitor"),
    ("RawAdmin", "## `[admin]`", "admin"),
    ("RawUser", "## `[[users]]`", "users"),
    ("RawNotifier", "## `[[notify]]`", "notify"),
    ("RawSources", "## `[[sources.https]]`", "sources"),
    ("RawHttpsSource", "## `[[sources.https]]`", "sources.https"),
    ("RawS3Source", "## `[[sources.s3]]`", "sources.s3"),
    ("RawMirror", "## `[[mirror.s3]]`", "mirror"),
    ("RawS3Target", "## `[[mirror.s3]]`", "mirror.s3"),
];

/// The text of the `## ` section whose heading line is `heading`, up to the next `## `.
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let start = doc
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("docs/config.md has no heading {heading:?}"));
    let body = &doc[start + 1..];
    let end = body[heading.len()..]
        .find("\n## ")
        .map_or(body.len(), |e| e + heading.len());
    &body[..end]
}

/// The keys each TOML table of `example` sets, commented-out `# key = …` lines included.
fn example_keys(example: &str) -> BTreeSet<(String, String)> {
    let mut table = String::new();
    let mut keys = BTreeSet::new();
    for line in example.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            table = t.trim_matches(|c| c == '[' || c == ']').to_owned();
            continue;
        }
        let t = t.trim_start_matches('#').trim();
        if let Some((k, _)) = t.split_once('=') {
            let k = k.trim();
            let plain = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
            if !k.is_empty() && k.bytes().all(plain) {
                keys.insert((table.clone(), k.to_owned()));
            }
        }
    }
    keys
}

#[test]
fn every_config_key_is_documented_and_in_the_complete_example() {
    let doc = read("docs/config.md");
    let example_set = example_keys(&fenced_after(&doc, "<!-- full-example -->"));
    let mut files = Vec::new();
    rust_files(&repo("src"), &mut files);
    files.sort();
    let mut missing = Vec::new();
    let mut seen = BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (name, fields) in raw_structs(&text) {
            let shown = file.strip_prefix(repo("")).unwrap_or(file).display();
            let Some(&(_, heading, table)) = SECTIONS.iter().find(|s| s.0 == name) else {
                missing.push(format!(
                    "{name} ({shown}) is a new config section: document it in docs/config.md \
                     and add it to SECTIONS in tests/docs.rs"
                ));
                continue;
            };
            seen.insert(name.clone());
            let text = section(&doc, heading);
            for f in fields.iter().filter(|f| !f.table) {
                if !text.contains(&format!("`{}`", f.key)) {
                    missing.push(format!(
                        "{}.{} ({name}, {shown}) is not documented under {heading:?}",
                        if table.is_empty() { "<top>" } else { table },
                        f.key
                    ));
                }
                if !example_set.contains(&(table.to_owned(), f.key.clone())) {
                    missing.push(format!(
                        "`{}` of [{table}] ({name}) is missing from the complete example",
                        f.key
                    ));
                }
            }
        }
    }
    for (name, ..) in SECTIONS {
        if !seen.contains(*name) {
            missing.push(format!(
                "{name} is no longer found under src/: update SECTIONS in tests/docs.rs (and the docs)"
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/config.md is behind the code:\n{}",
        missing.join("\n")
    );
}

/// `difusor ARGS… --help`.
fn help_of(args: &[&str]) -> String {
    let out = difusor().args(args).arg("--help").output().unwrap();
    assert!(
        out.status.success(),
        "difusor {} --help failed",
        args.join(" ")
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands `difusor ARGS… --help` lists (without `help`); empty for a leaf.
fn commands_of(args: &[&str]) -> Vec<String> {
    help_of(args)
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

/// The options `difusor ARGS… --help` lists (`--config`, `-c`, …).
fn options_of(args: &[&str]) -> BTreeSet<String> {
    help_of(args)
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| t.starts_with('-'))
        .map(|t| t.split(['=', '<', '[']).next().unwrap_or(t).to_owned())
        .collect()
}

/// The lines of code in a document: every line of a non-Markdown file; in Markdown, the lines
/// of fenced blocks and the `inline code` spans of the others.
fn code_lines(path: &str, text: &str) -> Vec<String> {
    if !path.ends_with(".md") {
        // Code, and commands quoted in comments (indented after the `#`); not prose comments.
        return text
            .lines()
            .filter(|l| {
                let t = l.trim_start();
                !t.starts_with('#') || t.trim_start_matches('#').starts_with("  ")
            })
            .map(str::to_owned)
            .collect();
    }
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            out.push(line.to_owned());
        } else {
            out.extend(line.split('`').skip(1).step_by(2).map(str::to_owned));
        }
    }
    out
}

/// `difusor WORD…` invocations on a line of code: the tokens after `difusor`, up to the end of
/// the shell command.
fn invocations(line: &str) -> Vec<Vec<String>> {
    // A trailing `# comment` is prose.
    let code = line.split(" #").next().unwrap_or(line);
    let tokens: Vec<&str> = code.split_whitespace().collect();
    let mut out = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let t = t.trim_start_matches("ExecStart=");
        if t != "difusor" && !t.ends_with("/difusor") {
            continue;
        }
        // `sudo -u difusor tee …`: the user, not the program.
        if i > 0 && matches!(tokens[i - 1], "-u" | "--user" | "-g" | "--group") {
            continue;
        }
        // `docker compose exec [-T] difusor rm …`: the service, then the program it runs
        // (`run difusor keygen …` runs the image's entrypoint, difusor itself).
        let verb = tokens[..i].iter().rev().find(|t| !t.starts_with('-'));
        if verb == Some(&"exec") {
            continue;
        }
        let Some(sub) = tokens.get(i + 1) else {
            continue;
        };
        if *sub == "difusor" || !sub.bytes().all(|b| b.is_ascii_lowercase()) {
            continue;
        }
        out.push(
            tokens[i + 1..]
                .iter()
                .take_while(|t| !matches!(**t, "|" | "||" | "&&" | ";" | "#" | ">" | "2>&1"))
                .map(|t| t.to_string())
                .collect(),
        );
    }
    out
}

/// What is wrong with one invocation (`["status", "--config", "x"]`), if anything.
fn check_invocation(args: &[String]) -> Option<String> {
    let mut path: Vec<&str> = Vec::new();
    let mut rest = args.iter();
    // Walk down nested subcommands (`mirror verify`) while the help lists some.
    loop {
        let commands = commands_of(&path);
        if commands.is_empty() {
            break;
        }
        let Some(word) = rest.next() else {
            return Some(format!("`difusor {}` needs a subcommand", path.join(" ")));
        };
        if !commands.contains(word) {
            return Some(format!(
                "`{word}` is not a subcommand of `difusor {}` ({})",
                path.join(" "),
                commands.join(", ")
            ));
        }
        path.push(word);
    }
    let known = options_of(&path);
    let bad: Vec<&str> = rest
        .filter(|t| t.starts_with('-') && t.len() > 1)
        .map(|t| t.split('=').next().unwrap_or(t))
        .filter(|o| !known.contains(*o))
        .collect();
    (!bad.is_empty()).then(|| {
        format!(
            "`difusor {}` has no option {}",
            path.join(" "),
            bad.join(", ")
        )
    })
}

#[test]
fn the_runbook_covers_every_subcommand_and_the_docs_use_real_options() {
    let subs = commands_of(&[]);
    assert!(
        subs.len() >= 5,
        "could not read the subcommands of difusor --help"
    );
    let runbook = read("docs/runbook.md");
    for s in &subs {
        assert!(
            runbook.contains(&format!("difusor {s}")),
            "docs/runbook.md never shows `difusor {s}`"
        );
    }
    let mut wrong = Vec::new();
    for path in [
        "docs/runbook.md",
        "docs/runbook.es.md",
        "docs/config.md",
        "docker/README.md",
        "deploy/difusor.service",
        "deploy/difusor.toml",
        "docker/compose.yml",
    ] {
        let text = read(path);
        for line in code_lines(path, &text) {
            for args in invocations(&line) {
                if let Some(why) = check_invocation(&args) {
                    wrong.push(format!("{path}: {why}: {line}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The first line of `text` (after joining `\`-continued lines) starting with `instruction`.
fn dockerfile_instruction(text: &str, instruction: &str) -> String {
    let joined = text.replace("\\\n", " ");
    joined
        .lines()
        .find(|l| l.starts_with(instruction))
        .unwrap_or_else(|| panic!("docker/Dockerfile has no {instruction}"))
        .to_owned()
}

/// The shell script of the Dockerfile's `HEALTHCHECK … CMD ["bash", "-c", SCRIPT]`.
fn dockerfile_healthcheck_script(dockerfile: &str) -> String {
    let line = dockerfile_instruction(dockerfile, "HEALTHCHECK");
    let json = &line[line.find("CMD [").expect("HEALTHCHECK uses the exec form") + 4..];
    let argv: Vec<String> = serde_json::from_str(json.trim()).expect("HEALTHCHECK CMD is JSON");
    assert_eq!(argv[..2], ["bash", "-c"], "HEALTHCHECK runs bash -c");
    argv[2].clone()
}

/// The compose healthcheck script: its `- "…"` line after `- -c`, YAML- and `$$`-unescaped.
fn compose_healthcheck_script(compose: &str) -> String {
    let mut lines = compose.lines().skip_while(|l| l.trim() != "- -c");
    lines
        .next()
        .expect("compose.yml's healthcheck runs bash -c");
    let quoted = lines.next().unwrap().trim().strip_prefix("- ").unwrap();
    let inner = quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap();
    inner.replace("\\\\", "\\").replace("$$", "$")
}

/// The stop signal each deployment file names, e.g. `SIGINT`.
fn stop_signals() -> [(&'static str, String); 3] {
    let dockerfile = read("docker/Dockerfile");
    let compose = read("docker/compose.yml");
    let unit = read("deploy/difusor.service");
    let value = |text: &str, prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?}"))
            .trim()
            .to_owned()
    };
    [
        ("docker/Dockerfile", value(&dockerfile, "STOPSIGNAL ")),
        ("docker/compose.yml", value(&compose, "stop_signal:")),
        ("deploy/difusor.service", value(&unit, "KillSignal=")),
    ]
}

#[test]
fn container_and_systemd_files_agree_with_their_configs() {
    let cfg = Config::parse(
        &read("docker/difusor.toml"),
        Path::new("/etc/difusor"),
        None,
    )
    .unwrap();
    let dockerfile = read("docker/Dockerfile");
    let compose = read("docker/compose.yml");
    let http = cfg
        .web
        .http_listen
        .expect("docker/difusor.toml sets web.http_listen (healthcheck)");
    let admin = cfg
        .admin
        .listen
        .expect("docker/difusor.toml keeps the admin listener");
    let ports = [
        cfg.ssh.listen.port(),
        cfg.web.listen.port(),
        http.port(),
        admin.port(),
    ];

    let expose = dockerfile_instruction(&dockerfile, "EXPOSE");
    for p in ports {
        assert!(
            p >= 1024,
            "the container runs without capabilities: port {p} must be ≥ 1024"
        );
        assert!(
            expose.split_whitespace().any(|w| w == p.to_string()),
            "docker/Dockerfile does not EXPOSE {p}: {expose}"
        );
        assert!(
            compose.contains(&format!(":{p}\"")),
            "docker/compose.yml does not publish container port {p}"
        );
    }
    for line in compose
        .lines()
        .filter(|l| l.contains(&format!(":{}\"", admin.port())))
    {
        assert!(
            line.trim().starts_with("- \"127.0.0.1:"),
            "the admin port must be published on the host's loopback only: {line}"
        );
    }
    let script = dockerfile_healthcheck_script(&dockerfile);
    assert!(
        script.contains(&format!("/dev/tcp/127.0.0.1/{}", http.port())),
        "the HEALTHCHECK does not call web.http_listen's port {}",
        http.port()
    );
    assert_eq!(
        compose_healthcheck_script(&compose),
        script,
        "compose.yml's healthcheck differs from the Dockerfile's"
    );
    let cmd = dockerfile_instruction(&dockerfile, "CMD ");
    assert!(cmd.contains("\"/etc/difusor/difusor.toml\""), "{cmd}");
    assert!(compose.contains(":/etc/difusor/difusor.toml:ro"));
    assert!(dockerfile.contains("COPY docker/difusor.toml /etc/difusor/difusor.toml"));

    let signals = stop_signals();
    for (path, s) in &signals {
        assert_eq!(
            s, &signals[0].1,
            "{path} stops with {s}, docker/Dockerfile with another"
        );
    }

    let prod = Config::parse(
        &read("deploy/difusor.toml"),
        Path::new("/etc/difusor"),
        None,
    )
    .unwrap();
    let unit = read("deploy/difusor.service");
    let low = [
        Some(prod.ssh.listen),
        Some(prod.web.listen),
        prod.web.http_listen,
    ]
    .into_iter()
    .flatten()
    .any(|a| a.port() < 1024);
    if low {
        assert!(unit.contains("AmbientCapabilities=CAP_NET_BIND_SERVICE"));
        assert!(unit.contains("CapabilityBoundingSet=CAP_NET_BIND_SERVICE"));
    }
    assert!(
        unit.contains("ExecStart=/usr/local/bin/difusor serve --config /etc/difusor/difusor.toml")
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn healthcheck_passes_and_the_stop_signal_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (ssh, http) = (free_port(), free_port());
    std::fs::write(
        dir.path().join("ops.pub"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGbU76UaJmuZf/F0dO+gCqdVEPLh/6+1NQpDl/3QY3P6 ops@difusor\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("difusor.toml"),
        format!(
            "[ssh]\nlisten = \"127.0.0.1:{ssh}\"\n\
             [web]\nlisten = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:{http}\"\nworkers = 1\n\
             [admin]\nlisten = \"off\"\n\
             [[users]]\nname = \"ops\"\nrole = \"operator\"\nauthorized_keys = \"ops.pub\"\n"
        ),
    )
    .unwrap();
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = difusor()
        .args(["serve", "--config"])
        .arg(dir.path().join("difusor.toml"))
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("difusor serve exited with {status}:\n{}", log());
        }
        assert!(
            Instant::now() < deadline,
            "difusor did not listen on {http}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The image's own command, pointed at this server's port instead of the container's.
    let image_port = Config::parse(&read("docker/difusor.toml"), Path::new("/"), None)
        .unwrap()
        .web
        .http_listen
        .unwrap()
        .port();
    let script = dockerfile_healthcheck_script(&read("docker/Dockerfile")).replace(
        &format!("/dev/tcp/127.0.0.1/{image_port}"),
        &format!("/dev/tcp/127.0.0.1/{http}"),
    );
    let health = Command::new("bash").args(["-c", &script]).status().unwrap();
    assert!(
        health.success(),
        "the image's healthcheck fails against a healthy server"
    );

    let signal = stop_signals()[0].1.clone();
    let sig = match signal.as_str() {
        "SIGINT" => rustix::process::Signal::INT,
        "SIGTERM" => rustix::process::Signal::TERM,
        other => panic!("the deployment files stop difusor with {other}: teach this test it"),
    };
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "difusor serve did not stop within 20 s of {signal}:\n{}",
                log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "difusor serve stopped by {signal} exited with {status}:\n{}",
        log()
    );
}
