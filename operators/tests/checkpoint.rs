//! Checkpoints of tumbling, sliding and session windows: a run is cut off at a random round
//! ("crash"), a second run restores the newest complete checkpoint — at the same or
//! another number of workers — and reads on from the epoch after it. A consumer that
//! keeps the last result per `(key, start, end)` of both runs' output must hold exactly
//! the sequential reference's windows, and every result the second run emits again for
//! a window the first run had emitted must be an exact copy.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::crash::{self, MemStore};
use common::{rounds, Rec, Round, Source};
use freshet_operators::aggregate::Sum;
use freshet_operators::checkpoint::{Checkpoints, Restore, StateStore};
use freshet_operators::{Emit, Late, Session, Slide, Time, Tumble, WindowPolicy};
use proptest::prelude::*;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::StreamVec;

/// `(key, start, end, value, revision, kind)`.
type Result5 = (u8, u64, u64, u64, u32, Emit);

/// The operator under test.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// Tumbling windows of this size.
    Tumble(u64),
    /// Sliding windows: size, slide.
    Slide(u64, u64),
    /// Session windows with this gap.
    Session(u64),
}

impl Op {
    fn of(size: u64, slide: u64) -> Op {
        if slide == size {
            Op::Tumble(size)
        } else {
            Op::Slide(size, slide)
        }
    }
}

/// The dataflow under test: `op` summing values per key, its results as tuples.
fn windows<'s>(
    main: StreamVec<'s, Time, Rec>,
    late: StreamVec<'s, Time, Late<Rec>>,
    op: Op,
    lateness: u64,
) -> StreamVec<'s, Time, Result5> {
    let policy = WindowPolicy::new().lateness(lateness);
    let (key, sum) = (|r: &Rec| r.0, Sum::new(|r: &Rec| r.1));
    let late_in = Some(late);
    let w = match op {
        Op::Tumble(size) => main.tumble("t", size, policy, late_in, key, sum),
        Op::Slide(size, slide) => main.slide("s", size, slide, policy, late_in, key, sum),
        Op::Session(gap) => main.session("u", gap, policy, late_in, key, sum),
    };
    w.results
        .map(|w| (w.key, w.start, w.end, w.value, w.revision, w.kind))
}

/// Runs `rounds[..cut]` at 2 workers, crashes, and restores one of its complete
/// checkpoints (chosen by `pick`) at `after` workers (see `common::crash`).
fn crash_then_restore(
    rounds: &[Round<Rec>],
    cut: usize,
    op: Op,
    lateness: u64,
    after: usize,
    pick: usize,
) -> (Vec<Result5>, Vec<Result5>) {
    let build = crash::dataflow(move |main, late| windows(main, late, op, lateness));
    crash::crash_then_restore(rounds, cut, after, pick, build)
}

/// Per window, the last value a consumer keeps, from the reference's emissions.
fn reference(
    rounds: &[Round<Rec>],
    size: u64,
    slide: u64,
    lateness: u64,
) -> BTreeMap<(u8, u64), u64> {
    let mut sums: BTreeMap<(u8, u64), u64> = BTreeMap::new();
    let starts = |event: u64| {
        let (first, last) = freshet_operators::window::sliding_starts(event, size, slide);
        (first..=last).step_by(slide as usize)
    };
    for round in rounds {
        for (event, (k, v, _)) in &round.records {
            for s in starts(*event) {
                *sums.entry((*k, s)).or_default() += v;
            }
        }
        for late in &round.late {
            for s in starts(late.event_time) {
                if round.watermark < s + size + lateness {
                    *sums.entry((late.record.0, s)).or_default() += late.record.1;
                }
            }
        }
    }
    sums
}

#[allow(clippy::too_many_arguments)]
fn check(
    rounds: &[Round<Rec>],
    cut: usize,
    size: u64,
    slide: u64,
    lateness: u64,
    after: usize,
    pick: usize,
) {
    let (first, second) =
        crash_then_restore(rounds, cut, Op::of(size, slide), lateness, after, pick);

    let mut consumer: BTreeMap<(u8, u64), (u64, u32)> = BTreeMap::new();
    let mut emitted_first: BTreeMap<(u8, u64, u32), u64> = BTreeMap::new();
    for &(k, s, _, v, r, _) in &first {
        consumer.insert((k, s), (v, r));
        emitted_first.insert((k, s, r), v);
    }
    let mut copies = 0;
    for &(k, s, _, v, r, _) in &second {
        if let Some(&before) = emitted_first.get(&(k, s, r)) {
            assert_eq!(
                before, v,
                "({k}, {s}) revision {r} re-emitted with another value"
            );
            copies += 1;
        }
        consumer.insert((k, s), (v, r));
    }
    let got: BTreeMap<(u8, u64), u64> = consumer.into_iter().map(|(w, (v, _))| (w, v)).collect();
    assert_eq!(
        got,
        reference(rounds, size, slide, lateness),
        "cut at round {cut}, {copies} exact copies"
    );
}

/// What a consumer keeps of window results read in order: per `(key, start, end)` the
/// highest revision (the later of equal ones), deleted by `Retract`.
fn upserts(results: &[Result5]) -> BTreeMap<(u8, u64, u64), u64> {
    let mut table: BTreeMap<(u8, u64, u64), (u32, Emit, u64)> = BTreeMap::new();
    for &(k, s, e, v, r, kind) in results {
        let entry = table.entry((k, s, e)).or_insert((r, kind, v));
        if r >= entry.0 {
            *entry = (r, kind, v);
        }
    }
    table
        .into_iter()
        .filter(|(_, (_, kind, _))| *kind != Emit::Retract)
        .map(|(w, (_, _, v))| (w, v))
        .collect()
}

/// Session windows (merging, late records, retractions): a run crashed at round `cut`
/// and restored from a random complete checkpoint at `after` workers leaves a consumer
/// with exactly what an uninterrupted run leaves it (the uninterrupted run is checked
/// against a sequential reference in `session.rs`).
fn check_session(
    rounds: &[Round<Rec>],
    cut: usize,
    gap: u64,
    lateness: u64,
    after: usize,
    pick: usize,
) {
    let op = Op::Session(gap);
    let whole = crash::run(
        1,
        1,
        rounds,
        0..rounds.len(),
        &Arc::new(MemStore::default()),
        None,
        crash::dataflow(move |main, late| windows(main, late, op, lateness)),
    )
    .out;
    let (first, second) = crash_then_restore(rounds, cut, op, lateness, after, pick);
    let both: Vec<Result5> = first.into_iter().chain(second).collect();
    assert_eq!(upserts(&both), upserts(&whole), "cut at round {cut}");
}

/// A fixed case that certainly restores a checkpoint after several epochs.
#[test]
fn a_restore_after_several_epochs_is_exact() {
    let rounds: Vec<Round<Rec>> = (0..12u64)
        .map(|e| Round {
            watermark: e * 10,
            records: (0..20u64)
                .map(|i| (e * 10 + i % 17, ((i % 3) as u8, i + e, e * 10 + i % 17)))
                .collect(),
            late: vec![],
        })
        .collect();
    for after in [1, 2, 3] {
        for pick in 0..4 {
            check(&rounds, 7, 15, 15, 0, after, pick);
            check(&rounds, 7, 20, 5, 0, after, pick);
            check_session(&rounds, 7, 4, 0, after, pick);
        }
        // Only the first part full, restored from late in the run: sessions alive
        // across a chain of incremental parts.
        for pick in [5, 11, 17, 23, 29, 35, 41, 47, 53, 59, 65, 71] {
            check_session(&rounds, 11, 4, 0, after, pick);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn tumble_restores_exactly(
        rounds in rounds(10), cut in 1usize..10, size in 1u64..30, lateness in 0u64..40,
        after in 1usize..4, pick in 0usize..16,
    ) {
        let cut = cut.min(rounds.len());
        check(&rounds, cut, size, size, lateness, after, pick);
    }

    #[test]
    fn slide_restores_exactly(
        rounds in rounds(10), cut in 1usize..10, size in 2u64..30, div in 2u64..5,
        lateness in 0u64..40, after in 1usize..4, pick in 0usize..16,
    ) {
        let cut = cut.min(rounds.len());
        check(&rounds, cut, size, (size / div).max(1), lateness, after, pick);
    }

    #[test]
    fn session_restores_exactly(
        rounds in rounds(10), cut in 1usize..10, gap in 1u64..20, lateness in 0u64..30,
        after in 1usize..4, pick in 0usize..16,
    ) {
        let cut = cut.min(rounds.len());
        check_session(&rounds, cut, gap, lateness, after, pick);
    }
}

/// One run of a tumbling sum at one worker (see `common::crash::one_worker`).
fn one_worker(
    store: &Arc<MemStore>,
    restore: Option<Restore>,
    send: impl Fn(&mut Source<Rec>) + Send + Sync + 'static,
    finish: bool,
) -> Vec<Result5> {
    fn build(stream: StreamVec<'_, Time, Rec>) -> StreamVec<'_, Time, Result5> {
        stream
            .tumble_aggregate("t", 10, |r: &Rec| r.0, Sum::new(|r: &Rec| r.1))
            .map(|w| (w.key, w.start, w.end, w.value, w.revision, w.kind))
    }
    crash::one_worker(store, restore, build, send, finish)
}

/// A record of a later epoch that arrives before the checkpoint epoch is sealed must
/// wait: the checkpoint holds exactly the records of its epochs. Here a record of epoch
/// 2 arrives while epoch 0 is still open; checkpoint 0 is taken; the job dies; the
/// restart replays from after epoch 0 (so the epoch-2 record again) and the window's sum
/// must count it once.
#[test]
fn a_record_of_a_later_epoch_waits_for_the_checkpoint() {
    let store = Arc::new(MemStore::default());
    one_worker(
        &store,
        None,
        |main| {
            main.send(Time::new(5, 0), (1, 1, 5));
            main.send(Time::new(6, 2), (1, 10, 6));
            main.advance(Time::new(5, 1)); // epoch 0 sealed: checkpoint 0
        },
        false,
    );
    let part = Checkpoints::part_path(0, "Tumble(t, 10ms)", 0);
    assert!(store.get(&part).unwrap().is_some(), "checkpoint 0 written");
    let out = one_worker(
        &store,
        Some(Restore {
            epoch: 0,
            workers: 1,
        }),
        |main| main.send(Time::new(6, 2), (1, 10, 6)),
        true,
    );
    let sums: Vec<u64> = out.iter().map(|r| r.3).collect();
    assert_eq!(sums, vec![11], "window [0, 10) counts each record once");
}
