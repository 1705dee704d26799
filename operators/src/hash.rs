//! The one hash function used for routing records between workers.
//!
//! It must give the same value for the same key in every worker of every process,
//! so it is seedless (FxHash), unlike std's randomly seeded `RandomState`.

use std::hash::{BuildHasher, Hash};

/// Hashes `value` the same way on every worker and in every process.
#[inline]
pub fn hash<K: Hash + ?Sized>(value: &K) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(value)
}
