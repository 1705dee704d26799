//! The event time × epoch timestamp every Freshet dataflow runs on.
//!
//! [`Time`] is a pair ordered as a product: `a <= b` iff `a.event <= b.event` and
//! `a.epoch <= b.epoch`. The event coordinate is what windows and joins reason about
//! (so timely's frontier *is* the watermark); the epoch is a processing-time
//! ingestion round that offset commits are aligned to. See `docs/architecture.md`.
//!
//! Operators are generic over [`EventTime`], so they run on [`Time`] in jobs and on
//! a bare `u64` (event time only) in small examples.

use differential_dataflow::lattice::Lattice;
use serde::{Deserialize, Serialize};
use timely::order::PartialOrder;
use timely::progress::timestamp::{PathSummary, Refines, Timestamp};

/// A dataflow timestamp: event time (milliseconds since the Unix epoch) × epoch.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Time {
    /// Event time in milliseconds since the Unix epoch (possibly rounded to a tick).
    pub event: u64,
    /// The processing-time ingestion round the record was read in.
    pub epoch: u64,
}

impl Time {
    /// A time at `event` milliseconds in `epoch`.
    pub const fn new(event: u64, epoch: u64) -> Self {
        Time { event, epoch }
    }
}

impl PartialOrder for Time {
    #[inline]
    fn less_equal(&self, other: &Self) -> bool {
        self.event <= other.event && self.epoch <= other.epoch
    }
}

/// How far a path through the dataflow advances a [`Time`]: added per coordinate.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct TimeSummary {
    /// Milliseconds added to the event coordinate.
    pub event: u64,
    /// Rounds added to the epoch coordinate.
    pub epoch: u64,
}

impl PartialOrder for TimeSummary {
    #[inline]
    fn less_equal(&self, other: &Self) -> bool {
        self.event <= other.event && self.epoch <= other.epoch
    }
}

impl PathSummary<Time> for TimeSummary {
    #[inline]
    fn results_in(&self, src: &Time) -> Option<Time> {
        Some(Time {
            event: src.event.checked_add(self.event)?,
            epoch: src.epoch.checked_add(self.epoch)?,
        })
    }
    #[inline]
    fn followed_by(&self, other: &Self) -> Option<Self> {
        Some(TimeSummary {
            event: self.event.checked_add(other.event)?,
            epoch: self.epoch.checked_add(other.epoch)?,
        })
    }
}

impl Timestamp for Time {
    type Summary = TimeSummary;
    fn minimum() -> Self {
        Time::new(0, 0)
    }
}

impl Refines<()> for Time {
    fn to_inner(_: ()) -> Self {
        Time::minimum()
    }
    fn to_outer(self) {}
    fn summarize(_: TimeSummary) {}
}

impl Lattice for Time {
    #[inline]
    fn join(&self, other: &Self) -> Self {
        Time::new(self.event.max(other.event), self.epoch.max(other.epoch))
    }
    #[inline]
    fn meet(&self, other: &Self) -> Self {
        Time::new(self.event.min(other.event), self.epoch.min(other.epoch))
    }
}

/// A timestamp with an event-time coordinate that operators can read and replace.
pub trait EventTime: Timestamp + Lattice + Copy {
    /// The event time, in milliseconds.
    fn event(&self) -> u64;
    /// This time with its event coordinate replaced by `event`, other coordinates kept.
    fn with_event(&self, event: u64) -> Self;
    /// The epoch (processing-time round) of this time; 0 for timestamps without one.
    fn epoch(&self) -> u64 {
        0
    }
    /// This time with its epoch replaced by `epoch` (unchanged for timestamps without
    /// one).
    fn with_epoch(&self, epoch: u64) -> Self {
        let _ = epoch;
        *self
    }
}

impl EventTime for Time {
    #[inline]
    fn event(&self) -> u64 {
        self.event
    }
    #[inline]
    fn with_event(&self, event: u64) -> Self {
        Time::new(event, self.epoch)
    }
    #[inline]
    fn epoch(&self) -> u64 {
        self.epoch
    }
    #[inline]
    fn with_epoch(&self, epoch: u64) -> Self {
        Time::new(self.event, epoch)
    }
}

impl EventTime for u64 {
    #[inline]
    fn event(&self) -> u64 {
        *self
    }
    #[inline]
    fn with_event(&self, event: u64) -> Self {
        event
    }
}

/// The least event time among the elements of a frontier: the event-time watermark.
///
/// Every record that can still arrive has an event time at or above it. An empty
/// frontier (the input is finished) gives `u64::MAX`.
pub fn event_frontier<T: EventTime>(frontier: &[T]) -> u64 {
    frontier
        .iter()
        .map(EventTime::event)
        .min()
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_order_is_partial() {
        let a = Time::new(5, 2);
        let b = Time::new(3, 4);
        assert!(!a.less_equal(&b) && !b.less_equal(&a));
        assert!(Time::new(3, 2).less_equal(&a) && Time::new(3, 2).less_equal(&b));
        assert_eq!(a.join(&b), Time::new(5, 4));
        assert_eq!(a.meet(&b), Time::new(3, 2));
    }

    #[test]
    fn summaries_add_and_saturate_to_none() {
        let s = TimeSummary {
            event: 10,
            epoch: 1,
        };
        assert_eq!(s.results_in(&Time::new(5, 5)), Some(Time::new(15, 6)));
        assert_eq!(s.results_in(&Time::new(u64::MAX, 0)), None);
        assert_eq!(
            s.followed_by(&s),
            Some(TimeSummary {
                event: 20,
                epoch: 2
            })
        );
    }

    #[test]
    fn event_frontier_is_least_event() {
        assert_eq!(event_frontier(&[Time::new(7, 1), Time::new(4, 9)]), 4);
        assert_eq!(event_frontier::<Time>(&[]), u64::MAX);
    }

    #[test]
    fn differential_joins_and_counts_on_time() {
        use differential_dataflow::AsCollection;
        use timely::dataflow::operators::capture::{Capture, Extract};
        use timely::dataflow::operators::ToStream;

        let (sent, got) = std::sync::mpsc::channel();
        timely::execute_directly(move |worker| {
            worker.dataflow::<Time, _, _>(|scope| {
                // Updates carry their own times (at or after the stream's time, here zero).
                let left = vec![
                    ((1u8, 10u8), Time::new(0, 0), 1isize),
                    ((1, 11), Time::new(5, 1), 1),
                    ((1, 10), Time::new(5, 1), -1),
                ]
                .to_stream(scope)
                .as_collection();
                let right = vec![((1u8, 'a'), Time::new(0, 0), 1isize)]
                    .to_stream(scope)
                    .as_collection();
                left.join(right)
                    .map(|(k, _)| k)
                    .count()
                    .inner
                    .capture_into(sent);
            })
        });
        let mut updates: Vec<((u8, isize), Time, isize)> =
            got.extract().into_iter().flat_map(|(_, v)| v).collect();
        differential_dataflow::consolidation::consolidate_updates(&mut updates);
        // One match at (0, 0), replaced by another at (5, 1): the count stays 1.
        assert_eq!(updates, vec![((1, 1), Time::new(0, 0), 1)]);
    }
}
