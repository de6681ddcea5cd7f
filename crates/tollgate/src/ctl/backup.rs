//! `ctl cluster backup` and `ctl cluster restore`: a node's data directory
//! copied file by file with a manifest of SHA-256 digests, and copied back
//! only into an empty directory after every digest checks out.
//!
//! The node must be stopped: its storage (sled) holds an exclusive lock on
//! its database file while it runs, which a backup tries to take first, so
//! a running node is refused rather than copied half-written. Take a
//! snapshot first (`ctl cluster snapshot`) to keep the copy small: the log
//! behind a snapshot is purged.

use super::{exit, CtlError, CtlResult, Global};
use clap::Args;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The manifest's file name, at the top of a backup.
pub const MANIFEST: &str = "tollgate-backup.json";

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The stopped node's data directory (`data_dir` of its config).
    #[arg(long)]
    data_dir: PathBuf,
    /// Where to write the backup: a directory that must not exist yet.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A backup written by `ctl cluster backup`.
    #[arg(long)]
    from: PathBuf,
    /// The node's data directory: must not exist, or be empty.
    #[arg(long)]
    data_dir: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    created_at: i64,
    source: String,
    files: Vec<FileEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileEntry {
    /// Relative to the data directory, `/`-separated.
    path: String,
    bytes: u64,
    sha256: String,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> CtlError {
    CtlError::new(
        exit::FAILURE,
        "IO",
        format!("{what} {}: {e}", path.display()),
    )
}

fn sha256_file(path: &Path) -> CtlResult<(u64, String)> {
    let mut file = std::fs::File::open(path).map_err(|e| io("reading", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| io("reading", path, e))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((total, hex))
}

/// Every regular file under `root`, relative, in a stable order.
fn files(root: &Path) -> CtlResult<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| io("listing", &dir, e))? {
            let entry = entry.map_err(|e| io("listing", &dir, e))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| io("reading", &path, e))?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                out.push(path.strip_prefix(root).expect("under root").to_path_buf());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Refuses a data directory whose storage is open: sled locks its `db`
/// file exclusively while a node runs.
fn ensure_stopped(data_dir: &Path, relative: &[PathBuf]) -> CtlResult<()> {
    for path in relative
        .iter()
        .filter(|p| p.file_name() == Some("db".as_ref()))
    {
        let full = data_dir.join(path);
        let file = std::fs::File::open(&full).map_err(|e| io("opening", &full, e))?;
        match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(CtlError::new(
                    exit::CONFLICT,
                    "NODE_RUNNING",
                    format!(
                        "{} is in use by a running node; stop the node first (a copy taken while it writes is not a backup)",
                        data_dir.display()
                    ),
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("locking", &full, e)),
        }
    }
    Ok(())
}

pub fn backup(global: &Global, args: BackupArgs) -> CtlResult<u8> {
    if !args.data_dir.is_dir() {
        return Err(CtlError::new(
            exit::NOT_FOUND,
            "NOT_FOUND",
            format!("{} is not a directory", args.data_dir.display()),
        ));
    }
    if args.out.exists() {
        return Err(CtlError::new(
            exit::CONFLICT,
            "EXISTS",
            format!(
                "{} exists; a backup goes to a new directory",
                args.out.display()
            ),
        ));
    }
    let relative = files(&args.data_dir)?;
    ensure_stopped(&args.data_dir, &relative)?;
    std::fs::create_dir_all(&args.out).map_err(|e| io("creating", &args.out, e))?;
    let mut entries = Vec::with_capacity(relative.len());
    for path in &relative {
        let from = args.data_dir.join(path);
        let to = args.out.join("data").join(path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("creating", parent, e))?;
        }
        std::fs::copy(&from, &to).map_err(|e| io("copying", &from, e))?;
        let (bytes, sha256) = sha256_file(&to)?;
        entries.push(FileEntry {
            path: path.to_string_lossy().replace('\\', "/"),
            bytes,
            sha256,
        });
    }
    let manifest = Manifest {
        created_at: tollgate_clock::Clock::system().now_secs(),
        source: args.data_dir.display().to_string(),
        files: entries,
    };
    let path = args.out.join(MANIFEST);
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&manifest).expect("a manifest serialises"),
    )
    .map_err(|e| io("writing", &path, e))?;
    let bytes: u64 = manifest.files.iter().map(|f| f.bytes).sum();
    report(global, "backed up", &manifest, bytes, &args.out);
    Ok(exit::OK)
}

pub fn restore(global: &Global, args: RestoreArgs) -> CtlResult<u8> {
    let path = args.from.join(MANIFEST);
    let text = std::fs::read(&path).map_err(|e| io("reading", &path, e))?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| {
        CtlError::usage(format!("{} is not a backup manifest: {e}", path.display()))
    })?;
    if args.data_dir.exists() {
        let mut entries =
            std::fs::read_dir(&args.data_dir).map_err(|e| io("listing", &args.data_dir, e))?;
        if entries.next().is_some() {
            return Err(CtlError::new(
                exit::CONFLICT,
                "NOT_EMPTY",
                format!(
                    "{} is not empty; restore into an empty data directory",
                    args.data_dir.display()
                ),
            ));
        }
    }
    // Every file checks out before anything is written.
    for file in &manifest.files {
        if file
            .path
            .split('/')
            .any(|part| part == ".." || part.is_empty())
        {
            return Err(CtlError::usage(format!(
                "the manifest names an unsafe path {:?}",
                file.path
            )));
        }
        let from = args.from.join("data").join(&file.path);
        let (bytes, sha256) = sha256_file(&from)?;
        if bytes != file.bytes || sha256 != file.sha256 {
            return Err(CtlError::new(
                exit::FAILURE,
                "CORRUPT_BACKUP",
                format!(
                    "{} does not match its digest in the manifest",
                    from.display()
                ),
            ));
        }
    }
    for file in &manifest.files {
        let from = args.from.join("data").join(&file.path);
        let to = args.data_dir.join(&file.path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("creating", parent, e))?;
        }
        std::fs::copy(&from, &to).map_err(|e| io("copying", &from, e))?;
    }
    let bytes: u64 = manifest.files.iter().map(|f| f.bytes).sum();
    report(global, "restored", &manifest, bytes, &args.data_dir);
    Ok(exit::OK)
}

fn report(global: &Global, what: &str, manifest: &Manifest, bytes: u64, to: &Path) {
    if global.output == super::Format::Json {
        println!(
            "{}",
            serde_json::json!({"files": manifest.files.len(), "bytes": bytes, "to": to, "source": manifest.source})
        );
    } else {
        println!(
            "{what} {} files ({bytes} bytes) to {}",
            manifest.files.len(),
            to.display()
        );
    }
}
