//! Window assignment, emission policy and the record a window operator emits.
//!
//! Every window operator emits [`Windowed`] records: an upsert keyed by
//! `(key, start, end)`. The first emission of a key's window has `revision` 0; each
//! later one (after early results, or a late correction) has the next revision and
//! carries the whole updated value, so a consumer keeps the highest revision per
//! `(key, start, end)`. [`Emit`] says why a record was emitted.

use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;

use std::cell::Cell;
use std::hash::Hash;
use std::rc::Rc;

use rustc_hash::FxHashMap;

use crate::late::Late;
use crate::time::EventTime;

/// Why a window result was emitted.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub enum Emit {
    /// A partial result while the window is still open (see [`WindowPolicy::early`]).
    Early,
    /// The result when the event-time frontier passed the window's end.
    #[default]
    Final,
    /// A correction after late records updated a window already emitted, or a window
    /// late records created.
    Late,
    /// The window no longer exists (a late record grew or merged the session): a
    /// consumer deletes `(key, start, end)`. Carries the value last emitted for it.
    Retract,
}

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
    /// 0 for the first emission of this key's window, then 1, 2, ...: the highest
    /// revision of a `(key, start, end)` is its current value.
    pub revision: u32,
    /// Why this result was emitted.
    pub kind: Emit,
}

impl<K, V> Windowed<K, V> {
    /// A result for `key`'s window `[start, end)`.
    pub(crate) fn new(key: K, start: u64, end: u64, value: V, revision: u32, kind: Emit) -> Self {
        Windowed {
            key,
            start,
            end,
            value,
            revision,
            kind,
        }
    }
}

/// When a window emits and how long it accepts late records.
///
/// The default is emit-final with no lateness: one result per key and window, when
/// the event-time frontier passes the window's end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowPolicy {
    /// How long (event-time ms) after its end a window's state is kept for late
    /// records: a late record updates its window, and the operator emits a correction,
    /// if it arrives at an event time below `end + lateness`.
    pub lateness: u64,
    /// If set, emit each open window's partial results (the keys changed since their
    /// last emission) whenever the event-time frontier crosses `start + n * period`
    /// (`n >= 1`) before the window's end; for sessions, a multiple of `period`.
    pub early: Option<u64>,
}

impl WindowPolicy {
    /// Emit-final, no lateness.
    pub const fn new() -> Self {
        WindowPolicy {
            lateness: 0,
            early: None,
        }
    }
    /// Keeps windows for `lateness` ms after their end for late records.
    pub const fn lateness(mut self, lateness: u64) -> Self {
        self.lateness = lateness;
        self
    }
    /// Emits early results every `period` ms of event time.
    pub const fn early(mut self, period: u64) -> Self {
        assert!(period > 0, "early period must be at least 1 ms");
        self.early = Some(period);
        self
    }
}

/// The outputs of a window operator.
pub struct WindowStreams<'scope, T: EventTime, K, V, D> {
    /// Window results (final, early and corrections).
    pub results: StreamVec<'scope, T, Windowed<K, V>>,
    /// Late records that arrived beyond their window's lateness: not applied to
    /// (one of) their windows, emitted at the time they arrived.
    pub too_late: StreamVec<'scope, T, Late<D>>,
    /// How many records this worker emitted on `too_late`.
    pub too_late_count: Rc<Cell<u64>>,
}

/// The start of the tumbling window of `size` milliseconds that holds `event`.
#[inline]
pub fn tumbling_start(event: u64, size: u64) -> u64 {
    event - event % size
}

/// The starts of the sliding windows of `size` ms, one every `slide` ms, that hold
/// `event`: the first and the last (step `slide`), `first <= last` when `slide <= size`.
#[inline]
pub fn sliding_starts(event: u64, size: u64, slide: u64) -> (u64, u64) {
    let last = event - event % slide;
    let first = match (event + 1).checked_sub(size) {
        Some(low) => low.div_ceil(slide) * slide,
        None => 0,
    };
    (first, last)
}

/// Window assignment: folds a message's records into the per-key entries of each
/// window that holds the message's event time (`windows`, in order; usually one),
/// creating entries with `create` and folding with `add`, which also hears the
/// window's position in `windows` and the key. With several windows the key is cloned
/// for all but the last.
#[inline]
pub(crate) fn fold_into<K: Hash + Eq + Clone, V, D>(
    windows: &mut [&mut FxHashMap<K, V>],
    batch: &mut Vec<D>,
    key: impl Fn(&D) -> K,
    create: impl Fn() -> V,
    mut add: impl FnMut(usize, &K, &mut V, &D),
) {
    match windows {
        [] => batch.clear(),
        [only] => {
            for record in batch.drain(..) {
                let k = key(&record);
                match only.get_mut(&k) {
                    Some(entry) => add(0, &k, entry, &record),
                    None => {
                        let entry = only.entry(k.clone()).or_insert_with(&create);
                        add(0, &k, entry, &record);
                    }
                }
            }
        }
        [others @ .., last] => {
            let n = others.len();
            for record in batch.drain(..) {
                let k = key(&record);
                for (i, keys) in others.iter_mut().enumerate() {
                    let entry = match keys.get_mut(&k) {
                        Some(entry) => entry,
                        None => keys.entry(k.clone()).or_insert_with(&create),
                    };
                    add(i, &k, entry, &record);
                }
                match last.get_mut(&k) {
                    Some(entry) => add(n, &k, entry, &record),
                    None => {
                        let entry = last.entry(k.clone()).or_insert_with(&create);
                        add(n, &k, entry, &record);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_starts_cover_event() {
        for event in 0..100u64 {
            for (size, slide) in [(10, 10), (10, 5), (10, 3), (7, 1), (1, 1)] {
                let (first, last) = sliding_starts(event, size, slide);
                let want: Vec<u64> = (0..=event)
                    .filter(|s| s % slide == 0 && *s <= event && event < s + size)
                    .collect();
                let got: Vec<u64> = (first..=last).step_by(slide as usize).collect();
                assert_eq!(got, want, "event {event} size {size} slide {slide}");
            }
        }
    }
}
