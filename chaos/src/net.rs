//! The test network: one bridge (`tgchaos0`, 10.77.0.1/24 on the host),
//! one network namespace per node (`tgc-<node>`) joined to it by a veth
//! pair (`tgcv-<node>` on the host, `eth0` inside), and the packet filters
//! the nemesis uses to cut links.
//!
//! Faults are iptables rules *inside the node namespaces*, in a chain of
//! our own (`TGCHAOS`, jumped to from INPUT and OUTPUT), so they affect
//! only the addresses this harness created and vanish with the namespace.
//! The only rule outside them lets traffic cross our bridge when the host
//! filters bridged traffic (br_netfilter with a FORWARD policy of DROP, as
//! Docker leaves it); it carries the comment `tgchaos` and is removed on
//! teardown and by `chaos cleanup`.
//!
//! Everything this module creates is named with a prefix, so `chaos
//! cleanup` can remove what a killed run left behind.

use anyhow::{bail, Context};
use std::net::Ipv4Addr;
use std::process::Command;

pub const BRIDGE: &str = "tgchaos0";
/// Network namespaces are `tgc-<node>`.
pub const NETNS_PREFIX: &str = "tgc-";
/// Host-side veths are `tgcv-<node>` (at most 15 bytes: keep names short).
pub const VETH_PREFIX: &str = "tgcv-";
/// The namespace-side veth before it moves and is renamed `eth0`.
const PEER_PREFIX: &str = "tgcp-";
/// The comment on the host's FORWARD rule.
pub const RULE_COMMENT: &str = "tgchaos";
/// The filter chain inside each namespace that fault rules go into.
pub const CHAIN: &str = "TGCHAOS";
/// The host's address on the bridge: where the harness (workload, checker,
/// status polls) talks from. Faults never drop it.
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const PREFIX_LEN: u8 = 24;

/// Runs a command; its stdout, or an error with its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {} {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Sends `signal` (e.g. `libc::SIGKILL`) to process `pid`.
pub fn signal(pid: u32, signal: libc::c_int) -> anyhow::Result<()> {
    let pid = libc::pid_t::try_from(pid).context("a process id out of range")?;
    // SAFETY: kill(2) with a positive pid only signals that one process.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("signalling {pid}"));
    }
    Ok(())
}

/// Whether this process runs as root (uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Why the harness cannot run here, if it cannot: not root, or no
/// `ip netns` / `iptables`.
pub fn missing_prerequisite() -> Option<String> {
    if !is_root() {
        return Some("not running as root (network namespaces and iptables need it)".into());
    }
    if run("ip", &["netns", "list"]).is_err() {
        return Some("`ip netns` is not available".into());
    }
    if run("iptables", &["-w", "-S", "INPUT"]).is_err() {
        return Some("`iptables` is not available".into());
    }
    None
}

/// A direction of traffic, seen from the namespace holding the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Packets from the peer.
    In,
    /// Packets to the peer.
    Out,
}

/// One DROP rule inside a node's namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The node whose namespace holds the rule.
    pub node: String,
    pub direction: Direction,
    pub peer: Ipv4Addr,
    /// Drop only this share of packets (0 < p < 1); `None`: all.
    pub probability: Option<f64>,
}

/// The network of one run. Dropping it tears everything down.
pub struct Net {
    nodes: Vec<(String, Ipv4Addr)>,
    torn_down: bool,
}

pub fn netns(node: &str) -> String {
    format!("{NETNS_PREFIX}{node}")
}

impl Net {
    /// Creates the bridge and one namespace per `(node, address)`. Removes
    /// leftovers of an earlier run first. On error, what was created is
    /// removed.
    pub fn create(nodes: &[(String, Ipv4Addr)]) -> anyhow::Result<Net> {
        for (name, _) in nodes {
            anyhow::ensure!(
                VETH_PREFIX.len() + name.len() <= 15,
                "node name {name:?} is too long for an interface name"
            );
        }
        cleanup_leftovers()?;
        let mut net = Net {
            nodes: nodes.to_vec(),
            torn_down: false,
        };
        net.build().inspect_err(|_| net.teardown())?;
        Ok(net)
    }

    fn build(&mut self) -> anyhow::Result<()> {
        let host = format!("{HOST_IP}/{PREFIX_LEN}");
        run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
        run("ip", &["addr", "add", &host, "dev", BRIDGE])?;
        run("ip", &["link", "set", BRIDGE, "up"])?;
        run(
            "iptables",
            &[
                "-w",
                "-I",
                "FORWARD",
                "1",
                "-i",
                BRIDGE,
                "-o",
                BRIDGE,
                "-m",
                "comment",
                "--comment",
                RULE_COMMENT,
                "-j",
                "ACCEPT",
            ],
        )?;
        for (name, ip) in &self.nodes {
            let ns = netns(name);
            let veth = format!("{VETH_PREFIX}{name}");
            let peer = format!("{PEER_PREFIX}{name}");
            let addr = format!("{ip}/{PREFIX_LEN}");
            run("ip", &["netns", "add", &ns])?;
            run(
                "ip",
                &["link", "add", &veth, "type", "veth", "peer", "name", &peer],
            )?;
            run("ip", &["link", "set", &peer, "netns", &ns])?;
            run("ip", &["-n", &ns, "link", "set", &peer, "name", "eth0"])?;
            run("ip", &["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            run("ip", &["link", "set", &veth, "master", BRIDGE])?;
            run("ip", &["link", "set", &veth, "up"])?;
            for args in [
                vec!["-w", "-N", CHAIN],
                vec!["-w", "-A", "INPUT", "-j", CHAIN],
                vec!["-w", "-A", "OUTPUT", "-j", CHAIN],
            ] {
                let mut full = vec!["netns", "exec", &ns, "iptables"];
                full.extend(args);
                run("ip", &full)?;
            }
        }
        Ok(())
    }

    /// A handle for adding and removing fault rules.
    pub fn links(&self) -> Links {
        Links {
            nodes: self.nodes.clone(),
        }
    }

    /// Removes the namespaces, veths, bridge and host rule (best effort;
    /// idempotent).
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        if let Err(error) = cleanup_leftovers() {
            eprintln!("chaos: cleaning up the network: {error:#}");
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Adds and removes fault rules in the nodes' namespaces (owns nothing:
/// the [`Net`] tears down).
#[derive(Debug, Clone)]
pub struct Links {
    nodes: Vec<(String, Ipv4Addr)>,
}

impl Links {
    pub fn ip(&self, node: &str) -> Option<Ipv4Addr> {
        self.nodes
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, ip)| *ip)
    }

    fn rule_args(rule: &Rule, action: &str) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            netns(&rule.node),
            "iptables".into(),
            "-w".into(),
            action.into(),
            CHAIN.into(),
        ];
        let side = match rule.direction {
            Direction::In => "-s",
            Direction::Out => "-d",
        };
        args.extend([side.to_string(), format!("{}/32", rule.peer)]);
        if let Some(p) = rule.probability {
            args.extend(
                [
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &format!("{p:.3}"),
                ]
                .map(String::from),
            );
        }
        args.extend(["-j".to_string(), "DROP".to_string()]);
        args
    }

    /// Adds a DROP rule. Never for the harness's own address.
    pub fn add(&self, rule: &Rule) -> anyhow::Result<()> {
        assert_ne!(rule.peer, HOST_IP, "a fault must never cut the checker off");
        let args = Self::rule_args(rule, "-A");
        run("ip", &args.iter().map(String::as_str).collect::<Vec<_>>()).map(drop)
    }

    /// Removes a rule added by [`Net::add`].
    pub fn remove(&self, rule: &Rule) -> anyhow::Result<()> {
        let args = Self::rule_args(rule, "-D");
        run("ip", &args.iter().map(String::as_str).collect::<Vec<_>>()).map(drop)
    }

    /// Removes every fault rule in every namespace.
    pub fn heal_all(&self) -> anyhow::Result<()> {
        for (name, _) in &self.nodes {
            run(
                "ip",
                &["netns", "exec", &netns(name), "iptables", "-w", "-F", CHAIN],
            )?;
        }
        Ok(())
    }
}

/// What [`cleanup_leftovers`] removed.
#[derive(Debug, Default)]
pub struct Cleaned {
    pub processes: usize,
    pub namespaces: Vec<String>,
    pub links: Vec<String>,
    pub host_rules: usize,
}

/// Removes everything named with our prefixes: processes still running in
/// our namespaces (SIGKILL), the namespaces, veths, the bridge and the
/// host's FORWARD rule. Safe to run at any time; touches nothing else.
pub fn cleanup_leftovers() -> anyhow::Result<Cleaned> {
    let mut cleaned = Cleaned::default();
    let list = run("ip", &["netns", "list"])?;
    for ns in list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| ns.starts_with(NETNS_PREFIX))
    {
        if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
            for pid in pids.split_whitespace() {
                // SIGCONT first would be polite; SIGKILL ends stopped
                // processes too.
                let killed = pid
                    .parse::<u32>()
                    .ok()
                    .is_some_and(|p| signal(p, libc::SIGKILL).is_ok());
                if killed {
                    cleaned.processes += 1;
                }
            }
        }
        run("ip", &["netns", "del", ns])?;
        cleaned.namespaces.push(ns.to_string());
    }
    let links = run("ip", &["-o", "link", "show"])?;
    for link in links.lines().filter_map(|l| {
        // "12: tgcv-eu-1@if11: <...>"
        let name = l.split(':').nth(1)?.trim();
        Some(name.split('@').next()?.to_string())
    }) {
        if link.starts_with(VETH_PREFIX) || link.starts_with(PEER_PREFIX) || link == BRIDGE {
            // A veth disappears with its peer's namespace; ignore races.
            if run("ip", &["link", "del", &link]).is_ok() {
                cleaned.links.push(link);
            }
        }
    }
    let rules = run("iptables", &["-w", "-S", "FORWARD"])?;
    for rule in rules
        .lines()
        .filter(|l| l.starts_with("-A FORWARD") && l.contains(RULE_COMMENT))
    {
        // `-S` prints rules as they were added: replay with -D.
        let mut args: Vec<String> = vec!["-w".into()];
        args.extend(
            rule.replacen("-A", "-D", 1)
                .split_whitespace()
                .map(|s| s.trim_matches('"').to_string()),
        );
        run(
            "iptables",
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
        cleaned.host_rules += 1;
    }
    Ok(cleaned)
}
