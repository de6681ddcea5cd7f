//! The documentation against the binary: every metric the docs name is in
//! a running deployment's `/metrics`, and every command on the README's
//! first screen and every sample `tollgate dev` prints runs and exits as
//! documented.

mod common;

use common::{one_dev_at_a_time, Dev};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The workspace root (this crate is `crates/tollgate`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `dir`'s files ending in `ext`, at any depth.
fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, ext, out);
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

/// The documents whose metric names are held to `/metrics`.
fn documents() -> Vec<PathBuf> {
    let mut docs = vec![root().join("README.md"), root().join("ARCHITECTURE.md")];
    files(&root().join("deploy"), "md", &mut docs);
    docs
}

/// The workspace's package names as Rust spells them (`tollgate_geo`):
/// what a `tollgate_...` word in the docs is when it is not a metric.
fn package_names() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = std::fs::read_dir(root().join("crates"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().replace('-', "_"))
        .collect();
    names.extend(["tollgate_tests".to_string(), "tollgate_chaos".to_string()]);
    names
}

/// Every `tollgate_<word>` in `text` that is a metric: not a package name,
/// not a Rust path (`tollgate_geo::...`), not a name with a dash after it
/// (a Compose network, `tollgate_origin-eu`).
fn metric_names(text: &str, packages: &BTreeSet<String>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("tollgate_") {
        let word_start = &rest[at..];
        let len = word_start
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(word_start.len());
        let word = &word_start[..len];
        let after = &word_start[len..];
        let preceded = rest[..at]
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !preceded
            && !packages.contains(word)
            && !after.starts_with("::")
            && !after.starts_with('-')
        {
            names.insert(word.trim_end_matches('_').to_string());
        }
        rest = &word_start[len..];
    }
    names
}

/// An HTTPS client trusting `ca`.
fn https_client(ca: &Path) -> reqwest::Client {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let transport = tollgate_tls::Transport::Tls(
        tollgate_tls::Tls::client(Some(ca.to_path_buf()), None, None, now).unwrap(),
    );
    let config = transport
        .client_config(&tollgate_tls::Expect::HostName, tollgate_tls::Alpn::Http1)
        .unwrap()
        .unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls((*config).clone())
        .build()
        .unwrap()
}

/// Metric names in Prometheus text (its `# TYPE <name> <kind>` lines).
fn exposed(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn metric_names_are_told_from_packages_and_paths() {
    let packages: BTreeSet<String> = ["tollgate_geo".to_string()].into();
    let found = metric_names(
        "`tollgate_checks_total{reason}`, tollgate_geo::PROBE, `tollgate_geo`, \
         tollgate_origin-eu, my_tollgate_x, tollgate_raft_term.",
        &packages,
    );
    let want: BTreeSet<String> = ["tollgate_checks_total", "tollgate_raft_term"]
        .map(String::from)
        .into();
    assert_eq!(found, want);
}

/// Every metric named in README.md, ARCHITECTURE.md and deploy/**/*.md is
/// in the `/metrics` of a running deployment (`tollgate dev`: the origin
/// and every region node, one process) after one check of each kind; a
/// doc naming a metric that does not exist fails here. Counters of rare
/// events are registered at 0 at start (`telemetry::COUNTERS_AT_ZERO`),
/// and each of those is also emitted by the code, so the list cannot keep
/// a renamed metric alive.
#[test]
fn every_metric_the_docs_name_is_in_metrics() {
    let packages = package_names();
    let mut documented: BTreeSet<(String, String)> = BTreeSet::new();
    for doc in documents() {
        let name = doc
            .strip_prefix(root())
            .unwrap_or(&doc)
            .display()
            .to_string();
        for metric in metric_names(&read(&doc), &packages) {
            documented.insert((metric, name.clone()));
        }
    }
    assert!(
        documented.len() > 10,
        "the docs name metrics: {documented:?}"
    );

    // Each counter registered at 0 is also emitted somewhere else.
    let mut sources = Vec::new();
    files(&root().join("crates"), "rs", &mut sources);
    let telemetry = root().join("crates/tollgate-server/src/telemetry.rs");
    let code: String = sources
        .iter()
        .filter(|p| p.components().any(|c| c.as_os_str() == "src"))
        .filter(|p| !p.ends_with("crates/tollgate-server/src/telemetry.rs"))
        .map(|p| read(p))
        .collect();
    assert!(read(&telemetry).contains("COUNTERS_AT_ZERO"));
    for name in tollgate_server::telemetry::COUNTERS_AT_ZERO {
        assert!(
            code.contains(&format!("\"{name}\"")),
            "{name} is registered at 0 but nothing else names it"
        );
    }

    let _one = one_dev_at_a_time();
    let data = tempfile::tempdir().unwrap();
    let base = common::free_base_port();
    let mut dev = Dev::start(data.path(), &["--base-port", &base.to_string()]);
    dev.wait_ready();
    let listed = common::endpoints(data.path());
    let ca = data.path().join("tls/ca.pem");
    let credential = read(&data.path().join("app.credential"));
    let eu1 = listed["regions"][0]["nodes"][0]["check"]
        .as_str()
        .unwrap()
        .to_string();
    // One check of each kind: allowed (checks, latency, geography), one
    // that consumes a unit of a hard cap (the region leases quota from the
    // origin), one without a credential (refused at the check port).
    for (credential, args, want) in [
        (
            Some(credential.trim()),
            vec![
                "--account",
                "acme",
                "--subject",
                "alice",
                "--feature",
                "export",
                "--ip",
                "192.0.2.10",
            ],
            Some(0),
        ),
        (
            Some(credential.trim()),
            vec![
                "--account",
                "hooli",
                "--feature",
                "render",
                "--consume",
                "1",
            ],
            Some(0),
        ),
        (
            None,
            vec!["--account", "acme", "--feature", "export"],
            Some(5),
        ),
    ] {
        let mut command = common::tollgate();
        command
            .args(["ctl", "check", "--ca"])
            .arg(&ca)
            .args(["--endpoint", &eu1])
            .args(&args)
            .env_remove("TOLLGATE_CREDENTIAL");
        if let Some(credential) = credential {
            command.env("TOLLGATE_CREDENTIAL", credential);
        }
        // A consuming check needs the region's leader; on a loaded machine
        // an election may be under way: a failure (exit 1, UNAVAILABLE) is
        // asked again until the deadline, anything else is the answer.
        tollgate_testkit::wait_until_blocking(
            &format!("ctl check {args:?} to exit {want:?}"),
            std::time::Duration::from_secs(30),
            || {
                let out = command.output().unwrap();
                let seen = format!(
                    "exit {:?}: {}{}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                match out.status.code() {
                    code if code == want => Ok(()),
                    Some(1) => Err(seen),
                    _ => panic!("ctl check {args:?}: {seen}"),
                }
            },
        )
        .unwrap();
    }

    let mut urls = vec![listed["origin"]["metrics"].as_str().unwrap().to_string()];
    for region in listed["regions"].as_array().unwrap() {
        for node in region["nodes"].as_array().unwrap() {
            urls.push(node["metrics"].as_str().unwrap().to_string());
        }
    }
    let client = https_client(&ca);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let missing = runtime.block_on(tollgate_testkit::wait_until(
        "every documented metric in /metrics",
        Duration::from_secs(30),
        || {
            let client = client.clone();
            let urls = urls.clone();
            let documented = documented.clone();
            async move {
                let mut seen = BTreeSet::new();
                for url in &urls {
                    let text = client
                        .get(url)
                        .send()
                        .await
                        .map_err(|e| format!("{url}: {e}"))?
                        .text()
                        .await
                        .map_err(|e| format!("{url}: {e}"))?;
                    seen.extend(exposed(&text));
                }
                let missing: Vec<String> = documented
                    .iter()
                    .filter(|(metric, _)| !seen.contains(metric))
                    .map(|(metric, doc)| format!("{metric} (named in {doc})"))
                    .collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(format!("not in /metrics: {}", missing.join(", ")))
                }
            }
        },
    ));
    dev.signal("INT");
    assert_eq!(dev.wait_exit(Duration::from_secs(30)).code(), Some(0));
    if let Err(error) = missing {
        panic!("{error}");
    }
}

/// A command of the README's first screen, as written, with the exit code
/// its trailing comment names (`# exit 10`; 0 when it names none).
#[derive(Debug)]
struct Documented {
    command: String,
    exit: i32,
}

/// The README's first screen: everything before its first `## ` heading.
fn first_screen() -> String {
    let readme = read(&root().join("README.md"));
    match readme.find("\n## ") {
        Some(end) => readme[..end].to_string(),
        None => readme,
    }
}

/// The exit code a comment names (`... exit 10 ...`).
fn exit_named(comment: &str) -> Option<i32> {
    let at = comment.find("exit ")?;
    comment[at + 5..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Commands in ```sh blocks (a trailing `# comment` may name the exit
/// code) and `tollgate ...` in inline code.
fn documented_commands(screen: &str) -> Vec<Documented> {
    let mut commands = Vec::new();
    let mut in_sh = false;
    for line in screen.lines() {
        let line = line.trim();
        if line.starts_with("```") {
            in_sh = !in_sh && line == "```sh";
            continue;
        }
        if in_sh {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (command, comment) = match line.find("   #").or_else(|| line.find(" # ")) {
                Some(at) => (line[..at].trim(), &line[at..]),
                None => (line, ""),
            };
            commands.push(Documented {
                command: command.to_string(),
                exit: exit_named(comment).unwrap_or(0),
            });
        } else {
            for (i, span) in line.split('`').enumerate() {
                if i % 2 == 1 && span.starts_with("tollgate ") {
                    commands.push(Documented {
                        command: span.to_string(),
                        exit: 0,
                    });
                }
            }
        }
    }
    commands
}

/// First-screen commands this test does not run, and why; every other one
/// runs.
const NOT_RUN_HERE: &[(&str, &str)] = &[
    (
        "cargo run --release -- dev",
        "this test starts it (with --data-dir and --base-port)",
    ),
    (
        "cargo test --workspace",
        "it is the test suite this test is part of",
    ),
    (
        "deploy/docker/build-image.sh",
        "needs a Docker engine (the deploy smoke test runs it)",
    ),
    (
        "deploy/compose/smoke.sh",
        "needs a Docker engine (it is the deploy smoke test)",
    ),
    (
        "tollgate dev --data-dir <dir>",
        "a second deployment; cli_dev's restart test starts dev again on its data",
    ),
];

/// `sh -c` of `command` with the README's placeholders and default ports
/// made this test's.
fn run_as_documented(command: &str, data: &Path, base: u16) -> std::process::Output {
    let bin = env!("CARGO_BIN_EXE_tollgate");
    let mut command = command
        .replace("<data-dir>", &data.display().to_string())
        .replace("127.0.0.1:7300", &format!("127.0.0.1:{base}"))
        .replace("127.0.0.1:7310", &format!("127.0.0.1:{}", base + 10))
        .replace(
            "127.0.0.1:8080",
            &format!("127.0.0.1:{}", base + common::REST_OFFSET),
        )
        .replace("target/release/tollgate ", &format!("{bin} "))
        .replace("cargo run --release -- ", &format!("{bin} "));
    if let Some(rest) = command.strip_prefix("tollgate ") {
        command = format!("{bin} {rest}");
    }
    Command::new("sh").arg("-c").arg(&command).output().unwrap()
}

/// The README's first screen runs as written (placeholders and default
/// ports made this test's), each command exiting with the code its comment
/// names, and so does every sample `tollgate dev` prints, with the exit
/// code printed beside it.
#[test]
fn the_readmes_first_screen_and_devs_samples_run_as_documented() {
    let screen = first_screen();
    let commands = documented_commands(&screen);
    assert!(
        commands
            .iter()
            .any(|c| c.command.contains("ctl check") && c.exit == 10),
        "the first screen shows a denied check and its exit code: {commands:?}"
    );
    for (prefix, _) in NOT_RUN_HERE {
        assert!(
            commands.iter().any(|c| c.command.starts_with(prefix)) || screen.contains(prefix),
            "{prefix:?} is no longer on the first screen: drop it from NOT_RUN_HERE"
        );
    }

    let _one = one_dev_at_a_time();
    let data = tempfile::tempdir().unwrap();
    let base = common::free_base_port();
    let mut dev = Dev::start(data.path(), &["--base-port", &base.to_string()]);
    dev.wait_ready();

    let mut failures = Vec::new();
    let mut ran = 0;
    for documented in &commands {
        if NOT_RUN_HERE
            .iter()
            .any(|(prefix, _)| documented.command.starts_with(prefix))
        {
            continue;
        }
        let out = run_as_documented(&documented.command, data.path(), base);
        ran += 1;
        if out.status.code() != Some(documented.exit) {
            failures.push(format!(
                "README: {}\n  exit {:?}, documented {}\n  {}{}",
                documented.command,
                out.status.code(),
                documented.exit,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(ran >= 3, "the first screen's commands ran: {commands:?}");

    // The samples dev printed: a `# comment` line naming the exit code
    // when it is not 0, then the command.
    let printed = dev.stdout();
    let samples = printed
        .split_once("\nTry")
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_default();
    let mut comment = None;
    let mut sampled = 0;
    for line in samples.lines().skip(1) {
        let line = line.trim();
        if let Some(about) = line.strip_prefix("# ") {
            comment = Some(about.to_string());
            continue;
        }
        if line.is_empty() || line.starts_with("Ctrl-C") {
            continue;
        }
        let about = comment
            .take()
            .unwrap_or_else(|| panic!("no comment before {line}"));
        let want = exit_named(&about).unwrap_or(0);
        let program = line.split_whitespace().next().unwrap_or_default();
        let installed = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {program}"))
            .output()
            .is_ok_and(|o| o.status.success());
        sampled += 1;
        if !installed {
            continue;
        }
        let out = Command::new("sh").arg("-c").arg(line).output().unwrap();
        if out.status.code() != Some(want) {
            failures.push(format!(
                "dev printed: {line}\n  # {about}\n  exit {:?}, documented {want}\n  {}{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(sampled >= 4, "dev printed its samples:\n{printed}");
    dev.signal("INT");
    assert_eq!(dev.wait_exit(Duration::from_secs(30)).code(), Some(0));
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
