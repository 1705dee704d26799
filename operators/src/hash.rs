//! The one hash function used for routing records between workers.
//!
//! It must give the same value for the same key in every worker of every process,
//! so it is seedless (FxHash), unlike std's randomly seeded `RandomState`.

use std::hash::{BuildHasher, Hash};

use timely::dataflow::channels::pact::Exchange;

/// Hashes `value` the same way on every worker and in every process.
#[inline]
pub fn hash<K: Hash + ?Sized>(value: &K) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(value)
}

/// The exchange pact that sends each record to the worker owning its key: the one
/// routing rule of every keyed operator. A key belongs to key group
/// `hash(key) % KEY_GROUPS` and a group to worker `group % workers`, so checkpointed
/// state can be split among any number of workers.
pub(crate) fn by_key<D: 'static, K: Hash>(
    key: impl Fn(&D) -> K + 'static,
) -> Exchange<D, impl FnMut(&D) -> u64 + 'static> {
    Exchange::new(move |d: &D| hash(&key(d)) % crate::checkpoint::KEY_GROUPS)
}
