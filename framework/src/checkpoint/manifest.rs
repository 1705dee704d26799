//! The manifest: what makes a checkpoint restorable.

use serde::{Deserialize, Serialize};

use crate::clock::now_ms;

/// The record, written last and atomically, that checkpoint `epoch` is complete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The format of the parts (bumped when it changes incompatibly).
    pub format: u32,
    /// State reflects the records of epochs `<= epoch`.
    pub epoch: u64,
    /// Its incremental parts build on parts at epochs `>= chain_from` only.
    pub chain_from: u64,
    /// How many workers wrote parts (each one part per name).
    pub workers: usize,
    /// The number of key groups state is split into.
    pub key_groups: u64,
    /// The checkpointing operators and sources, by their unique names.
    pub names: Vec<String>,
    /// When it was written, ms since the Unix epoch.
    pub written_ms: u64,
}

/// The current part format.
pub const FORMAT: u32 = 5;

impl Manifest {
    /// The manifest of checkpoint `epoch`, written by `workers` workers, whose parts
    /// build on parts at epochs `>= chain_from`.
    pub fn new(epoch: u64, chain_from: u64, workers: usize, mut names: Vec<String>) -> Self {
        names.sort();
        Manifest {
            format: FORMAT,
            epoch,
            chain_from,
            workers,
            key_groups: freshet_operators::checkpoint::KEY_GROUPS,
            names,
            written_ms: now_ms(),
        }
    }

    /// Its file name: ordered by epoch.
    pub fn file_name(epoch: u64) -> String {
        format!("manifest-{epoch:020}.json")
    }

    /// The epoch a manifest file name names, if it is one.
    pub fn epoch_of(file_name: &str) -> Option<u64> {
        file_name
            .strip_prefix("manifest-")?
            .strip_suffix(".json")?
            .parse()
            .ok()
    }
}
