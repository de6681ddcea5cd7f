//! What the tests of `tollgate dev` share: the binary, a free range of
//! ports for `--base-port`, and a `tollgate dev` process whose output is
//! kept (stdout for the banner, stderr for the log lines).
#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tollgate_testkit::wait_until_blocking;

pub fn tollgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
}

/// Ports `tollgate dev` takes from its base (`dev --help`).
pub const DEV_PORTS: u16 = 23;
/// The origin's REST port, from the base.
pub const REST_OFFSET: u16 = 20;
/// How long `tollgate dev` may take to be ready on a loaded 2-core machine.
pub const READY_DEADLINE: Duration = Duration::from_secs(120);

/// One `tollgate dev` at a time in a test binary: seven Raft members each
/// on a 2-core machine are load enough, and a second instance's load would
/// stretch the first's elections.
pub fn one_dev_at_a_time() -> MutexGuard<'static, ()> {
    static ONE: Mutex<()> = Mutex::new(());
    ONE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A base port whose 23 ports are all free now, below the ephemeral range
/// (so outgoing connections do not take them): candidates spread by
/// process id, and each call in this process takes the next one.
pub fn free_base_port() -> u16 {
    const LOW: u16 = 20_000;
    const HIGH: u16 = 32_000;
    const SLOTS: u16 = (HIGH - LOW) / DEV_PORTS;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() % u32::from(SLOTS)) as u16;
    for _ in 0..SLOTS {
        let slot = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SLOTS;
        let base = LOW + slot * DEV_PORTS;
        let all_free = (base..base + DEV_PORTS)
            .map(|port| std::net::TcpListener::bind(("127.0.0.1", port)))
            .collect::<Result<Vec<_>, _>>()
            .is_ok();
        if all_free {
            return base;
        }
    }
    panic!("no free range of {DEV_PORTS} ports between {LOW} and {HIGH}");
}

/// A `tollgate dev` process; killed if the test ends without stopping it.
pub struct Dev {
    child: tollgate_testkit::KillOnDrop,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

/// What a reader thread appends to.
fn keep(from: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { return };
            let mut text = into
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            text.push_str(&line);
            text.push('\n');
        }
    });
}

impl Dev {
    /// Starts `tollgate dev --data-dir <data> <args>`.
    pub fn start(data: &Path, args: &[&str]) -> Dev {
        let mut child = tollgate()
            .arg("dev")
            .arg("--data-dir")
            .arg(data)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tollgate dev starts");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        keep(child.stdout.take().expect("piped"), stdout.clone());
        keep(child.stderr.take().expect("piped"), stderr.clone());
        Dev {
            child: tollgate_testkit::KillOnDrop(child),
            stdout,
            stderr,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits until dev printed its banner (it ends with "Ctrl-C stops
    /// everything."); fails at once if dev exited first, with its output.
    pub fn wait_ready(&mut self) {
        let outcome = wait_until_blocking("tollgate dev to be ready", READY_DEADLINE, || {
            if self.stdout().contains("Ctrl-C stops everything.") {
                return Ok(Ok(()));
            }
            match self.child.try_wait() {
                Ok(Some(status)) => Ok(Err(format!(
                    "tollgate dev exited before it was ready: {status}"
                ))),
                _ => Err(format!("stderr so far: {}", last_lines(&self.stderr(), 3))),
            }
        });
        let failure = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(exited)) => exited,
            Err(timed_out) => timed_out.to_string(),
        };
        panic!(
            "{failure}\nstdout:\n{}\nstderr:\n{}",
            self.stdout(),
            last_lines(&self.stderr(), 40)
        );
    }

    /// Sends `signal` (`INT`, `TERM`) to dev.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.id().to_string())
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{signal} {}", self.id());
    }

    /// Waits (up to `deadline`) for dev to exit.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let started = Instant::now();
        let status = wait_until_blocking("tollgate dev to exit", deadline, || {
            match self.child.try_wait() {
                Ok(Some(status)) => Ok(status),
                Ok(None) => Err("still running".to_string()),
                Err(error) => Err(error.to_string()),
            }
        });
        match status {
            Ok(status) => status,
            Err(error) => panic!(
                "{error} ({:?} after asking)\nstderr:\n{}",
                started.elapsed(),
                last_lines(&self.stderr(), 40)
            ),
        }
    }

    /// Log lines at ERROR level: the level is the second field of a text
    /// log line (`<time> ERROR <target>: <message>`), colours removed.
    pub fn error_lines(&self) -> Vec<String> {
        error_lines(&self.stderr())
    }
}

/// Lines of `log` (tracing's text format) at ERROR level, without colour.
pub fn error_lines(log: &str) -> Vec<String> {
    log.lines()
        .map(strip_ansi)
        .filter(|line| line.split_whitespace().nth(1) == Some("ERROR"))
        .collect()
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The last `n` lines of `text`.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The JSON `dev` wrote to `<data>/endpoints.json`.
pub fn endpoints(data: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(data.join("endpoints.json")).expect("endpoints.json"))
        .expect("endpoints.json is JSON")
}
