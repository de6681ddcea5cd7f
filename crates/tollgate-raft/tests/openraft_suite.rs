//! openraft's storage conformance suite against the log store and state
//! machine, on sled and on the memory disk the simulation uses.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageIOError;
use tollgate_raft::store::MemDisk;
use tollgate_raft::types::StorageError;
use tollgate_raft::{open_storage, KvLogic, LogStore, SledStateMachine, StorageConfig, TypeConfig};

struct SledBuilder;

impl
    StoreBuilder<
        TypeConfig<KvLogic>,
        LogStore<KvLogic>,
        SledStateMachine<KvLogic>,
        tempfile::TempDir,
    > for SledBuilder
{
    async fn build(
        &self,
    ) -> Result<
        (
            tempfile::TempDir,
            LogStore<KvLogic>,
            SledStateMachine<KvLogic>,
        ),
        StorageError,
    > {
        let dir =
            tempfile::tempdir().map_err(|e| StorageIOError::write(openraft::AnyError::new(&e)))?;
        let mut config = StorageConfig::new(dir.path());
        config.cache_capacity_bytes = 4 * 1024 * 1024;
        let (log, sm) = open_storage(&config, Arc::new(KvLogic))
            .map_err(|e| StorageIOError::write(openraft::AnyError::new(&e)))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_suite_passes_on_sled_store() -> anyhow::Result<()> {
    Suite::test_all(SledBuilder).map_err(|e| anyhow::anyhow!("openraft suite failed: {e}"))
}

struct MemoryBuilder;

impl StoreBuilder<TypeConfig<KvLogic>, LogStore<KvLogic>, SledStateMachine<KvLogic>, MemDisk>
    for MemoryBuilder
{
    async fn build(
        &self,
    ) -> Result<(MemDisk, LogStore<KvLogic>, SledStateMachine<KvLogic>), StorageError> {
        let disk = MemDisk::new();
        let config = StorageConfig::in_memory(disk.clone());
        let (log, sm) = open_storage(&config, Arc::new(KvLogic))
            .map_err(|e| StorageIOError::write(openraft::AnyError::new(&e)))?;
        Ok((disk, log, sm))
    }
}

#[test]
fn openraft_suite_passes_on_the_memory_disk() -> anyhow::Result<()> {
    Suite::test_all(MemoryBuilder).map_err(|e| anyhow::anyhow!("openraft suite failed: {e}"))
}
