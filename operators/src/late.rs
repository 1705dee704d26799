//! Records that arrived behind the event-time watermark.

use serde::{Deserialize, Serialize};

/// A record whose event time was below its source's watermark when it was read.
///
/// A source cannot emit such a record at its own event time (its capability is
/// already past it), so it emits it on the late stream at the source's current time,
/// carrying the event time here. Operators with allowed lateness take late streams
/// and fold these records into windows they still keep.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Late<D> {
    /// The record's own event time, in milliseconds.
    pub event_time: u64,
    /// The watermark the record was behind when it was read.
    pub watermark: u64,
    /// The record.
    pub record: D,
}
