//! The role-specific state machine, as a pure function.
//!
//! A role (origin, region) says what its commands are and how one command
//! changes the state: [`StateMachineLogic::apply`] reads the current state
//! through [`ReadState`] and returns the writes to make plus a response. It
//! touches no sled, no clock and no randomness, so the same function runs in
//! unit tests over a [`MemState`], in a simulation, and under Raft.
//!
//! Region-local commands (seat leases, usage counters, the origin contact
//! time) carry everything that varies between nodes in the command itself:
//! the proposer stamps `now_ms` (or a lease expiry) into the command before
//! proposing it, so every node applies the same bytes to the same result.

use std::collections::BTreeMap;
use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Largest key a state machine may write, in bytes.
pub const KEY_BYTES_MAX: usize = 4 * 1024;
/// Largest value a state machine may write, in bytes. (sled stores larger
/// values as separate files that it never fsyncs.)
pub const VALUE_BYTES_MAX: usize = 256 * 1024;

/// Where in the log the command being applied sits. Deterministic: every
/// node sees the same context for the same entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyContext {
    /// The log index of the entry.
    pub log_index: u64,
    /// The term in which the entry was proposed.
    pub term: u64,
    /// The position of the command within its batch entry.
    pub position_in_entry: u32,
}

/// One write a command makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    /// Set `key` to `value`.
    Put {
        /// At most [`KEY_BYTES_MAX`] bytes.
        key: Vec<u8>,
        /// At most [`VALUE_BYTES_MAX`] bytes.
        value: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// At most [`KEY_BYTES_MAX`] bytes.
        key: Vec<u8>,
    },
    /// Remove every key that starts with `prefix` (as the state stands at
    /// this write, including earlier writes of the same batch). For bulk
    /// replacement, e.g. installing a snapshot of another system's state.
    DeletePrefix {
        /// At most [`KEY_BYTES_MAX`] bytes; may be empty (everything).
        prefix: Vec<u8>,
    },
}

impl Write {
    /// The key written.
    pub fn key(&self) -> &[u8] {
        match self {
            Write::Put { key, .. } | Write::Delete { key } => key,
            Write::DeletePrefix { prefix } => prefix,
        }
    }
}

/// What applying one command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied<R> {
    /// The writes, applied in order after the command.
    pub writes: Vec<Write>,
    /// The answer for the proposer.
    pub response: R,
}

/// Reading the state failed (a storage error underneath).
#[derive(Debug, thiserror::Error)]
#[error("state read failed: {0}")]
pub struct ReadError(pub String);

/// Read access to the state as it stands before the command (including the
/// writes of earlier commands of the same batch).
pub trait ReadState {
    /// The value under `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ReadError>;
}

/// A role's state machine.
pub trait StateMachineLogic: Send + Sync + 'static {
    /// A command proposed through Raft.
    type Command: Serialize + DeserializeOwned + Debug + Clone + Send + Sync + 'static;
    /// The answer to a command.
    type Response: Serialize + DeserializeOwned + Debug + Clone + Send + Sync + 'static;

    /// The field names of the JSON objects the role stores, numbered in
    /// this order in the stored form of its values (`store::value`). Only
    /// ever append: a stored value names its fields by number. A name not
    /// listed is stored spelled out.
    const FIELD_NAMES: &'static [&'static str] = &[];

    /// Apply one command. Must be deterministic: same command, same state,
    /// same context, same result, on every node. A refused command (say, no
    /// free seat) is a `response`, not an `Err`; `Err` is for a failed read
    /// and stops the node.
    fn apply(
        &self,
        ctx: &ApplyContext,
        command: &Self::Command,
        state: &dyn ReadState,
    ) -> Result<Applied<Self::Response>, ReadError>;
}

/// An in-memory state, for testing a role's apply without sled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemState {
    /// The key-value contents.
    pub data: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl ReadState for MemState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ReadError> {
        Ok(self.data.get(key).cloned())
    }
}

impl MemState {
    /// Apply `command` with `logic` and make its writes; returns the response.
    pub fn apply<L: StateMachineLogic>(
        &mut self,
        logic: &L,
        ctx: &ApplyContext,
        command: &L::Command,
    ) -> Result<L::Response, ReadError> {
        let applied = logic.apply(ctx, command, self)?;
        for write in applied.writes {
            match write {
                Write::Put { key, value } => {
                    self.data.insert(key, value);
                }
                Write::Delete { key } => {
                    self.data.remove(&key);
                }
                Write::DeletePrefix { prefix } => {
                    self.data.retain(|key, _| !key.starts_with(&prefix));
                }
            }
        }
        Ok(applied.response)
    }
}

/// A key-value state machine for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default)]
pub struct KvLogic;

/// A command of [`KvLogic`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Set a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: String,
    },
    /// Set `key` to `new` only if it currently holds `expected` (`None`:
    /// absent). Shows a read-dependent command.
    CompareAndSwap {
        /// The key.
        key: String,
        /// The value it must hold.
        expected: Option<String>,
        /// The value to set.
        new: String,
    },
    /// Remove every key under a prefix.
    DeletePrefix {
        /// The prefix.
        prefix: String,
    },
}

/// A response of [`KvLogic`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvResponse {
    /// The value before the command.
    pub previous: Option<String>,
    /// Whether the command changed the state.
    pub changed: bool,
}

impl StateMachineLogic for KvLogic {
    type Command = KvCommand;
    type Response = KvResponse;

    fn apply(
        &self,
        _ctx: &ApplyContext,
        command: &KvCommand,
        state: &dyn ReadState,
    ) -> Result<Applied<KvResponse>, ReadError> {
        let key = match command {
            KvCommand::Put { key, .. }
            | KvCommand::Delete { key }
            | KvCommand::CompareAndSwap { key, .. }
            | KvCommand::DeletePrefix { prefix: key } => key,
        };
        let previous = state
            .get(key.as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        let (writes, changed) = match command {
            KvCommand::Put { key, value } => (
                vec![Write::Put {
                    key: key.clone().into_bytes(),
                    value: value.clone().into_bytes(),
                }],
                true,
            ),
            KvCommand::Delete { key } => (
                vec![Write::Delete {
                    key: key.clone().into_bytes(),
                }],
                previous.is_some(),
            ),
            KvCommand::CompareAndSwap { key, expected, new } => {
                if *expected == previous {
                    (
                        vec![Write::Put {
                            key: key.clone().into_bytes(),
                            value: new.clone().into_bytes(),
                        }],
                        true,
                    )
                } else {
                    (Vec::new(), false)
                }
            }
            // `previous` is then the value stored under the prefix itself.
            KvCommand::DeletePrefix { prefix } => (
                vec![Write::DeletePrefix {
                    prefix: prefix.clone().into_bytes(),
                }],
                true,
            ),
        };
        Ok(Applied {
            writes,
            response: KvResponse { previous, changed },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(i: u64) -> ApplyContext {
        ApplyContext {
            log_index: i,
            term: 1,
            position_in_entry: 0,
        }
    }

    #[test]
    fn kv_apply_is_pure_and_sequential() {
        let mut state = MemState::default();
        let put = KvCommand::Put {
            key: "a".into(),
            value: "1".into(),
        };
        let r = state.apply(&KvLogic, &ctx(1), &put).unwrap();
        assert_eq!(
            r,
            KvResponse {
                previous: None,
                changed: true
            }
        );

        let cas_bad = KvCommand::CompareAndSwap {
            key: "a".into(),
            expected: Some("0".into()),
            new: "2".into(),
        };
        let r = state.apply(&KvLogic, &ctx(2), &cas_bad).unwrap();
        assert_eq!(
            r,
            KvResponse {
                previous: Some("1".into()),
                changed: false
            }
        );

        let cas_ok = KvCommand::CompareAndSwap {
            key: "a".into(),
            expected: Some("1".into()),
            new: "2".into(),
        };
        let r = state.apply(&KvLogic, &ctx(3), &cas_ok).unwrap();
        assert!(r.changed);
        assert_eq!(state.get(b"a").unwrap(), Some(b"2".to_vec()));

        let del = KvCommand::Delete { key: "a".into() };
        assert!(state.apply(&KvLogic, &ctx(4), &del).unwrap().changed);
        assert!(!state.apply(&KvLogic, &ctx(5), &del).unwrap().changed);
        assert!(state.data.is_empty());
    }
}
