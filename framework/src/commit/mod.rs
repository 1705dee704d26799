//! The commit protocol: offsets are committed only for complete epochs.
//!
//! Every sink's acknowledgement stream is probed by one [`CommitTracker`] per worker.
//! Epoch `E` is complete when every element of that probed frontier has an epoch above
//! `E`: then everything read in epochs `<= E` has been durably written. Each source keeps,
//! per epoch, the next offset of each of its partitions at the epoch's end, and commits
//! the latest complete snapshot ([`OffsetLedger`], see `docs/architecture.md`).

mod ledger;
mod tracker;

pub use ledger::{OffsetLedger, Position};
pub use tracker::CommitTracker;

use crate::error::Result;

/// Something that commits offsets once epochs are complete: one per source per worker.
pub trait Committer {
    /// Commits what was read in epochs below `complete_below`, waiting for the
    /// broker's answer.
    fn commit_complete(&mut self, complete_below: u64) -> Result<()>;
}
