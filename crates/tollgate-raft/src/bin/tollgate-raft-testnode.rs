//! A single Tollgate Raft node running the key-value test state machine,
//! for crash tests that need a real process to kill (SIGKILL) and restart.
//!
//! Usage: `tollgate-raft-testnode --id N --data-dir DIR --listen HOST:PORT`
//! (port 0 picks a free one). Prints `READY <addr>` once serving; runs
//! until killed or until its standard input closes.

use std::process::ExitCode;

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tollgate_raft::{KvLogic, NodeConfig};

struct Args {
    id: u64,
    data_dir: String,
    listen: String,
}

fn parse() -> Result<Args, String> {
    let mut id = None;
    let mut data_dir = None;
    let mut listen = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--id" => id = Some(value.parse::<u64>().map_err(|e| format!("--id: {e}"))?),
            "--data-dir" => data_dir = Some(value),
            "--listen" => listen = Some(value),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(Args {
        id: id.ok_or("--id is required")?,
        data_dir: data_dir.ok_or("--data-dir is required")?,
        listen: listen.ok_or("--listen is required")?,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tollgate-raft-testnode: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tollgate-raft-testnode: bind {}: {e}", args.listen);
            return ExitCode::from(1);
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tollgate-raft-testnode: {e}");
            return ExitCode::from(1);
        }
    };
    let config = NodeConfig::new(args.id, &args.data_dir);
    let shutdown = async {
        // The parent holds our stdin; when it goes away, so do we.
        let mut buf = [0u8; 64];
        let mut stdin = tokio::io::stdin();
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let node = match tollgate_raft::Node::start(config, KvLogic, listener).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("tollgate-raft-testnode: start: {e}");
            return ExitCode::from(1);
        }
    };
    println!("READY {addr}");
    shutdown.await;
    match node.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate-raft-testnode: shutdown: {e}");
            ExitCode::from(1)
        }
    }
}
