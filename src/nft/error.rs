//! What applying a table can fail with.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The table as built cannot be expressed (a bad name, a value of the wrong type, ...):
    /// found before anything was sent.
    #[error("nftables table {table}: {reason}")]
    Invalid { table: String, reason: String },
    #[error("nftables: network namespace {}: {source}", path.display())]
    Netns { path: PathBuf, source: io::Error },
    #[error("nftables netlink socket: {0}")]
    Socket(io::Error),
    /// The kernel refused message `index` of the transaction (described by `what`); it then
    /// applied none of it.
    #[error("nftables refused \"{what}\" (message {index} of the transaction): {}; nothing was changed", nix::errno::Errno::from_raw(*errno))]
    Refused { what: String, index: usize, errno: i32 },
    /// The kernel's answers were not what netlink promises.
    #[error("nftables netlink: {0}")]
    Protocol(String),
}

impl NftError {
    /// The kernel's errno, when it refused a transaction.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NftError::Refused { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}
