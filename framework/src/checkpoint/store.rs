//! What a checkpoint store offers beyond reading and writing parts — listing and
//! removing — and the one implementation of the rules built on it: which manifest is
//! newest, which checkpoint is complete, what retention deletes.
//!
//! A store holds parts at `epoch-<C>/<operator>/<worker>` and manifests at
//! `manifest-<C>.json`, relative to its root (a directory, or a bucket and prefix).

use std::collections::BTreeSet;
use std::io;

use freshet_operators::checkpoint::StateStore;

use super::manifest::{Manifest, FORMAT};
use crate::error::{Error, Result};

/// A place checkpoints are kept: the local directory ([`super::LocalDir`]) or an
/// object store over the S3 protocol ([`super::S3`]).
pub trait Store: StateStore + std::fmt::Debug {
    /// Every object whose path starts with `prefix` (`""`: all), with its size in bytes,
    /// by path relative to the root.
    fn list(&self, prefix: &str) -> io::Result<Vec<(String, u64)>>;
    /// Removes every object whose path starts with `prefix`; nothing there is no error
    /// (another process of the job may have removed it first).
    fn remove_prefix(&self, prefix: &str) -> io::Result<()>;
    /// Where the store is, for messages: a directory or an `s3://` URL.
    fn location(&self) -> String;
}

/// The epoch a root-level name (a manifest or an `epoch-<C>` prefix) belongs to.
fn epoch_of_entry(top: &str) -> Option<u64> {
    Manifest::epoch_of(top).or_else(|| top.strip_prefix("epoch-").and_then(|e| e.parse().ok()))
}

/// The directory part of a listing prefix (`""` at the root): stores list by whole
/// directories and keep the paths that start with the whole prefix.
pub(super) fn dir_of(prefix: &str) -> &str {
    prefix.rsplit_once('/').map_or("", |(d, _)| d)
}

/// The first component of a path.
fn top_of(path: &str) -> &str {
    path.split('/').next().unwrap_or(path)
}

/// The prefix of every part of checkpoint `epoch`.
fn epoch_prefix(epoch: u64) -> String {
    format!("epoch-{epoch:020}/")
}

impl dyn Store {
    fn io(&self, what: &str, e: io::Error) -> Error {
        Error::Runtime(format!("checkpoint store {}: {what}: {e}", self.location()))
    }

    /// The root-level names: manifests and `epoch-<C>` prefixes.
    fn tops(&self) -> Result<BTreeSet<String>> {
        let all = self.list("").map_err(|e| self.io("listing", e))?;
        Ok(all.iter().map(|(p, _)| top_of(p).to_string()).collect())
    }

    /// The epochs of every manifest.
    pub fn manifests(&self) -> Result<Vec<u64>> {
        Ok(self
            .tops()?
            .iter()
            .filter_map(|t| Manifest::epoch_of(t))
            .collect())
    }

    /// The newest manifest, if any.
    pub fn latest_manifest(&self) -> Result<Option<Manifest>> {
        match self.manifests()?.into_iter().max() {
            Some(epoch) => self.manifest(epoch).map(Some),
            None => Ok(None),
        }
    }

    /// The manifest of checkpoint `epoch`.
    pub fn manifest(&self, epoch: u64) -> Result<Manifest> {
        let name = Manifest::file_name(epoch);
        let bytes = self
            .get(&name)
            .map_err(|e| self.io(&format!("reading {name}"), e))?
            .ok_or_else(|| Error::Runtime(format!("{name} vanished while it was read")))?;
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Config(format!("{}/{name} is not a manifest: {e}", self.location()))
        })?;
        if manifest.format != FORMAT {
            return Err(Error::Config(format!(
                "{}/{name} has part format {}; this build reads format {FORMAT}",
                self.location(),
                manifest.format
            )));
        }
        Ok(manifest)
    }

    /// Writes a manifest, atomically.
    pub fn put_manifest(&self, manifest: &Manifest) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(manifest).expect("a manifest serializes");
        self.put(&Manifest::file_name(manifest.epoch), &bytes)
            .map_err(|e| self.io(&format!("writing manifest {}", manifest.epoch), e))
    }

    /// The size of every part of checkpoint `epoch`, by path.
    pub fn part_sizes(&self, epoch: u64) -> Result<std::collections::HashMap<String, u64>> {
        let parts = self
            .list(&epoch_prefix(epoch))
            .map_err(|e| self.io("listing parts", e))?;
        Ok(parts.into_iter().collect())
    }

    /// Deletes the manifests older than the newest `retain`, and every part older than
    /// the oldest part the kept ones build on (parts of torn checkpoints too).
    pub fn retain(&self, retain: usize) -> Result<()> {
        let tops = self.tops()?;
        let mut manifests: Vec<u64> = tops.iter().filter_map(|t| Manifest::epoch_of(t)).collect();
        manifests.sort_unstable();
        let Some(&oldest_kept) = manifests.iter().rev().nth(retain.saturating_sub(1)) else {
            return Ok(());
        };
        // Checkpoints build on older parts of their own run only, and a later run's
        // parts are all newer than an earlier run's: the oldest kept manifest's chain
        // reaches back furthest.
        let parts_from = self.manifest(oldest_kept)?.chain_from.min(oldest_kept);
        for top in tops {
            let below = if top.starts_with("epoch-") {
                parts_from
            } else {
                oldest_kept
            };
            if epoch_of_entry(&top).is_some_and(|e| e < below) {
                // Parts first: a manifest is never left naming removed parts.
                let prefix = if top.starts_with("epoch-") {
                    format!("{top}/")
                } else {
                    top.clone()
                };
                self.remove_prefix(&prefix)
                    .map_err(|e| self.io("pruning", e))?;
            }
        }
        Ok(())
    }

    /// The greatest epoch any part was written at (complete checkpoint or not).
    pub fn newest_part_epoch(&self) -> Result<Option<u64>> {
        Ok(self
            .tops()?
            .iter()
            .filter_map(|t| t.strip_prefix("epoch-").and_then(|n| n.parse().ok()))
            .max())
    }
}
