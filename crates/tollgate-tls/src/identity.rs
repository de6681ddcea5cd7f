//! Who a certificate says its holder is: a SPIFFE ID in a URI SAN.
//!
//! ```text
//! spiffe://<trust-domain>/origin/node/<id>            an origin node
//! spiffe://<trust-domain>/region/<region>/node/<id>   a region node
//! spiffe://<trust-domain>/operator/<name>             a person or tool (tollgate ctl)
//! spiffe://<trust-domain>/app/<name>                  an application checking
//! ```
//!
//! The next layer (authorization) decides what each may do; this one only
//! says who is talking, and which kinds of peer a port lets in at all.

use std::fmt;

/// Longest trust domain, region or name in an identity, in bytes.
pub const NAME_BYTES_MAX: usize = 63;

/// What a certificate holder is, inside its trust domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A member of the origin cluster.
    OriginNode(u64),
    /// A member of one region's cluster.
    RegionNode { region: String, node: u64 },
    /// A person or tool administering the system (`tollgate ctl`).
    Operator(String),
    /// An application that checks entitlements.
    App(String),
}

/// A certificate holder: a trust domain and what it is there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub trust_domain: String,
    pub subject: Subject,
}

/// Why a URI is not an identity of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{uri:?} is not a Tollgate identity: {why}")]
pub struct IdentityError {
    pub uri: String,
    pub why: &'static str,
}

impl Identity {
    /// `subject` in `trust_domain`, with every name checked.
    pub fn new(trust_domain: &str, subject: Subject) -> Result<Identity, IdentityError> {
        let identity = Identity {
            trust_domain: trust_domain.to_string(),
            subject,
        };
        let uri = identity.to_string();
        let bad = |why| IdentityError {
            uri: uri.clone(),
            why,
        };
        if !valid_trust_domain(trust_domain) {
            return Err(bad("the trust domain must be 1-63 of a-z, 0-9, '.', '-'"));
        }
        let name_ok = match &identity.subject {
            Subject::OriginNode(id) => *id != 0,
            Subject::RegionNode { region, node } => *node != 0 && valid_name(region),
            Subject::Operator(name) | Subject::App(name) => valid_name(name),
        };
        if !name_ok {
            return Err(bad(
                "names must be 1-63 of a-z, A-Z, 0-9, '.', '_', '-' and node ids not 0",
            ));
        }
        Ok(identity)
    }

    /// Parses a SPIFFE ID of ours.
    pub fn parse(uri: &str) -> Result<Identity, IdentityError> {
        let bad = |why| IdentityError {
            uri: uri.to_string(),
            why,
        };
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| bad("it does not start with spiffe://"))?;
        let (domain, path) = rest.split_once('/').ok_or_else(|| bad("it has no path"))?;
        let parts: Vec<&str> = path.split('/').collect();
        let node_id = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| bad("the node id is not a number"))
        };
        let subject = match parts.as_slice() {
            ["origin", "node", id] => Subject::OriginNode(node_id(id)?),
            ["region", region, "node", id] => Subject::RegionNode {
                region: region.to_string(),
                node: node_id(id)?,
            },
            ["operator", name] => Subject::Operator(name.to_string()),
            ["app", name] => Subject::App(name.to_string()),
            _ => {
                return Err(bad(
                    "the path is none of origin/node/<id>, region/<region>/node/<id>, \
                     operator/<name>, app/<name>",
                ))
            }
        };
        Identity::new(domain, subject).map_err(|e| bad(e.why))
    }

    /// Another member of this node's own cluster, or `None` when this
    /// identity is not a node.
    pub fn sibling(&self, node: u64) -> Option<Identity> {
        let subject = match &self.subject {
            Subject::OriginNode(_) => Subject::OriginNode(node),
            Subject::RegionNode { region, .. } => Subject::RegionNode {
                region: region.clone(),
                node,
            },
            Subject::Operator(_) | Subject::App(_) => return None,
        };
        Some(Identity {
            trust_domain: self.trust_domain.clone(),
            subject,
        })
    }

    /// Whether `other` is a node of the same cluster as this node (same
    /// trust domain, both origin nodes or both nodes of one region).
    pub fn same_cluster(&self, other: &Identity) -> bool {
        self.trust_domain == other.trust_domain
            && match (&self.subject, &other.subject) {
                (Subject::OriginNode(_), Subject::OriginNode(_)) => true,
                (Subject::RegionNode { region: a, .. }, Subject::RegionNode { region: b, .. }) => {
                    a == b
                }
                _ => false,
            }
    }

    /// The rule that admits this node's own cluster: every origin node, or
    /// every node of this region.
    pub fn own_cluster(&self) -> Option<Allow> {
        match &self.subject {
            Subject::OriginNode(_) => Some(Allow::OriginNodes),
            Subject::RegionNode { region, .. } => Some(Allow::RegionNodesOf(region.clone())),
            Subject::Operator(_) | Subject::App(_) => None,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/", self.trust_domain)?;
        match &self.subject {
            Subject::OriginNode(id) => write!(f, "origin/node/{id}"),
            Subject::RegionNode { region, node } => write!(f, "region/{region}/node/{node}"),
            Subject::Operator(name) => write!(f, "operator/{name}"),
            Subject::App(name) => write!(f, "app/{name}"),
        }
    }
}

fn valid_trust_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= NAME_BYTES_MAX
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// A kind of peer a port lets in (or a client accepts as the server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allow {
    /// Any origin node.
    OriginNodes,
    /// Any node of this region.
    RegionNodesOf(String),
    /// Any region's nodes.
    RegionNodes,
    /// Operators (`tollgate ctl`).
    Operators,
    /// Applications.
    Apps,
    /// Exactly this one.
    Exactly(Subject),
}

impl Allow {
    /// Whether `subject` is let in by this rule.
    pub fn admits(&self, subject: &Subject) -> bool {
        match (self, subject) {
            (Allow::OriginNodes, Subject::OriginNode(_)) => true,
            (Allow::RegionNodesOf(want), Subject::RegionNode { region, .. }) => want == region,
            (Allow::RegionNodes, Subject::RegionNode { .. }) => true,
            (Allow::Operators, Subject::Operator(_)) => true,
            (Allow::Apps, Subject::App(_)) => true,
            (Allow::Exactly(want), got) => want == got,
            _ => false,
        }
    }
}

impl fmt::Display for Allow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Allow::OriginNodes => f.write_str("origin/node/*"),
            Allow::RegionNodesOf(region) => write!(f, "region/{region}/node/*"),
            Allow::RegionNodes => f.write_str("region/*/node/*"),
            Allow::Operators => f.write_str("operator/*"),
            Allow::Apps => f.write_str("app/*"),
            Allow::Exactly(subject) => {
                let shown = Identity {
                    trust_domain: String::new(),
                    subject: subject.clone(),
                }
                .to_string();
                f.write_str(shown.trim_start_matches("spiffe:///"))
            }
        }
    }
}

/// The peers a rule set admits, for messages: `origin/node/*, operator/*`.
pub fn describe(allow: &[Allow]) -> String {
    allow
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_print_and_parse_back() {
        let rows = [
            (
                "spiffe://acme.example/origin/node/3",
                Subject::OriginNode(3),
            ),
            (
                "spiffe://acme.example/region/eu-west/node/2",
                Subject::RegionNode {
                    region: "eu-west".into(),
                    node: 2,
                },
            ),
            (
                "spiffe://acme.example/operator/alice",
                Subject::Operator("alice".into()),
            ),
            (
                "spiffe://acme.example/app/billing",
                Subject::App("billing".into()),
            ),
        ];
        for (uri, subject) in rows {
            let parsed = Identity::parse(uri).unwrap();
            assert_eq!(parsed.subject, subject, "{uri}");
            assert_eq!(parsed.trust_domain, "acme.example");
            assert_eq!(parsed.to_string(), uri);
        }
    }

    #[test]
    fn malformed_identities_are_refused_with_the_reason() {
        let rows = [
            ("https://acme.example/origin/node/1", "spiffe://"),
            ("spiffe://acme.example", "no path"),
            ("spiffe://acme.example/origin/node/x", "not a number"),
            ("spiffe://acme.example/origin/node/0", "node ids not 0"),
            ("spiffe://ACME/origin/node/1", "trust domain"),
            ("spiffe://acme.example/region/e u/node/1", "names must"),
            ("spiffe://acme.example/admin/root", "the path is none"),
            (
                "spiffe://acme.example/origin/node/1/extra",
                "the path is none",
            ),
        ];
        for (uri, why) in rows {
            let error = Identity::parse(uri).unwrap_err();
            assert!(error.to_string().contains(why), "{uri}: {error}");
        }
    }

    #[test]
    fn rules_admit_only_their_kind() {
        let eu2 = Subject::RegionNode {
            region: "eu".into(),
            node: 2,
        };
        assert!(Allow::RegionNodesOf("eu".into()).admits(&eu2));
        assert!(!Allow::RegionNodesOf("us".into()).admits(&eu2));
        assert!(Allow::RegionNodes.admits(&eu2));
        assert!(!Allow::OriginNodes.admits(&eu2));
        assert!(Allow::Exactly(eu2.clone()).admits(&eu2));
        assert!(!Allow::Exactly(Subject::OriginNode(2)).admits(&eu2));
        assert!(!Allow::Operators.admits(&Subject::App("x".into())));
        let me = Identity::parse("spiffe://d/region/eu/node/1").unwrap();
        assert_eq!(me.sibling(2).unwrap().subject, eu2);
        assert!(me.same_cluster(&Identity::parse("spiffe://d/region/eu/node/3").unwrap()));
        assert!(!me.same_cluster(&Identity::parse("spiffe://d/region/us/node/1").unwrap()));
        assert!(!me.same_cluster(&Identity::parse("spiffe://e/region/eu/node/3").unwrap()));
        assert!(!me.same_cluster(&Identity::parse("spiffe://d/origin/node/1").unwrap()));
        assert_eq!(
            describe(&[Allow::Exactly(eu2), Allow::Operators]),
            "region/eu/node/2, operator/*"
        );
    }
}
