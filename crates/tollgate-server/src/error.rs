use thiserror::Error;

#[derive(Debug, Error)]
pub enum NodeError {
    #[error(transparent)]
    Raft(#[from] tollgate_raft::Error),
    #[error(transparent)]
    Signing(#[from] tollgate_signing::SigningError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}
