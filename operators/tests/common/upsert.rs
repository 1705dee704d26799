//! The upsert contract of window results, checked the way a consumer reads them.
//!
//! A consumer of window results keeps, per `(key, start, end)`, the emission with the
//! highest revision and deletes the entry on `Retract`; it sees results in whatever
//! order they arrive. [`run_stepwise`] runs a dataflow and records its output in
//! arrival order with each result's timestamp; once the event-time frontier reaches
//! `W`, a consumer has read at least every result stamped below `W`
//! ([`Stepwise::read_by`]); [`Consumer`] replays that; [`check_contract`] compares the
//! consumer's table at every round's watermark with a sequential reference.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use freshet_operators::{Emit, Late, Time};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Inspect;
use timely::dataflow::StreamVec;

use super::{run_windowed, Round};

/// One window result as the tests see it: `(key, start, end, value, revision, kind)`.
pub type Result4 = (u8, u64, u64, u64, u32, Emit);

/// A window's identity for a consumer: `(key, start, end)`.
pub type Bounds = (u8, u64, u64);

/// Output in arrival order with the event time each result is stamped with, and the
/// watermarks the rounds reached.
pub struct Stepwise<O> {
    /// `(event time of its timestamp, output)`, in the order it arrived (all workers).
    pub arrived: Vec<(u64, O)>,
    /// The event-time watermark after each round, then `u64::MAX` (the end).
    pub watermarks: Vec<u64>,
}

impl<O: Clone> Stepwise<O> {
    /// What a consumer has read once the event-time frontier reached `w`: every
    /// result stamped below `w`, in arrival order. (It may have read results stamped
    /// later too; those can only be early results of windows still open.)
    pub fn read_by(&self, w: u64) -> impl Iterator<Item = &O> {
        self.arrived
            .iter()
            .filter(move |(t, _)| *t < w)
            .map(|(_, o)| o)
    }
}

/// Runs `build` over `rounds` at `workers` workers like `run_windowed`, recording
/// each output with its timestamp's event time, in arrival order.
pub fn run_stepwise<D, O, F>(workers: usize, rounds: &[Round<D>], build: F) -> Stepwise<O>
where
    D: timely::ExchangeData + Clone + Send + Sync,
    O: Clone + Send + Ord + 'static,
    F: for<'s> Fn(StreamVec<'s, Time, D>, StreamVec<'s, Time, Late<D>>) -> StreamVec<'s, Time, O>
        + Send
        + Sync
        + 'static,
{
    let arrived = Arc::new(Mutex::new(Vec::new()));
    let into = arrived.clone();
    run_windowed(workers, rounds, move |main, late| {
        let into = into.clone();
        build(main, late)
            .inspect_core(move |event| {
                if let Ok((stamp, data)) = event {
                    let t = stamp.iter().next().expect("one time").event;
                    let mut into = into.lock().unwrap();
                    into.extend(data.iter().map(|o| (t, o.clone())));
                }
            })
            .map(|_| ())
    });
    let arrived = arrived.lock().unwrap().clone();
    let mut watermarks: Vec<u64> = rounds.iter().map(|r| r.watermark).collect();
    watermarks.push(u64::MAX);
    Stepwise {
        arrived,
        watermarks,
    }
}

/// A consumer's table: per `(key, start, end)` the emission with the highest revision.
#[derive(Default)]
pub struct Consumer {
    table: BTreeMap<Bounds, (u32, Emit, u64)>,
}

impl Consumer {
    /// Applies one result: kept if its revision is higher than the one held.
    pub fn apply(&mut self, &(k, s, e, v, r, kind): &Result4) {
        let entry = self.table.entry((k, s, e)).or_insert((r, kind, v));
        if r >= entry.0 {
            *entry = (r, kind, v);
        }
    }

    /// The windows the consumer holds as settled (`Final` or `Late`), with values.
    pub fn settled(&self) -> BTreeMap<Bounds, u64> {
        self.table
            .iter()
            .filter(|(_, (_, kind, _))| matches!(kind, Emit::Final | Emit::Late))
            .map(|(b, (_, _, v))| (*b, *v))
            .collect()
    }

    /// The windows the consumer holds as provisional (`Early`).
    pub fn early(&self) -> Vec<Bounds> {
        self.table
            .iter()
            .filter(|(_, (_, kind, _))| *kind == Emit::Early)
            .map(|(b, _)| *b)
            .collect()
    }
}

/// The reference's table at watermark `w`: its results emitted at event times below
/// `w` (`(emitted at, result)`, in the reference's order), replayed by a consumer.
pub fn reference_view(reference: &[(u64, Result4)], w: u64) -> BTreeMap<Bounds, u64> {
    let mut consumer = Consumer::default();
    for (_, result) in reference.iter().filter(|(at, _)| *at < w) {
        consumer.apply(result);
    }
    consumer.settled()
}

/// Checks the upsert contract of `got` against `reference` (which has no early
/// results, so its revisions are 0, 1, 2, ... by construction):
/// - per `(key, start, end)` the revisions received are 0, 1, 2, ... with no
///   duplicate and no gap, and a `Retract` is the last of them;
/// - after every step, the consumer's settled windows equal the reference's at that
///   watermark, and every provisional (`Early`) one is still open (`end` above it);
/// - at the end no provisional window is left.
pub fn check_contract(got: &Stepwise<Result4>, reference: &[(u64, Result4)]) {
    let mut history: BTreeMap<Bounds, Vec<(u32, Emit)>> = BTreeMap::new();
    for &(_, (k, s, e, _, r, kind)) in &got.arrived {
        history.entry((k, s, e)).or_default().push((r, kind));
    }
    for (bounds, mut revisions) in history {
        revisions.sort();
        for (i, (r, kind)) in revisions.iter().enumerate() {
            assert_eq!(*r as usize, i, "{bounds:?}: revisions {revisions:?}");
            assert!(
                *kind != Emit::Retract || i + 1 == revisions.len(),
                "{bounds:?}: a Retract that is not the last revision: {revisions:?}"
            );
        }
    }
    for &w in &got.watermarks {
        let mut consumer = Consumer::default();
        got.read_by(w).for_each(|result| consumer.apply(result));
        assert_eq!(
            consumer.settled(),
            reference_view(reference, w),
            "settled windows at watermark {w}"
        );
        for (k, s, e) in consumer.early() {
            assert!(
                e > w,
                "early result for ({k}, {s}, {e}) still held at watermark {w}"
            );
        }
    }
    let mut consumer = Consumer::default();
    got.read_by(u64::MAX)
        .for_each(|result| consumer.apply(result));
    assert!(consumer.early().is_empty(), "early results left at the end");
}
