//! Where `tollgate dev` listens: one layout from `--base-port`, recorded in
//! `<data-dir>/ports.json` and kept for the data's life.
//!
//! From a base port B (7300 unless `--base-port`):
//!
//! | ports          | what                                              |
//! | -------------- | ------------------------------------------------- |
//! | B+0 .. B+2     | region eu, nodes 1-3: check service (gRPC)        |
//! | B+3 .. B+5     | region eu, nodes 1-3: Raft                        |
//! | B+6 .. B+8     | region eu, nodes 1-3: status and metrics (HTTP)   |
//! | B+10 .. B+18   | region us, the same                               |
//! | B+20           | origin REST API (8080 without `--base-port`)      |
//! | B+21           | origin changefeed                                 |
//! | B+22           | origin Raft                                       |
//!
//! `--http-port` moves the REST API and `--check-port` the check ports (eu
//! from it, us from it + 10). Port 0 (`--base-port 0`) lets the kernel pick
//! each port; what it picked is recorded like any other layout.
//!
//! Why a record: a Raft cluster keeps its members' addresses in its log, so
//! a restart on the same data must serve Raft on the same ports. A restart
//! reuses the recorded layout; `--http-port` and `--check-port` may move
//! those ports (nothing stores them), but a `--base-port` other than the
//! recorded one is refused at once, before anything is bound.
//!
//! Sans-IO: [`resolve`] takes the flags and the record and returns the
//! layout or the message that refuses them.

use serde::{Deserialize, Serialize};

/// The base port when `--base-port` is not given.
pub const BASE_PORT_DEFAULT: u16 = 7300;
/// The origin's REST port when neither `--base-port` nor `--http-port` is
/// given: the port `tollgate ctl --origin` defaults to.
pub const HTTP_PORT_DEFAULT: u16 = 8080;
/// Region `i`'s ports start at base + `REGION_STRIDE` × i.
const REGION_STRIDE: u16 = 10;
/// The origin's ports start at base + `ORIGIN_OFFSET`.
const ORIGIN_OFFSET: u16 = 20;
/// Ports a base covers: B .. B + `SPAN` - 1.
pub const SPAN: u16 = ORIGIN_OFFSET + 3;
/// Nodes per region.
pub const REGION_NODES: usize = 3;

/// The file in the data directory that records the layout.
pub const FILE: &str = "ports.json";

/// Every port of one `tollgate dev`, as bound (0 only before binding, for
/// a port the kernel is to pick).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// The `--base-port` the layout was made from (0: the kernel's picks).
    pub base: u16,
    pub origin: OriginPorts,
    /// In the order of `tollgate dev`'s regions.
    pub regions: Vec<RegionPorts>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginPorts {
    pub rest: u16,
    pub feed: u16,
    pub raft: u16,
}

/// A region's ports, node 1 first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionPorts {
    pub name: String,
    pub check: [u16; REGION_NODES],
    pub raft: [u16; REGION_NODES],
    pub status: [u16; REGION_NODES],
}

/// What a port is for, for messages and for binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    OriginRest,
    OriginFeed,
    OriginRaft,
    RegionCheck,
    RegionRaft,
    RegionStatus,
}

impl Role {
    /// Raft ports cannot move under existing data.
    pub fn is_raft(self) -> bool {
        matches!(self, Role::OriginRaft | Role::RegionRaft)
    }

    /// The flag that moves this port alone, if one does.
    pub fn own_flag(self) -> Option<&'static str> {
        match self {
            Role::OriginRest => Some("--http-port"),
            Role::RegionCheck => Some("--check-port"),
            _ => None,
        }
    }

    /// The flag that moves this port: its own, or `--base-port`.
    pub fn flag(self) -> &'static str {
        self.own_flag().unwrap_or("--base-port")
    }
}

/// One port of a layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    pub port: u16,
    pub role: Role,
    /// `origin REST API`, `region eu node 2 Raft`.
    pub what: String,
}

/// The port flags as given (`None`: not given).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requested {
    pub base: Option<u16>,
    pub http: Option<u16>,
    pub check: Option<u16>,
}

/// `base + offset`, or 0 when the kernel picks (`base` 0).
fn at(base: u16, offset: u16) -> u16 {
    if base == 0 {
        0
    } else {
        base + offset
    }
}

impl Layout {
    /// The layout from `base` for `regions` (at most two, the span of the
    /// table above); REST at base + 20.
    pub fn from_base(base: u16, regions: &[&str]) -> Result<Layout, String> {
        if base != 0 && u32::from(base) + u32::from(SPAN) - 1 > u32::from(u16::MAX) {
            return Err(format!(
                "--base-port {base}: the layout takes {SPAN} ports from it, up to {}; the highest port is {}",
                u32::from(base) + u32::from(SPAN) - 1,
                u16::MAX
            ));
        }
        assert!(
            regions.len() as u16 * REGION_STRIDE <= ORIGIN_OFFSET,
            "the layout holds two regions"
        );
        let regions = regions
            .iter()
            .enumerate()
            .map(|(index, name)| {
                let first = index as u16 * REGION_STRIDE;
                let nodes = |offset: u16| {
                    std::array::from_fn(|node| at(base, first + offset + node as u16))
                };
                RegionPorts {
                    name: name.to_string(),
                    check: nodes(0),
                    raft: nodes(REGION_NODES as u16),
                    status: nodes(2 * REGION_NODES as u16),
                }
            })
            .collect();
        Ok(Layout {
            base,
            origin: OriginPorts {
                rest: at(base, ORIGIN_OFFSET),
                feed: at(base, ORIGIN_OFFSET + 1),
                raft: at(base, ORIGIN_OFFSET + 2),
            },
            regions,
        })
    }

    /// `--http-port` and `--check-port` over this layout.
    fn with_overrides(mut self, http: Option<u16>, check: Option<u16>) -> Result<Layout, String> {
        if let Some(port) = http {
            self.origin.rest = port;
        }
        if let Some(first) = check {
            let last = u32::from(first)
                + u32::from(REGION_STRIDE) * (self.regions.len() as u32 - 1)
                + REGION_NODES as u32
                - 1;
            if first != 0 && last > u32::from(u16::MAX) {
                return Err(format!(
                    "--check-port {first}: the regions' check ports would reach {last}; the highest port is {}",
                    u16::MAX
                ));
            }
            for (index, region) in self.regions.iter_mut().enumerate() {
                region.check = std::array::from_fn(|node| {
                    at(first, index as u16 * REGION_STRIDE + node as u16)
                });
            }
        }
        Ok(self)
    }

    /// Every port with what it is for: the origin's, then each region's.
    pub fn uses(&self) -> Vec<Use> {
        let mut uses = vec![
            Use {
                port: self.origin.rest,
                role: Role::OriginRest,
                what: "origin REST API".into(),
            },
            Use {
                port: self.origin.feed,
                role: Role::OriginFeed,
                what: "origin changefeed".into(),
            },
            Use {
                port: self.origin.raft,
                role: Role::OriginRaft,
                what: "origin Raft".into(),
            },
        ];
        for region in &self.regions {
            for (ports, role, kind) in [
                (&region.check, Role::RegionCheck, "check service"),
                (&region.raft, Role::RegionRaft, "Raft"),
                (&region.status, Role::RegionStatus, "status"),
            ] {
                for (node, port) in ports.iter().enumerate() {
                    uses.push(Use {
                        port: *port,
                        role,
                        what: format!("region {} node {} {kind}", region.name, node + 1),
                    });
                }
            }
        }
        uses
    }

    /// The Raft ports, for messages: `7303-7305 (eu), 7313-7315 (us), 7322 (origin)`.
    pub fn raft_ports(&self) -> String {
        let mut parts: Vec<String> = self
            .regions
            .iter()
            .map(|r| format!("{} ({})", ports_text(&r.raft), r.name))
            .collect();
        parts.push(format!("{} (origin)", self.origin.raft));
        parts.join(", ")
    }

    /// Two uses of one port (other than 0) are a mistake in the flags.
    fn check_distinct(&self) -> Result<(), String> {
        let uses = self.uses();
        for (i, a) in uses.iter().enumerate() {
            if a.port == 0 {
                continue;
            }
            if let Some(b) = uses[i + 1..].iter().find(|b| b.port == a.port) {
                let flag = b.role.own_flag().unwrap_or(a.role.flag());
                return Err(format!(
                    "port {} would be both the {} and the {}: choose another with {flag}",
                    a.port, a.what, b.what
                ));
            }
        }
        Ok(())
    }
}

/// `7303-7305`, or the ports one by one when they do not follow.
fn ports_text(ports: &[u16]) -> String {
    let consecutive = ports.windows(2).all(|w| w[1] == w[0].wrapping_add(1));
    match (ports.first(), ports.last()) {
        (Some(first), Some(last)) if consecutive && ports.len() > 1 => format!("{first}-{last}"),
        _ => ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Where a start's layout came from: what a message about a port says to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Made from the flags (or their defaults) for new data.
    Flags,
    /// Recorded with the data (`ports.json`).
    Recorded,
}

/// The layout this start uses, from the flags and what the data directory
/// recorded (`recorded`: its `ports.json`, or `None` for new data); `Err`
/// says which flag to use instead.
pub fn resolve(
    requested: Requested,
    recorded: Option<&Layout>,
    regions: &[&str],
    data_dir: &str,
) -> Result<(Layout, Origin), String> {
    let (layout, origin) = match recorded {
        None => {
            let base = requested.base.unwrap_or(BASE_PORT_DEFAULT);
            let mut layout = Layout::from_base(base, regions)?;
            if requested.base.is_none() {
                layout.origin.rest = HTTP_PORT_DEFAULT;
            }
            (
                layout.with_overrides(requested.http, requested.check)?,
                Origin::Flags,
            )
        }
        Some(recorded) => {
            let names: Vec<&str> = recorded.regions.iter().map(|r| r.name.as_str()).collect();
            if names != regions {
                return Err(format!(
                    "{data_dir}/{FILE} lists regions {names:?}, not {regions:?}: it was not written by this tollgate dev; start on a new --data-dir"
                ));
            }
            if let Some(base) = requested.base.filter(|b| *b != recorded.base) {
                let kept = if recorded.base == 0 {
                    "ports the kernel picked".to_string()
                } else {
                    format!("--base-port {}", recorded.base)
                };
                return Err(format!(
                    "--base-port {base}: the data in {data_dir} was created with {kept}, and its Raft clusters \
                     keep their members' addresses (Raft ports {}) in their logs, so those ports cannot move. \
                     Start without --base-port (or with --base-port {}) to keep this data, or give a new \
                     --data-dir for the new ports. --http-port and --check-port may still move the REST \
                     and check ports.",
                    recorded.raft_ports(),
                    recorded.base
                ));
            }
            (
                recorded
                    .clone()
                    .with_overrides(requested.http, requested.check)?,
                Origin::Recorded,
            )
        }
    };
    layout.check_distinct()?;
    Ok((layout, origin))
}

/// Reads `<data-dir>/ports.json`: `None` when there is none (new data).
pub fn read(data_dir: &std::path::Path) -> Result<Option<Layout>, String> {
    let path = data_dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            format!(
                "{}: {e}; it records the ports this data was created with (see `tollgate dev --help`)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// Writes `layout` to `<data-dir>/ports.json`, durably (a temporary file
/// renamed over the old one).
pub fn write(data_dir: &std::path::Path, layout: &Layout) -> std::io::Result<()> {
    use std::io::Write;
    let path = data_dir.join(FILE);
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(layout).map_err(std::io::Error::other)?)?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGIONS: [&str; 2] = ["eu", "us"];

    fn resolve_new(requested: Requested) -> Result<Layout, String> {
        resolve(requested, None, &REGIONS, "D").map(|(layout, _)| layout)
    }

    #[test]
    fn the_default_layout_is_the_documented_one() {
        let layout = resolve_new(Requested::default()).unwrap();
        assert_eq!(
            layout.origin,
            OriginPorts {
                rest: 8080,
                feed: 7321,
                raft: 7322
            }
        );
        assert_eq!(layout.regions[0].check, [7300, 7301, 7302]);
        assert_eq!(layout.regions[0].raft, [7303, 7304, 7305]);
        assert_eq!(layout.regions[0].status, [7306, 7307, 7308]);
        assert_eq!(layout.regions[1].check, [7310, 7311, 7312]);
        assert_eq!(layout.regions[1].raft, [7313, 7314, 7315]);
        assert_eq!(layout.regions[1].status, [7316, 7317, 7318]);
        assert_eq!(
            layout.raft_ports(),
            "7303-7305 (eu), 7313-7315 (us), 7322 (origin)"
        );
        assert_eq!(layout.uses().len(), 3 + 2 * 9);
    }

    #[test]
    fn a_base_port_moves_every_port_rest_included() {
        let layout = resolve_new(Requested {
            base: Some(20000),
            ..Requested::default()
        })
        .unwrap();
        let mut ports: Vec<u16> = layout.uses().iter().map(|u| u.port).collect();
        ports.sort_unstable();
        assert_eq!(ports.first(), Some(&20000));
        assert_eq!(ports.last(), Some(&(20000 + SPAN - 1)));
        assert_eq!(layout.origin.rest, 20020);
        let overridden = resolve_new(Requested {
            base: Some(20000),
            http: Some(9999),
            check: Some(0),
        })
        .unwrap();
        assert_eq!(overridden.origin.rest, 9999);
        assert_eq!(overridden.regions[1].check, [0, 0, 0]);
        assert_eq!(overridden.regions[1].raft, [20013, 20014, 20015]);
    }

    #[test]
    fn base_zero_leaves_every_port_to_the_kernel() {
        let layout = resolve_new(Requested {
            base: Some(0),
            ..Requested::default()
        })
        .unwrap();
        assert!(layout.uses().iter().all(|u| u.port == 0));
    }

    #[test]
    fn bad_flags_are_refused_naming_the_flag() {
        let error = resolve_new(Requested {
            base: Some(65520),
            ..Requested::default()
        })
        .unwrap_err();
        assert!(error.starts_with("--base-port 65520"), "{error}");
        let error = resolve_new(Requested {
            check: Some(65530),
            ..Requested::default()
        })
        .unwrap_err();
        assert!(error.starts_with("--check-port 65530"), "{error}");
        let error = resolve_new(Requested {
            http: Some(7304),
            ..Requested::default()
        })
        .unwrap_err();
        assert!(
            error.contains(
                "port 7304 would be both the origin REST API and the region eu node 2 Raft"
            ) && error.contains("--http-port"),
            "{error}"
        );
    }

    #[test]
    fn a_restart_keeps_the_recorded_layout() {
        let mut recorded = resolve_new(Requested {
            base: Some(0),
            ..Requested::default()
        })
        .unwrap();
        // As bound: the kernel's picks.
        for (i, region) in recorded.regions.iter_mut().enumerate() {
            region.raft = [
                40001 + i as u16 * 3,
                40002 + i as u16 * 3,
                40003 + i as u16 * 3,
            ];
        }
        let (layout, origin) =
            resolve(Requested::default(), Some(&recorded), &REGIONS, "D").unwrap();
        assert_eq!((layout, origin), (recorded.clone(), Origin::Recorded));
        // The same base, or moves of ports nothing stores, are fine.
        let (layout, _) = resolve(
            Requested {
                base: Some(0),
                http: Some(9000),
                check: Some(9100),
            },
            Some(&recorded),
            &REGIONS,
            "D",
        )
        .unwrap();
        assert_eq!(layout.origin.rest, 9000);
        assert_eq!(layout.regions[1].check, [9110, 9111, 9112]);
        assert_eq!(layout.regions[1].raft, recorded.regions[1].raft);
    }

    #[test]
    fn a_restart_refuses_to_move_raft_ports_and_says_what_to_do() {
        let recorded = resolve_new(Requested::default()).unwrap();
        let error = resolve(
            Requested {
                base: Some(20000),
                ..Requested::default()
            },
            Some(&recorded),
            &REGIONS,
            "D",
        )
        .unwrap_err();
        for part in [
            "--base-port 20000",
            "created with --base-port 7300",
            "7303-7305 (eu), 7313-7315 (us), 7322 (origin)",
            "Start without --base-port (or with --base-port 7300)",
            "new --data-dir",
        ] {
            assert!(error.contains(part), "{part:?} in {error}");
        }
        let error = resolve(Requested::default(), Some(&recorded), &["eu"], "D").unwrap_err();
        assert!(error.contains("D/ports.json lists regions"), "{error}");
    }
}
