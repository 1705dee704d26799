//! Checkpoints of tumbling, sliding and session windows: a run is cut off at a random round
//! ("crash"), a second run restores the newest complete checkpoint — at the same or
//! another number of workers — and reads on from the epoch after it. A consumer that
//! keeps the last result per `(key, start, end)` of both runs' output must hold exactly
//! the sequential reference's windows, and every result the second run emits again for
//! a window the first run had emitted must be an exact copy.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::crash::{self, Checkpointing, MemStore};
use common::{rounds, Rec, Round, Source};
use freshet_operators::aggregate::Sum;
use freshet_operators::checkpoint::{Checkpoints, LogPart, Restore, StateStore};
use freshet_operators::{
    Emit, IntervalJoin, JoinKind, Late, Rolling, RollingMode, RollingPolicy, Session, Slide, Time,
    Tumble, WindowJoin, WindowPolicy,
};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
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

    let mut emitted_first: BTreeMap<(u8, u64, u32), u64> = BTreeMap::new();
    for &(k, s, _, v, r, _) in &first {
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
    }
    // What a consumer of the upsert contract keeps (arrival order within a timestamp
    // is not an order, the revision is).
    let both: Vec<Result5> = first.into_iter().chain(second).collect();
    let got: BTreeMap<(u8, u64), u64> = upserts(&both)
        .into_iter()
        .map(|((k, s, _), v)| ((k, s), v))
        .collect();
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
        Checkpointing::every_epoch(1, false),
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

/// Twelve rounds of 20 records of 3 keys, spread over `spread` ms from the round's
/// watermark (10 ms apart): every key in every epoch.
fn steady(spread: u64) -> Vec<Round<Rec>> {
    (0..12u64)
        .map(|e| Round {
            watermark: e * 10,
            records: (0..20u64)
                .map(|i| {
                    (
                        e * 10 + i % spread,
                        ((i % 3) as u8, i + e, e * 10 + i % spread),
                    )
                })
                .collect(),
            late: vec![],
        })
        .collect()
}

/// A fixed case that certainly restores a checkpoint after several epochs.
#[test]
fn a_restore_after_several_epochs_is_exact() {
    let rounds = steady(17);
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

/// A closed window's state changes twice after its last record: when its final result
/// is emitted (its revision) and when a late record corrects it. Both changes must be in
/// the incremental parts after them, or a restored run loses a correction.
#[test]
fn closed_windows_changes_survive_incremental_parts() {
    let round = |watermark: u64, records: Vec<(u64, Rec)>, late: Vec<Rec>| Round {
        watermark,
        records,
        late: late
            .into_iter()
            .map(|record| Late {
                event_time: record.2,
                watermark,
                record,
            })
            .collect(),
    };
    // Key 1 gets 5 in [0, 10) (epoch 0); the window closes at epoch 2 (its final result,
    // revision 0); a late 3 read at epoch 3 corrects it at epoch 4 (revision 1, 8); a
    // late 4 at epoch 5 (revision 2, 12).
    let rounds = vec![
        round(0, vec![(1, (1, 5, 1))], vec![]),
        round(5, vec![], vec![]),
        round(15, vec![], vec![]),
        round(16, vec![], vec![(1, 3, 2)]),
        round(17, vec![], vec![]),
        round(18, vec![], vec![(1, 4, 3)]),
        round(19, vec![], vec![]),
    ];
    let build = crash::dataflow(|main, late| windows(main, late, Op::Tumble(10), 20));
    // Checkpoint 2 holds the closed window, 4 its correction, both as incremental parts
    // (only the first part is full).
    for restore_at in [2u64, 4] {
        let (first, second) = crash::cut_and_restore(&rounds, 5, restore_at, build);
        let both: Vec<Result5> = first.into_iter().chain(second).collect();
        assert_eq!(
            upserts(&both).get(&(1, 0, 10)),
            Some(&12),
            "restored from checkpoint {restore_at}: {both:?}"
        );
    }
}

/// Sessions that grow across every epoch: restoring each checkpoint in turn, each a
/// chain of incremental parts, must leave a consumer with what an uninterrupted run
/// leaves it.
#[test]
fn sessions_changes_survive_incremental_parts() {
    let rounds = steady(13);
    let op = Op::Session(4);
    let build = crash::dataflow(move |main, late| windows(main, late, op, 0));
    let whole = crash::run(
        Checkpointing::every_epoch(1, false),
        1,
        &rounds,
        0..rounds.len(),
        &Arc::new(MemStore::default()),
        None,
        build,
    )
    .out;
    for (epoch, first, second) in crash::restore_every_checkpoint(false, 1000, &rounds, 8, build) {
        let both: Vec<Result5> = first.into_iter().chain(second).collect();
        assert_eq!(
            upserts(&both),
            upserts(&whole),
            "restored from checkpoint {epoch}"
        );
    }
}

/// Two stateful operators in a row: per-key sums of 10 ms windows, then the sums of
/// those results per key over 40 ms windows. A result the first emits after its part
/// of checkpoint `C` must carry an epoch after `C`, or the second counts it in its own
/// part of `C` and again when the first re-emits it after a restore (parts written on
/// writer threads make the window between the two wide).
/// With `random = Some((cut, after, pick))` a random cut of [`crash::crash_then_restore`],
/// else every checkpoint of a one-worker run in turn.
fn check_pipeline(rounds: &[Round<Rec>], random: Option<(usize, usize, usize)>) {
    let build = crash::dataflow(|main, late| {
        let policy = WindowPolicy::new().lateness(0);
        let sums = main
            .tumble(
                "first",
                10,
                policy,
                Some(late),
                |r: &Rec| r.0,
                Sum::new(|r: &Rec| r.1),
            )
            .results
            .map(|w| (w.key, w.value, w.end - 1));
        sums.tumble_aggregate("second", 40, |r: &Rec| r.0, Sum::new(|r: &Rec| r.1))
            .map(|w| (w.key, w.start, w.end, w.value, w.revision, w.kind))
    });
    let store = Arc::new(MemStore::default());
    let whole = crash::run(
        Checkpointing::every_epoch(1, false),
        1,
        rounds,
        0..rounds.len(),
        &store,
        None,
        build,
    )
    .out;
    if let Some((cut, after, pick)) = random {
        let (first, second) = crash::crash_then_restore(rounds, cut, after, pick, build);
        let both: Vec<Result5> = first.into_iter().chain(second).collect();
        assert_eq!(upserts(&both), upserts(&whole), "cut at round {cut}");
        return;
    }
    for async_writes in [false, true] {
        for (epoch, first, second) in
            crash::restore_every_checkpoint(async_writes, 1000, rounds, 8, build)
        {
            let both: Vec<Result5> = first.into_iter().chain(second).collect();
            let context = format!("restored from {epoch}, async writes {async_writes}");
            assert_eq!(upserts(&both), upserts(&whole), "{context}");
        }
    }
}

/// Every checkpoint of a steady run restored in turn, parts written inline and on
/// writer threads.
#[test]
fn a_pipeline_restores_from_every_checkpoint() {
    let rounds = steady(13);
    check_pipeline(&rounds, None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn pipelines_restore_exactly(
        rounds in rounds(12), cut in 3usize..12, after in 1usize..4, pick in 0usize..16,
    ) {
        let cut = cut.min(rounds.len());
        check_pipeline(&rounds, Some((cut, after, pick)));
    }
}

/// A checkpoint's cost follows what changed, not what is held: after a full part with
/// 200 keys of open window state, the part of a checkpoint in which one key changed is
/// a small fraction of it.
#[test]
fn an_incremental_part_holds_only_what_changed() {
    let keys = 200u64;
    let mut rounds = vec![Round {
        watermark: 0,
        records: (0..keys).map(|k| (1, (k as u8, k, 1))).collect(),
        late: vec![],
    }];
    for e in 1..6u64 {
        rounds.push(Round {
            watermark: e,
            records: vec![(e + 1, (7, e, e + 1))],
            late: vec![],
        });
    }
    let build = crash::dataflow(|main, late| windows(main, late, Op::Tumble(1000), 0));
    let store = Arc::new(MemStore::default());
    let run = crash::run(
        Checkpointing::every_epoch(1000, false),
        1,
        &rounds,
        0..rounds.len() - 1,
        &store,
        None,
        build,
    );
    let name = &run.names[0];
    let size = |epoch: u64| {
        let part = store.get(&Checkpoints::part_path(epoch, name, 0)).unwrap();
        part.map_or(0, |bytes| bytes.len())
    };
    let (full, changed) = (size(0), size(3));
    assert!(
        full > 0 && changed > 0,
        "parts at epochs 0 and 3: {full}, {changed} bytes"
    );
    assert!(
        changed * 20 < full,
        "one key changed: {changed} bytes, against {full} for all {keys}"
    );
}

/// Checks the images compaction wrote of operator `name`'s chains at `worker`, read as
/// `LogPart<E, (u64, u8), V>` (entries keyed by window start and key): every entry
/// belongs to a window the image's extra lists (`listed`). Returns how many it checked.
fn only_listed_windows<E: DeserializeOwned, V: DeserializeOwned>(
    store: &MemStore,
    name: &str,
    worker: usize,
    listed: impl Fn(&E) -> Vec<u64>,
) -> usize {
    let mut checked = 0;
    for epoch in 1..30u64 {
        let path = Checkpoints::image_path(epoch, name, worker);
        let Some(bytes) = store.get(&path).unwrap() else {
            continue;
        };
        let part = LogPart::<E, (u64, u8), V>::decode(&bytes).unwrap();
        assert_eq!(part.base, None, "{path} is full");
        let windows = listed(&part.extra);
        for ((start, key), _) in &part.entries {
            assert!(
                windows.contains(start),
                "{name} at worker {worker}, part {epoch}: key {key} of window {start}, \
                 which the part does not list ({windows:?})"
            );
        }
        checked += 1;
    }
    checked
}

/// A run of all `rounds` at `workers`, with chains compacted every 3 parts: its store
/// and the checkpointing operators' names.
fn run_compacting<F: crash::Build<Result5>>(
    rounds: &[Round<Rec>],
    workers: usize,
    build: F,
) -> (Arc<MemStore>, Vec<String>) {
    let store = Arc::new(MemStore::default());
    let checkpointing = Checkpointing::every_epoch(3, false);
    let range = 0..rounds.len();
    let ran = crash::run(checkpointing, workers, rounds, range, &store, None, build);
    (store, ran.names)
}

/// Compaction keeps only what a restore reads. Closed windows' entries are never
/// removed one by one (a restore skips the windows a part does not list), so a part
/// compacted from a chain must leave them out, or parts grow with every window ever
/// opened: over 30 epochs of tumbling windows of 10 ms, 20 keys each, with chains
/// compacted every 3 parts, every image of windows (kept 50 ms for lateness, so most
/// parts are incremental), of both stages of a pre-aggregation at 2 workers and of a
/// window join holds only the windows it lists.
#[test]
fn compacted_images_hold_only_the_windows_still_listed() {
    let rounds: Vec<Round<Rec>> = (0..30u64)
        .map(|e| Round {
            watermark: e * 10,
            records: (0..20u64)
                .map(|k| (e * 10 + 1, (k as u8, k + e, e * 100 + k)))
                .collect(),
            late: vec![],
        })
        .collect();
    // `(open windows and their next early result, closed windows, late records, through)`.
    type WindowsExtra = (Vec<(u64, u64)>, Vec<u64>, Vec<(Time, Vec<Late<Rec>>)>, u64);
    let (store, names) = run_compacting(
        &rounds,
        1,
        crash::dataflow(|main, late| windows(main, late, Op::Tumble(10), 50)),
    );
    let checked = only_listed_windows::<WindowsExtra, (bool, (u64, u32, bool))>(
        &store,
        &names[0],
        0,
        |(open, closed, _, _)| open.iter().map(|(s, _)| *s).chain(closed.clone()).collect(),
    );
    assert!(checked >= 5, "{checked} images of windows");

    // At 2 workers (the lagging one reads every third round) epochs are sealed in
    // bursts, and an operator takes only the newest checkpoint of a burst: runs are
    // repeated until enough parts were compacted.
    type MergedExtra = (Vec<(u64, u64)>, Vec<u64>, Vec<(Time, Vec<()>)>, u64);
    let mut checked = 0;
    for _ in 0..50 {
        let (store, names) = run_compacting(
            &rounds,
            2,
            crash::dataflow(|main, _late| {
                main.tumble_preaggregate("p", 10, |r: &Rec| r.0, Sum::new(|r: &Rec| r.1))
                    .map(|w| (w.key, w.start, w.end, w.value, w.revision, w.kind))
            }),
        );
        for worker in 0..2 {
            for name in &names {
                checked += if name.ends_with("(pre-aggregate)") {
                    only_listed_windows::<Vec<u64>, ((), u64, ())>(&store, name, worker, |s| {
                        s.clone()
                    })
                } else {
                    only_listed_windows::<MergedExtra, (bool, u64, (u32, bool))>(
                        &store,
                        name,
                        worker,
                        |(open, _, _, _)| open.iter().map(|(s, _)| *s).collect(),
                    )
                };
            }
        }
        if checked >= 20 {
            break;
        }
    }
    assert!(checked >= 20, "{checked} images of the pre-aggregation");

    let (store, names) = run_compacting(
        &rounds,
        1,
        crash::dataflow(|main, _late| {
            let key = |r: &Rec| r.0;
            main.clone()
                .window_join_with(main, "j", 10, JoinKind::Inner, key, key, |_, a, b| {
                    a.2 + b.map_or(0, |b| b.2)
                })
                .map(|w| (w.key, w.start, w.end, w.value, w.revision, w.kind))
        }),
    );
    let checked = only_listed_windows::<(Vec<u64>, u64), (Vec<Rec>, Vec<Rec>, [u64; 2])>(
        &store,
        &names[0],
        0,
        |(starts, _)| starts.clone(),
    );
    assert!(checked >= 5, "{checked} images of the join");
}

/// Workers close a window at their own pace: two workers' parts of one checkpoint may
/// hold it closed for one worker's keys and open for the other's. Restored at one
/// worker, the window is both; closing the rest later must keep the keys already
/// closed, and a checkpoint taken in between must say which is which. Worker 0 of 2
/// closed `[0, 10)` for key 0 (watermark 20) before its part of checkpoint 1; worker 1
/// had not for key 1 (watermark 5). Restored at 1 worker, checkpoint 2 is taken with the
/// window still open for key 1; restored again, a late record for key 0 must correct
/// key 0's final (revision 1, 5 + 11), and key 1's final must count both its records.
#[test]
fn a_window_closed_by_one_worker_and_open_on_another_restores_at_one() {
    let store = Arc::new(MemStore::default());
    let build = crash::dataflow(|main, late| windows(main, late, Op::Tumble(10), 100));
    // Worker `index` of 2 reads `record` in epoch 0, then sees the watermark at
    // `watermark` through epochs 1 and 2, and crashes.
    let worker_of_two = |index: usize, record: Rec, watermark: u64| {
        let send =
            move |main: &mut Source<Rec>, late: &mut Source<Late<Rec>>, step: &mut dyn FnMut()| {
                main.send(Time::new(record.2, 0), record);
                for input_at in [Time::new(watermark, 1), Time::new(watermark, 2)] {
                    main.advance(input_at);
                    late.advance(input_at);
                    step();
                }
            };
        crash::worker_of((index, 2), &store, None, build, send, false)
    };
    assert_eq!(
        worker_of_two(0, (0, 5, 3), 20),
        vec![(0, 0, 10, 5, 0, Emit::Final)]
    );
    assert_eq!(worker_of_two(1, (1, 7, 4), 5), vec![]);
    let restored = crash::worker_of(
        (0, 1),
        &store,
        Some(Restore {
            epoch: 1,
            workers: 2,
        }),
        build,
        |main, late, step| {
            main.send(Time::new(8, 2), (1, 2, 8));
            main.advance(Time::new(8, 3));
            late.advance(Time::new(8, 3));
            step();
        },
        false,
    );
    assert_eq!(restored, vec![], "nothing closes at watermark 8");
    let mut again = crash::worker_of(
        (0, 1),
        &store,
        Some(Restore {
            epoch: 2,
            workers: 1,
        }),
        build,
        |_, late, _| {
            let record = Late {
                event_time: 6,
                watermark: 20,
                record: (0, 11, 6),
            };
            late.send(Time::new(20, 3), record);
        },
        true,
    );
    again.sort();
    assert_eq!(
        again,
        vec![(0, 0, 10, 16, 1, Emit::Late), (1, 0, 10, 9, 0, Emit::Final)]
    );
}

/// The rounds of a restore with a record behind the restored state: before the crash,
/// epoch 0 opens a window and a session of key 1 (records at 0 and 2), epoch 1's
/// watermark (100) closes them and checkpoint 1 holds them closed; after it, the
/// restarted source reads a record at `event` at watermark 3 (`on_main`: on time, else
/// late); uninterrupted, that record comes late at watermark 200. Returns `(before the
/// crash, after the restore, uninterrupted)`.
fn behind_rounds(event: u64, on_main: bool) -> [Vec<Round<Rec>>; 3] {
    let round = |watermark, records: Vec<u64>, late: Vec<u64>| Round {
        watermark,
        records: records.into_iter().map(|t| (t, (1, 1, t))).collect(),
        late: late
            .into_iter()
            .map(|t| Late {
                event_time: t,
                watermark,
                record: (1, 1, t),
            })
            .collect(),
    };
    let before = vec![
        round(0, vec![0, 2], vec![]),
        round(100, vec![], vec![]),
        round(200, vec![], vec![]),
        round(300, vec![], vec![]),
    ];
    let mut after = before.clone();
    after[2] = match on_main {
        true => round(3, vec![event], vec![]),
        false => round(3, vec![], vec![event]),
    };
    let mut whole = before.clone();
    whole[2] = round(200, vec![], vec![event]);
    [before, after, whole]
}

/// Runs `behind_rounds` through `build`: `(both runs' output, the uninterrupted run's,
/// records the restored run reported dropped as behind)`.
fn behind_runs<O: Clone + Send + 'static>(
    event: u64,
    on_main: bool,
    build: impl crash::Build<O>,
) -> (Vec<O>, Vec<O>, u64) {
    let [before, after, whole] = behind_rounds(event, on_main);
    let store = Arc::new(MemStore::default());
    let first = crash::run(
        Checkpointing::every_epoch(1, false),
        1,
        &before,
        0..3,
        &store,
        None,
        build.clone(),
    );
    let restore = Some(Restore {
        epoch: 1,
        workers: 1,
    });
    let second = crash::run(
        Checkpointing::every_epoch(1, false),
        1,
        &after,
        2..4,
        &store,
        restore,
        build.clone(),
    );
    let store = Arc::new(MemStore::default());
    let whole = crash::run(
        Checkpointing::every_epoch(1, false),
        1,
        &whole,
        0..4,
        &store,
        None,
        build,
    )
    .out;
    let both = first.out.into_iter().chain(second.out).collect();
    (both, whole, second.dropped)
}

/// After a restore, a source resumes at the watermark its checkpoint's epoch ended at,
/// which may be behind the watermark at which the operators had already closed windows
/// and emitted sessions (they see the next epoch's progress before they write their
/// part). A record read behind the restored state — on the main input, or late at a
/// watermark below it — was a late record for the run before the crash, and must be
/// one after it: a consumer of both runs' output ends with what an uninterrupted run
/// in which the record came late (at a watermark past the closed windows) leaves it.
#[test]
fn a_record_behind_the_restored_watermark_is_late() {
    for op in [Op::Tumble(10), Op::Slide(10, 5), Op::Session(4)] {
        for lateness in [0, 1_000] {
            // The record behind: inside the closed window and session, or stretching
            // the session; read on the main input or as late.
            for (event, on_main) in [(1, true), (5, true), (1, false), (5, false)] {
                let build = crash::dataflow(move |main, late| windows(main, late, op, lateness));
                let (both, whole, _) = behind_runs(event, on_main, build);
                assert_eq!(
                    upserts(&both),
                    upserts(&whole),
                    "{op:?}, lateness {lateness}, record at {event} on the {} input; \
                     both runs wrote {both:?}",
                    if on_main { "main" } else { "late" }
                );
            }
        }
    }
}

/// The same for rolling windows, exact and on arrival: a record read behind the
/// restored state is scored as the late record it was before the crash (within
/// lateness) or goes to `too_late`, and never joins the state other records read.
#[test]
fn a_record_behind_the_restored_watermark_is_late_for_rolling_windows() {
    for mode in [RollingMode::Exact, RollingMode::OnArrival] {
        for lateness in [0, 1_000] {
            let build = crash::dataflow(move |main, late| {
                let policy = RollingPolicy { mode, lateness };
                let sum = Sum::new(|r: &Rec| r.1);
                main.rolling("r", 10, policy, Some(late), |r: &Rec| r.0, sum)
                    .results
                    .map(|r| (r.record.0, r.record.2, 0, r.value, 0, Emit::Final, r.late))
            });
            for (event, on_main) in [(1, true), (5, true), (1, false), (5, false)] {
                let (mut both, mut whole, _) = behind_runs(event, on_main, build);
                both.sort();
                whole.sort();
                assert_eq!(
                    both, whole,
                    "{mode:?}, lateness {lateness}, record at {event}, on main {on_main}"
                );
            }
        }
    }
}

/// The same for the operators without a late input — a window join, pre-aggregated
/// windows and an interval join: a record behind a window emitted (or records expired)
/// before the crash was late then (its source dropped it), and is dropped after the
/// restore, so both runs write exactly the rows an uninterrupted run writes.
#[test]
fn a_record_behind_the_restored_watermark_is_late_for_joins_and_preaggregation() {
    let key = |r: &Rec| r.0;
    let join = crash::dataflow(move |main, _late| {
        main.clone()
            .window_join_with(main, "j", 10, JoinKind::Inner, key, key, |_, a, b| {
                a.2 * 100 + b.map_or(0, |b| b.2)
            })
            .map(|w| (w.key, w.start, w.end, w.value, w.revision, w.kind))
    });
    let preaggregated = crash::dataflow(move |main, _late| {
        main.tumble_preaggregate("p", 10, key, Sum::new(|r: &Rec| r.1))
            .map(|w| (w.key, w.start, w.end, w.value, w.revision, w.kind))
    });
    fn check(what: &str, build: impl crash::Build<Result5>) {
        for event in [1, 5] {
            let (mut both, mut whole, dropped) = behind_runs(event, true, build.clone());
            // Not silently: one record, on each side of a self-join.
            assert!(dropped > 0, "{what}: the record behind was not reported");
            both.sort_by_key(|r| (r.0, r.1, r.2, r.3, r.4));
            whole.sort_by_key(|r| (r.0, r.1, r.2, r.3, r.4));
            assert_eq!(both, whole, "{what}: record at {event}");
        }
    }
    let interval = crash::dataflow(move |main, _late| {
        let pair = |_: &u8, a: &Rec, b: Option<&Rec>| (a.0, a.2, b.map_or(0, |b| b.2));
        main.clone()
            .interval_join_with(main, "i", 5, 5, JoinKind::Left, key, key, pair)
            .map(|(k, ta, tb)| (k, ta, tb, 0, 0, Emit::Final))
    });
    check("join", join);
    check("pre-aggregation", preaggregated);
    check("interval join", interval);
}
