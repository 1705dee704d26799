//! Window assignment and the record a window operator emits.

use serde::{Deserialize, Serialize};

/// The result of a window for one key: `[start, end)` in event-time milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Windowed<K, V> {
    /// The key the result is for.
    pub key: K,
    /// Inclusive start of the window, in event-time milliseconds.
    pub start: u64,
    /// Exclusive end of the window, in event-time milliseconds.
    pub end: u64,
    /// The aggregate over the window's records for this key.
    pub value: V,
}

/// The start of the tumbling window of `size` milliseconds that holds `event`.
#[inline]
pub fn tumbling_start(event: u64, size: u64) -> u64 {
    event - event % size
}
