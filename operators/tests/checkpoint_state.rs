//! Checkpoints of keyed state, window and interval joins, lookups, rolling windows and
//! pre-aggregated windows: a run cut off at a random
//! round, restored from one of its complete checkpoints at the same or another number
//! of workers (`common::crash`), must leave a consumer of both runs' output with exactly
//! what a sequential reference emits; and a record of a later epoch waits for the
//! checkpoint.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::crash::{self, Checkpointing, MemStore};
use common::{rounds, steps, Rec, Round, Source};
use freshet_operators::aggregate::Sum;
use freshet_operators::checkpoint::{Checkpoints, LogPart, Restore, StateStore};
use freshet_operators::{
    IntervalJoin, JoinKind, KeyedState, Late, Rolling, RollingPolicy, Slide, Time, Tumble,
    WindowJoin,
};
use proptest::prelude::*;
use timely::dataflow::operators::vec::{Filter, Map};
use timely::dataflow::operators::Probe;
use timely::dataflow::StreamVec;

/// Keeps one record per key and event time in each round and across rounds, so no two
/// records of a key share an event time (their order would be arrival order); late
/// records likewise, among themselves.
fn distinct(mut rounds: Vec<Round<Rec>>) -> Vec<Round<Rec>> {
    let (mut seen, mut seen_late) = (BTreeSet::new(), BTreeSet::new());
    for round in &mut rounds {
        round.records.retain(|(_, r)| seen.insert((r.0, r.2)));
        round
            .late
            .retain(|l| seen_late.insert((l.record.0, l.record.2)));
    }
    rounds
}

/// A consumer of both runs: every output of either must be one the reference emits
/// (so a result emitted again is an exact copy), no run may emit one twice, and
/// together they must hold all of them. `id` names an output (what a consumer keys it by), `value` is the rest.
fn consume<O: Clone + Ord + std::fmt::Debug, I: Ord + std::fmt::Debug, V: Eq + std::fmt::Debug>(
    first: &[O],
    second: &[O],
    reference: &BTreeMap<I, V>,
    split: impl Fn(&O) -> (I, V),
    context: &str,
) {
    for run in [first, second] {
        let mut ids: Vec<I> = run.iter().map(|o| split(o).0).collect();
        ids.sort();
        let before = ids.len();
        ids.dedup();
        assert_eq!(
            before,
            ids.len(),
            "a run emitted an output twice; {context}"
        );
    }
    let mut got = BTreeMap::new();
    for o in first.iter().chain(second) {
        let (id, value) = split(o);
        match reference.get(&id) {
            Some(want) => assert_eq!(want, &value, "{id:?} emitted wrongly; {context}"),
            None => panic!("{id:?} = {value:?} is not in the reference; {context}"),
        }
        got.insert(id, value);
    }
    let missing: Vec<_> = reference
        .keys()
        .filter(|id| !got.contains_key(id))
        .collect();
    assert!(missing.is_empty(), "missing {missing:?}; {context}");
}

// ---------------------------------------------------------------------------------
// Keyed state.

/// `(key, event time, expired, running sum)`: after each record its sum; on expiry the
/// sum, at the key's last event time.
type Kept = (u8, u64, bool, u64);

fn keyed_sum<'s>(main: StreamVec<'s, Time, Rec>, ttl: u64) -> StreamVec<'s, Time, Kept> {
    main.keyed_state_with(
        "sum",
        ttl,
        |r: &Rec| r.0,
        |k, state: &mut Option<(u64, u64)>, r: Rec| {
            let sum = state.map_or(0, |s| s.0) + r.1;
            *state = Some((sum, r.2));
            Some((*k, r.2, false, sum))
        },
        |k, (sum, last)| Some((*k, last, true, sum)),
    )
}

fn keyed_reference(rounds: &[Round<Rec>], ttl: u64) -> BTreeMap<(u8, u64, bool), u64> {
    let mut by_key: BTreeMap<u8, Vec<(u64, u64)>> = BTreeMap::new();
    for round in rounds {
        for (_, (k, v, t)) in &round.records {
            by_key.entry(*k).or_default().push((*t, *v));
        }
    }
    let mut out = BTreeMap::new();
    for (k, mut records) in by_key {
        records.sort();
        let mut state: Option<(u64, u64)> = None;
        for (t, v) in records {
            if let Some((sum, last)) = state {
                if last + ttl < t {
                    out.insert((k, last, true), sum);
                    state = None;
                }
            }
            let sum = state.map_or(0, |s| s.0) + v;
            state = Some((sum, t));
            out.insert((k, t, false), sum);
        }
        if let Some((sum, last)) = state {
            out.insert((k, last, true), sum);
        }
    }
    out
}

fn check_keyed(rounds: &[Round<Rec>], cut: usize, ttl: u64, after: usize, pick: usize) {
    let build = crash::dataflow(move |main, _late| keyed_sum(main, ttl));
    let (first, second) = crash::crash_then_restore(rounds, cut, after, pick, build);
    let context = format!("cut at round {cut}, restored at {after} workers");
    consume(
        &first,
        &second,
        &keyed_reference(rounds, ttl),
        |&(k, t, expired, sum)| ((k, t, expired), sum),
        &context,
    );
}

/// Chains are compacted: with `full_every` 3, only the first part is full, every later
/// one builds on the one before, the chain of each starts at the first part or at an
/// image the compaction thread wrote (so a restore reads at most 6 parts), and
/// restoring each checkpoint is exact.
#[test]
fn chains_are_compacted_into_images_and_a_restore_reads_at_most_six_parts() {
    // 40 keys in every epoch, most of them unchanged in any one.
    let rounds: Vec<Round<Rec>> = (0..12u64)
        .map(|e| Round {
            watermark: e * 10,
            records: (0..6u64)
                .map(|i| {
                    let k = ((e * 7 + i * 13) % 40) as u8;
                    (e * 10 + i, (k, e + i, e * 10 + i))
                })
                .collect(),
            late: vec![],
        })
        .collect();
    let rounds = distinct(rounds);
    let ttl = 1_000;
    let build = crash::dataflow(move |main, _late| keyed_sum(main, ttl));
    let want = keyed_reference(&rounds, ttl);
    for async_writes in [false, true] {
        for (epoch, first, second) in
            crash::restore_every_checkpoint(async_writes, 3, &rounds, 9, build)
        {
            let context = format!("restored checkpoint {epoch}, async writes {async_writes}");
            consume(
                &first,
                &second,
                &want,
                |&(k, t, x, sum)| ((k, t, x), sum),
                &context,
            );
        }
    }

    let store = Arc::new(MemStore::default());
    let ran = crash::run(
        Checkpointing::every_epoch(3, true),
        1,
        &rounds,
        0..12,
        &store,
        None,
        build,
    );
    let name = &ran.names[0];
    let mut parts = Vec::new();
    for epoch in 0..12u64 {
        if let Some(bytes) = store.get(&Checkpoints::part_path(epoch, name, 0)).unwrap() {
            // A part begins with its base and its `from`.
            let (base, from): (Option<u64>, u64) = bincode::deserialize(&bytes).unwrap();
            let image = store.get(&Checkpoints::image_path(epoch, name, 0)).unwrap();
            parts.push((epoch, base, from, image.is_some()));
        }
    }
    assert!(parts.len() >= 8, "parts {parts:?}");
    assert_eq!(parts[0].1, None, "the first part is full: {parts:?}");
    for (i, &(epoch, base, from, _)) in parts.iter().enumerate().skip(1) {
        assert_eq!(
            base,
            Some(parts[i - 1].0),
            "part {epoch} builds on the one before"
        );
        // The chain starts at the first part or at an image, at most 6 parts back.
        let start = parts.iter().position(|p| p.0 == from).expect("a part");
        assert!(
            start == 0 || parts[start].3,
            "part {epoch} starts at {from}: {parts:?}"
        );
        assert!(
            i - start < 6,
            "part {epoch} reads back to {from}: {parts:?}"
        );
    }
    let images = parts.iter().filter(|p| p.3).count();
    assert!(images >= 2, "{images} images: {parts:?}");
    assert!(
        parts.iter().any(|&(_, _, from, _)| from > parts[0].0),
        "no chain starts at an image: {parts:?}"
    );
}

/// `pick`s that restore a late checkpoint of the first run when it wrote several (see
/// `crash::crash_then_restore`); chains of incremental parts are restored by
/// `crash::restore_every_checkpoint`.
const LATE_PICKS: [usize; 12] = [5, 11, 17, 23, 29, 35, 41, 47, 53, 59, 65, 71];

/// A fixed case that certainly restores a checkpoint after several epochs, with state
/// alive across it.
#[test]
fn keyed_state_restores_after_several_epochs() {
    let rounds: Vec<Round<Rec>> = (0..12u64)
        .map(|e| Round {
            watermark: e * 10,
            records: (0..20u64)
                .map(|i| (e * 10 + i, ((i % 3) as u8, i + e, e * 10 + i)))
                .collect(),
            late: vec![],
        })
        .collect();
    let rounds = distinct(rounds);
    for after in [1, 2, 3] {
        for pick in 0..4 {
            check_keyed(&rounds, 7, 25, after, pick);
            check_keyed(&rounds, 7, 3, after, pick);
        }
    }
    // Restored from late in the run: state alive across several checkpoints.
    for after in [1, 2, 3] {
        for pick in LATE_PICKS {
            check_keyed(&rounds, 11, 25, after, pick);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn keyed_state_restores_exactly(
        rounds in rounds(12), cut in 3usize..12, ttl in 0u64..60,
        after in 1usize..4, pick in 0usize..16,
    ) {
        let rounds = distinct(rounds);
        let cut = cut.min(rounds.len());
        check_keyed(&rounds, cut, ttl, after, pick);
    }
}

/// A record of epoch 2 arrives while epoch 0 is still open; checkpoint 0 is taken; the
/// job dies; the restart replays from epoch 1 (so the epoch-2 record again): the key's
/// sum must count it once.
#[test]
fn keyed_state_record_of_a_later_epoch_waits_for_the_checkpoint() {
    fn build(main: StreamVec<'_, Time, Rec>) -> StreamVec<'_, Time, Kept> {
        keyed_sum(main, 100)
    }
    let store = Arc::new(MemStore::default());
    crash::one_worker(
        &store,
        None,
        build,
        |main| {
            main.send(Time::new(5, 0), (1, 1, 5));
            main.send(Time::new(6, 2), (1, 10, 6));
            main.advance(Time::new(5, 1)); // epoch 0 sealed: checkpoint 0
        },
        false,
    );
    let part = Checkpoints::part_path(0, "KeyedState(sum, ttl 100ms)", 0);
    assert!(store.get(&part).unwrap().is_some(), "checkpoint 0 written");
    let restore = Restore {
        epoch: 0,
        workers: 1,
    };
    let mut out = crash::one_worker(
        &store,
        Some(restore),
        build,
        |main| main.send(Time::new(6, 2), (1, 10, 6)),
        true,
    );
    out.sort();
    assert_eq!(
        out,
        vec![(1, 5, false, 1), (1, 6, false, 11), (1, 6, true, 11)]
    );
}

/// One key with a record in every epoch (alternately left and right: even and odd
/// values), its state kept throughout: once the state is in a checkpoint, commits no
/// longer wait for its first epoch — the output frontier follows the epochs.
fn follows_the_epochs<O: 'static>(
    build: for<'s> fn(StreamVec<'s, Time, Rec>) -> StreamVec<'s, Time, O>,
) {
    let store: Arc<MemStore> = Arc::new(MemStore::default());
    timely::execute(timely::Config::thread(), move |worker| {
        let ctx = Checkpoints::new(
            store.clone(),
            1,
            0,
            1,
            None,
            Box::new(|_, _, e| panic!("{e}")),
        );
        let installed = ctx.install();
        let (mut input, probe) = worker.dataflow::<Time, _, _>(|scope| {
            let (input, stream) = Source::<Rec>::new(&scope);
            let (probe, _) = build(stream).probe();
            (input, probe)
        });
        drop(installed);
        for e in 0..6u64 {
            input.send(Time::new(10 * e, e), (1, e, 10 * e));
            input.advance(Time::new(10 * e + 5, e + 1));
            steps(worker);
            let least = probe.with_frontier(|f| f.iter().map(|t| t.epoch).min());
            assert_eq!(least, Some(e + 1), "epoch {e} complete despite live state");
        }
        input.close();
    })
    .unwrap();
}

#[test]
fn keyed_state_no_longer_holds_its_first_epoch_once_checkpointed() {
    follows_the_epochs(|main| keyed_sum(main, 1_000));
}

#[test]
fn joins_no_longer_hold_their_first_epoch_once_checkpointed() {
    follows_the_epochs(|main| window_join(main, 1_000, JoinKind::Left));
    follows_the_epochs(|main| interval_join(main, 1_000, 1_000, JoinKind::Left));
}

// ---------------------------------------------------------------------------------
// Window and interval joins: left records have an even value, right ones an odd one.

/// A join's output row: a left record and its partner (`None`: a left join's
/// unpaired record).
type Pair = (Rec, Option<Rec>);

/// The rows a join of `rounds` emits, keyed by themselves (records are distinct, so
/// rows are too).
fn pairs(
    rounds: &[Round<Rec>],
    kind: JoinKind,
    matches: impl Fn(&Rec, &Rec) -> bool,
) -> BTreeMap<Pair, ()> {
    let all = rounds
        .iter()
        .flat_map(|r| r.records.iter().map(|(_, d)| *d));
    let (left, right): (Vec<Rec>, Vec<Rec>) = all.partition(|r| r.1 & 1 == 0);
    let mut out = BTreeMap::new();
    for a in &left {
        let mut paired = false;
        for b in right.iter().filter(|b| matches(a, b)) {
            out.insert((*a, Some(*b)), ());
            paired = true;
        }
        if !paired && kind == JoinKind::Left {
            out.insert((*a, None), ());
        }
    }
    out
}

/// The join a test's `left` flag asks for.
fn kind_of(left: bool) -> JoinKind {
    if left {
        JoinKind::Left
    } else {
        JoinKind::Inner
    }
}

/// The two sides of a join over one input: records with an even value on the left,
/// odd on the right.
fn sides<'s>(
    main: StreamVec<'s, Time, Rec>,
) -> (StreamVec<'s, Time, Rec>, StreamVec<'s, Time, Rec>) {
    let left = main.clone().filter(|r: &Rec| r.1 & 1 == 0);
    (left, main.filter(|r: &Rec| r.1 & 1 == 1))
}

fn window_join<'s>(
    main: StreamVec<'s, Time, Rec>,
    size: u64,
    kind: JoinKind,
) -> StreamVec<'s, Time, Pair> {
    let (a, b) = sides(main);
    a.window_join_with(
        b,
        "j",
        size,
        kind,
        |r: &Rec| r.0,
        |r: &Rec| r.0,
        |_, a, b| (*a, b.copied()),
    )
    .map(|w| w.value)
}

fn interval_join<'s>(
    main: StreamVec<'s, Time, Rec>,
    lower: u64,
    upper: u64,
    kind: JoinKind,
) -> StreamVec<'s, Time, Pair> {
    let (a, b) = sides(main);
    a.interval_join_with(
        b,
        "i",
        lower,
        upper,
        kind,
        |r: &Rec| r.0,
        |r: &Rec| r.0,
        |_, a, b| (*a, b.copied()),
    )
}

/// The rows a window join of `size` ms emits over `rounds` (see [`pairs`]).
fn window_pairs(rounds: &[Round<Rec>], size: u64, kind: JoinKind) -> BTreeMap<Pair, ()> {
    pairs(rounds, kind, |a, b| a.0 == b.0 && a.2 / size == b.2 / size)
}

fn check_window_join(
    rounds: &[Round<Rec>],
    cut: usize,
    size: u64,
    left: bool,
    after: usize,
    pick: usize,
) {
    let kind = kind_of(left);
    let build = crash::dataflow(move |main, _late| window_join(main, size, kind));
    let (first, second) = crash::crash_then_restore(rounds, cut, after, pick, build);
    let want = window_pairs(rounds, size, kind);
    let context = format!("cut at round {cut}, restored at {after} workers");
    consume(&first, &second, &want, |p| (*p, ()), &context);
}

/// A checkpoint holds an operator's parts from every worker or from none (an operator
/// new to the job); a restore that finds only some refuses, naming the operator, instead
/// of starting the other workers' keys empty.
#[test]
fn a_restore_refuses_an_operator_with_parts_from_only_some_workers() {
    let store = Arc::new(MemStore::default());
    let at = |worker, restore| {
        Checkpoints::new(store.clone(), 1, worker, 2, restore, Box::new(|_, _, _| {}))
    };
    let part: LogPart<(), u8, u8> = LogPart {
        base: None,
        from: 3,
        extra: (),
        entries: vec![(1, Some(1))],
    };
    // Both workers wrote `whole`; only worker 0 wrote `torn`.
    let bytes = part.encode().unwrap();
    let put = |name, worker| store.put(&Checkpoints::part_path(3, name, worker), &bytes);
    put("whole", 0).unwrap();
    put("whole", 1).unwrap();
    put("torn", 0).unwrap();
    let restore = Some(Restore {
        epoch: 3,
        workers: 2,
    });
    let ctx = at(0, restore);
    assert_eq!(ctx.read_log::<(), u8, u8>("whole").len(), 2);
    assert!(
        ctx.read_log::<(), u8, u8>("new").is_empty(),
        "an operator new to the job"
    );
    let torn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ctx.read_log::<(), u8, u8>("torn")
    }));
    let message = *torn
        .expect_err("restored from one worker's part")
        .downcast::<String>()
        .unwrap();
    assert!(message.contains("from 1 of its 2 workers"), "{message}");
    let torn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // A part's base and `from`.
        ctx.read_all::<(Option<u64>, u64)>("torn")
    }));
    assert!(torn.is_err());
}

/// A window join whose rows are counted per key and window downstream (the crash
/// test job's shape: two stateful operators in a row, the second pre-aggregated at
/// several workers): a consumer keeping the last count per `(key, window)` must hold
/// exactly the reference's.
fn check_join_then_count(
    rounds: &[Round<Rec>],
    cut: usize,
    size: u64,
    left: bool,
    after: usize,
    pick: usize,
) {
    let kind = kind_of(left);
    let build = crash::dataflow(move |main, _late| {
        // Rows are at their window's end - 1: counted in the same window.
        window_join(main, size, kind)
            .tumble_count("rows", size, |p: &Pair| p.0 .0)
            .map(|w| (w.key, w.start, w.value))
    });
    let (first, second) = crash::crash_then_restore(rounds, cut, after, pick, build);
    // The reference join's rows, counted per key and window.
    let mut want: BTreeMap<(u8, u64), u64> = BTreeMap::new();
    for (a, _) in window_pairs(rounds, size, kind).keys() {
        *want.entry((a.0, a.2 / size * size)).or_default() += 1;
    }
    let context = format!("cut at round {cut}, restored at {after} workers");
    consume(&first, &second, &want, |&(k, s, n)| ((k, s), n), &context);
}

#[allow(clippy::too_many_arguments)]
fn check_interval_join(
    rounds: &[Round<Rec>],
    cut: usize,
    lower: u64,
    upper: u64,
    left: bool,
    after: usize,
    pick: usize,
) {
    let kind = kind_of(left);
    let build = crash::dataflow(move |main, _late| interval_join(main, lower, upper, kind));
    let (first, second) = crash::crash_then_restore(rounds, cut, after, pick, build);
    let want = pairs(rounds, kind, |a, b| {
        a.0 == b.0 && a.2.saturating_sub(lower) <= b.2 && b.2 <= a.2 + upper
    });
    let context = format!("cut at round {cut}, restored at {after} workers");
    consume(&first, &second, &want, |p| (*p, ()), &context);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn window_join_restores_exactly(
        rounds in rounds(12), cut in 3usize..12, size in 1u64..80, left in any::<bool>(),
        after in 1usize..4, pick in 0usize..16,
    ) {
        let rounds = distinct(rounds);
        let cut = cut.min(rounds.len());
        check_window_join(&rounds, cut, size, left, after, pick);
    }

    #[test]
    fn join_then_count_restores_exactly(
        rounds in rounds(12), cut in 3usize..12, size in 1u64..80, left in any::<bool>(),
        after in 1usize..4, pick in 0usize..16,
    ) {
        let rounds = distinct(rounds);
        let cut = cut.min(rounds.len());
        check_join_then_count(&rounds, cut, size, left, after, pick);
    }

    #[test]
    fn interval_join_restores_exactly(
        rounds in rounds(12), cut in 3usize..12, lower in 0u64..30, upper in 0u64..30,
        left in any::<bool>(), after in 1usize..4, pick in 0usize..16,
    ) {
        let rounds = distinct(rounds);
        let cut = cut.min(rounds.len());
        check_interval_join(&rounds, cut, lower, upper, left, after, pick);
    }
}

/// A capped window join's overflow report: `(key, start) -> (left, right, rows,
/// emitted)`.
type Over = ((u8, u64), (u64, u64, u64, u64));

/// The overflow reports a window join of `rounds` capped at `cap` rows makes.
fn overflow_reference(
    rounds: &[Round<Rec>],
    size: u64,
    kind: JoinKind,
    cap: usize,
) -> BTreeMap<(u8, u64), (u64, u64, u64, u64)> {
    let want = window_pairs(rounds, size, kind);
    let mut rows: BTreeMap<(u8, u64), u64> = BTreeMap::new();
    for (a, _) in want.keys() {
        *rows.entry((a.0, a.2 / size * size)).or_default() += 1;
    }
    let all: Vec<Rec> = rounds
        .iter()
        .flat_map(|r| r.records.iter().map(|(_, d)| *d))
        .collect();
    let count = |k: u8, s: u64, left: bool| {
        let side = |r: &&Rec| (r.1 & 1 == 0) == left;
        all.iter()
            .filter(side)
            .filter(|r| r.0 == k && r.2 / size * size == s)
            .count() as u64
    };
    rows.into_iter()
        .filter(|(_, n)| *n > cap as u64)
        .map(|((k, s), n)| {
            (
                (k, s),
                (count(k, s, true), count(k, s, false), n, cap as u64),
            )
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn check_capped_window_join(
    rounds: &[Round<Rec>],
    cut: usize,
    size: u64,
    left: bool,
    cap: usize,
    after: usize,
    pick: usize,
) {
    let kind = kind_of(left);
    let build = crash::dataflow(move |main, _late| {
        let (a, b) = sides(main);
        a.window_join_capped(
            b,
            "j",
            size,
            kind,
            cap,
            |r: &Rec| r.0,
            |r: &Rec| r.0,
            |_, a, b| (*a, b.copied()),
        )
        .overflow
        .map(|o| ((o.key, o.start), (o.left, o.right, o.rows, o.emitted)))
    });
    let (first, second) = crash::crash_then_restore(rounds, cut, after, pick, build);
    let want = overflow_reference(rounds, size, kind, cap);
    let context = format!("cut at round {cut}, restored at {after} workers, cap {cap}");
    consume(&first, &second, &want, |o: &Over| *o, &context);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A capped join's records not kept and its overflow capabilities survive a
    /// restore: every `(key, window)` over the cap is reported once, with exact counts.
    #[test]
    fn capped_window_join_restores_its_overflow_counts(
        rounds in rounds(12), cut in 3usize..12, size in 1u64..80, left in any::<bool>(),
        cap in 1usize..3, after in 1usize..4, pick in 0usize..16,
    ) {
        let rounds = distinct(rounds);
        let cut = cut.min(rounds.len());
        check_capped_window_join(&rounds, cut, size, left, cap, after, pick);
    }
}

#[test]
fn capped_window_join_restores_after_several_epochs() {
    let rounds = steady();
    for after in [1, 2, 3] {
        for pick in 0..4 {
            for left in [false, true] {
                check_capped_window_join(&rounds, 7, 25, left, 2, after, pick);
            }
        }
    }
}

/// The fixed rounds of `keyed_state_restores_after_several_epochs`: every key in every
/// epoch, both sides.
fn steady() -> Vec<Round<Rec>> {
    let rounds = (0..12u64)
        .map(|e| Round {
            watermark: e * 10,
            records: (0..20u64)
                .map(|i| (e * 10 + i, ((i % 3) as u8, i + e, e * 10 + i)))
                .collect(),
            late: vec![],
        })
        .collect();
    distinct(rounds)
}

#[test]
fn joins_restore_after_several_epochs() {
    let rounds = steady();
    for after in [1, 2, 3] {
        for pick in 0..4 {
            for left in [false, true] {
                check_window_join(&rounds, 7, 25, left, after, pick);
                check_interval_join(&rounds, 7, 5, 15, left, after, pick);
            }
        }
        for pick in LATE_PICKS {
            check_window_join(&rounds, 11, 40, true, after, pick);
            check_interval_join(&rounds, 11, 5, 15, true, after, pick);
        }
    }
}

// ---------------------------------------------------------------------------------
// Stream–table lookup: its table is checkpointed, not read again.

/// The restored run reads only the rounds after the checkpoint, table upserts
/// included: every lookup after it must find the table the checkpoint holds.
fn check_lookup(rounds: &[Round<Rec>], cut: usize, left: bool, after: usize, pick: usize) {
    let kind = kind_of(left);
    let build = crash::dataflow(move |main, _late| common::lookup_with_tombstones(main, kind));
    let (first, second) = crash::crash_then_restore(rounds, cut, after, pick, build);
    let want: BTreeMap<Rec, Option<u64>> = common::lookup_reference(rounds, kind, true)
        .into_iter()
        .collect();
    let context = format!("cut at round {cut}, restored at {after} workers");
    consume(&first, &second, &want, |o| *o, &context);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn lookup_restores_its_table_exactly(
        rounds in rounds(12), cut in 3usize..12, left in any::<bool>(),
        after in 1usize..4, pick in 0usize..16,
    ) {
        // A stream record is named by its value: no two may be equal.
        let rounds = distinct(rounds);
        let cut = cut.min(rounds.len());
        check_lookup(&rounds, cut, left, after, pick);
    }
}

#[test]
fn lookup_restores_its_table_after_several_epochs() {
    let rounds = steady();
    for after in [1, 2, 3] {
        for pick in 0..8 {
            check_lookup(&rounds, 7, pick % 2 == 0, after, pick);
        }
    }
    // Every checkpoint of a run, each restored from its chain of incremental parts.
    let build = crash::dataflow(|main, _late| common::lookup_with_tombstones(main, JoinKind::Left));
    let want: BTreeMap<Rec, Option<u64>> = common::lookup_reference(&rounds, JoinKind::Left, true)
        .into_iter()
        .collect();
    for async_writes in [false, true] {
        for (at, first, second) in
            crash::restore_every_checkpoint(async_writes, 1000, &rounds, 9, build)
        {
            let context = format!("restored checkpoint {at}");
            consume(&first, &second, &want, |o| *o, &context);
        }
    }
}

/// A right record of epoch 2 arrives while epoch 0 is open; checkpoint 0 is taken; the
/// job dies and replays from epoch 1 (the right record again, then a left record of
/// epoch 3 that pairs with it). The checkpoint must hold the left record of epoch 0 and
/// not the right one of epoch 2, or the replay keeps it twice and pairs it twice.
#[test]
fn joins_record_of_a_later_epoch_waits_for_the_checkpoint() {
    fn window(main: StreamVec<'_, Time, Rec>) -> StreamVec<'_, Time, Pair> {
        window_join(main, 100, JoinKind::Inner)
    }
    fn interval(main: StreamVec<'_, Time, Rec>) -> StreamVec<'_, Time, Pair> {
        interval_join(main, 50, 50, JoinKind::Inner)
    }
    let restore = Restore {
        epoch: 0,
        workers: 1,
    };
    let first = |main: &mut Source<Rec>| {
        main.send(Time::new(5, 0), (1, 2, 5));
        main.send(Time::new(6, 2), (1, 3, 6));
        main.advance(Time::new(5, 1)); // epoch 0 sealed: checkpoint 0
    };
    let replay = |main: &mut Source<Rec>| {
        main.send(Time::new(6, 2), (1, 3, 6));
        main.send(Time::new(7, 3), (1, 4, 7));
    };
    let want = vec![((1, 2, 5), Some((1, 3, 6))), ((1, 4, 7), Some((1, 3, 6)))];

    type Build = for<'s> fn(StreamVec<'s, Time, Rec>) -> StreamVec<'s, Time, Pair>;
    for (name, build) in [("window", window as Build), ("interval", interval)] {
        let store = Arc::new(MemStore::default());
        let before = crash::one_worker(&store, None, build, first, false);
        assert!(
            before.is_empty(),
            "{name}: nothing pairs before epoch 2: {before:?}"
        );
        let written = store
            .0
            .lock()
            .unwrap()
            .keys()
            .any(|p| p.starts_with("epoch-00000000000000000000/"));
        assert!(written, "{name}: checkpoint 0 written");
        let mut after = crash::one_worker(&store, Some(restore), build, replay, true);
        after.sort();
        assert_eq!(after, want, "{name} join");
    }
}

// ---------------------------------------------------------------------------------
// Rolling windows (exact mode, with late records).

/// `(record, late, sum over its key's records in (t - range, t])`.
type Scored = (Rec, bool, u64);

fn rolling_sum<'s>(
    main: StreamVec<'s, Time, Rec>,
    late: StreamVec<'s, Time, Late<Rec>>,
    range: u64,
    lateness: u64,
) -> StreamVec<'s, Time, Scored> {
    let policy = RollingPolicy::exact().lateness(lateness);
    main.rolling(
        "r",
        range,
        policy,
        Some(late),
        |r: &Rec| r.0,
        Sum::new(|r: &Rec| r.1),
    )
    .results
    .map(|r| (r.record, r.late, r.value))
}

/// Exact mode: every on-time record of the key in `(t - range, t]`; a late record (not
/// too late) those and itself.
fn rolling_reference(
    rounds: &[Round<Rec>],
    range: u64,
    lateness: u64,
) -> BTreeMap<(Rec, bool), u64> {
    let all: Vec<Rec> = rounds
        .iter()
        .flat_map(|r| r.records.iter().map(|(_, d)| *d))
        .collect();
    let sum = |k: u8, t: u64| -> u64 {
        all.iter()
            .filter(|s| s.0 == k && s.2 <= t && s.2 + range > t)
            .map(|s| s.1)
            .sum()
    };
    let mut out = BTreeMap::new();
    for round in rounds {
        for (_, r) in &round.records {
            out.insert((*r, false), sum(r.0, r.2));
        }
        for l in &round.late {
            if l.event_time + lateness >= round.watermark {
                out.insert((l.record, true), sum(l.record.0, l.event_time) + l.record.1);
            }
        }
    }
    out
}

fn check_rolling(
    rounds: &[Round<Rec>],
    cut: usize,
    range: u64,
    lateness: u64,
    after: usize,
    pick: usize,
) {
    let build = crash::dataflow(move |main, late| rolling_sum(main, late, range, lateness));
    let (first, second) = crash::crash_then_restore(rounds, cut, after, pick, build);
    let context = format!("cut at round {cut}, restored at {after} workers");
    consume(
        &first,
        &second,
        &rolling_reference(rounds, range, lateness),
        |&(r, late, sum)| ((r, late), sum),
        &context,
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn rolling_restores_exactly(
        rounds in rounds(12), cut in 3usize..12,
        // Narrow blocks (filled within one epoch) and wide ones (changed across
        // several checkpoints, so incremental parts carry a block more than once).
        range in prop_oneof![1u64..80, 400u64..1600], lateness in 0u64..40,
        after in 1usize..4, pick in 0usize..16,
    ) {
        let rounds = distinct(rounds);
        let cut = cut.min(rounds.len());
        check_rolling(&rounds, cut, range, lateness, after, pick);
    }
}

#[test]
fn rolling_restores_after_several_epochs() {
    let rounds = steady();
    for after in [1, 2, 3] {
        for pick in 0..4 {
            check_rolling(&rounds, 7, 35, 0, after, pick);
        }
    }
}

/// Key 0's only block is written in the first part and never changes again while key 1
/// changes every epoch: incremental parts hold only key 1's blocks, and the parts
/// compacted every 3 must carry key 0's block on, or a restore reading only the last
/// chain loses it and key 0's last record, after the restore, misses the first one in
/// its range.
#[test]
fn rolling_keeps_an_unchanged_block_through_compacted_parts() {
    let rounds: Vec<Round<Rec>> = (0..12u64)
        .map(|e| {
            let mut records: Vec<(u64, Rec)> = (0..4u64)
                .map(|i| (e * 10 + i, (1, i + e, e * 10 + i)))
                .collect();
            if e == 0 || e == 11 {
                records.push((e * 10 + 5, (0, 100 + e, e * 10 + 5)));
            }
            Round {
                watermark: e * 10,
                records,
                late: vec![],
            }
        })
        .collect();
    let rounds = distinct(rounds);
    let (range, lateness) = (1000, 0);
    let build = crash::dataflow(move |main, late| rolling_sum(main, late, range, lateness));
    let want = rolling_reference(&rounds, range, lateness);
    for async_writes in [false, true] {
        for (epoch, first, second) in
            crash::restore_every_checkpoint(async_writes, 3, &rounds, 10, build)
        {
            let context = format!("restored checkpoint {epoch}, async writes {async_writes}");
            consume(
                &first,
                &second,
                &want,
                |&(r, late, sum)| ((r, late), sum),
                &context,
            );
        }
    }
}

/// A record of epoch 2 arrives while epoch 0 is open; checkpoint 0 is taken; the job
/// dies and replays from epoch 1: the epoch-2 record counts once in the range of a
/// later one.
#[test]
fn rolling_record_of_a_later_epoch_waits_for_the_checkpoint() {
    fn build(main: StreamVec<'_, Time, Rec>) -> StreamVec<'_, Time, Scored> {
        let policy = RollingPolicy::exact();
        main.rolling(
            "r",
            100,
            policy,
            None,
            |r: &Rec| r.0,
            Sum::new(|r: &Rec| r.1),
        )
        .results
        .map(|r| (r.record, r.late, r.value))
    }
    let store = Arc::new(MemStore::default());
    let before = crash::one_worker(
        &store,
        None,
        build,
        |main| {
            main.send(Time::new(5, 0), (1, 1, 5));
            main.send(Time::new(6, 2), (1, 10, 6));
            main.advance(Time::new(5, 1)); // epoch 0 sealed: checkpoint 0
        },
        false,
    );
    assert!(before.is_empty(), "{before:?}");
    let restore = Restore {
        epoch: 0,
        workers: 1,
    };
    let mut after = crash::one_worker(
        &store,
        Some(restore),
        build,
        |main| {
            main.send(Time::new(6, 2), (1, 10, 6));
            main.send(Time::new(7, 3), (1, 100, 7));
        },
        true,
    );
    after.sort();
    assert_eq!(
        after,
        vec![
            ((1, 1, 5), false, 1),
            ((1, 10, 6), false, 11),
            ((1, 100, 7), false, 111)
        ]
    );
}

#[test]
fn rolling_no_longer_holds_its_first_epoch_once_checkpointed() {
    follows_the_epochs(|main| {
        let policy = RollingPolicy::exact();
        main.rolling(
            "r",
            1_000,
            policy,
            None,
            |r: &Rec| r.0,
            Sum::new(|r: &Rec| r.1),
        )
        .results
    });
}

/// A late record waits for the main watermark to pass its event time: checkpoint 0 is
/// taken while it waits, the job dies, and the restored run must still score it (it is
/// in no replayed epoch).
#[test]
fn rolling_late_record_waiting_is_restored() {
    fn build<'s>(
        main: StreamVec<'s, Time, Rec>,
        late: StreamVec<'s, Time, Late<Rec>>,
    ) -> StreamVec<'s, Time, Scored> {
        rolling_sum(main, late, 100, 5)
    }
    let store = Arc::new(MemStore::default());
    let before = crash::one_worker_with_late(
        &store,
        None,
        build,
        |main, late| {
            main.send(Time::new(2, 0), (1, 1, 2));
            let record = (1, 10, 8);
            late.send(
                Time::new(10, 0),
                Late {
                    event_time: 8,
                    watermark: 10,
                    record,
                },
            );
            // Epoch 0 sealed, the main watermark still at 3 (below 8): checkpoint 0.
            main.advance(Time::new(3, 1));
            late.advance(Time::new(10, 1));
        },
        false,
    );
    assert_eq!(before, vec![((1, 1, 2), false, 1)]);
    let restore = Restore {
        epoch: 0,
        workers: 1,
    };
    let mut after = crash::one_worker_with_late(&store, Some(restore), build, |_, _| {}, true);
    after.sort();
    // The on-time record was still waiting when checkpoint 0 was written (it was
    // emitted after it, at epoch 1): the restored run emits it again, an exact copy.
    assert_eq!(after, vec![((1, 1, 2), false, 1), ((1, 10, 8), true, 11)]);
}

// ---------------------------------------------------------------------------------
// Pre-aggregated windows: two stages at any number of workers under checkpoints.

/// `(key, start, sum)` of a pre-aggregated window.
type Summed = (u8, u64, u64);

fn preaggregated<'s>(
    main: StreamVec<'s, Time, Rec>,
    size: u64,
    slide: u64,
) -> StreamVec<'s, Time, Summed> {
    let (key, sum) = (|r: &Rec| r.0, Sum::new(|r: &Rec| r.1));
    let results = if slide == size {
        main.tumble_preaggregate("p", size, key, sum)
    } else {
        main.slide_preaggregate("p", size, slide, key, sum)
    };
    results.map(|w| (w.key, w.start, w.value))
}

/// `before` and `after`: the workers of the run cut off and of the restored one (at one
/// worker the two stages run as one operator, which reads the first stage's parts).
#[allow(clippy::too_many_arguments)]
fn check_preaggregated(
    rounds: &[Round<Rec>],
    cut: usize,
    size: u64,
    slide: u64,
    before: usize,
    after: usize,
    pick: usize,
) {
    let build = crash::dataflow(move |main, _late| preaggregated(main, size, slide));
    let (first, second) = crash::crash_at_then_restore(rounds, cut, before, after, pick, build);
    let mut want: BTreeMap<(u8, u64), u64> = BTreeMap::new();
    for (_, (k, v, t)) in rounds.iter().flat_map(|r| &r.records) {
        let (first, last) = freshet_operators::window::sliding_starts(*t, size, slide);
        for start in (first..=last).step_by(slide as usize) {
            *want.entry((*k, start)).or_default() += v;
        }
    }
    let context = format!("cut at round {cut}, restored at {after} workers");
    consume(&first, &second, &want, |&(k, s, v)| ((k, s), v), &context);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn preaggregated_windows_restore_exactly(
        rounds in rounds(12), cut in 3usize..12, size in 1u64..80, div in 1u64..4,
        before in 1usize..3, after in 1usize..4, pick in 0usize..16,
    ) {
        let cut = cut.min(rounds.len());
        check_preaggregated(&rounds, cut, size, (size / div).max(1), before, after, pick);
    }
}

#[test]
fn preaggregated_windows_restore_after_several_epochs() {
    let rounds = steady();
    for (before, after) in [(2, 1), (2, 2), (2, 3), (1, 1), (1, 2), (1, 3)] {
        for pick in 0..4 {
            check_preaggregated(&rounds, 7, 35, 35, before, after, pick);
            check_preaggregated(&rounds, 7, 40, 10, before, after, pick);
        }
        for pick in LATE_PICKS {
            check_preaggregated(&rounds, 11, 60, 60, before, after, pick);
            check_preaggregated(&rounds, 11, 60, 20, before, after, pick);
        }
    }
}

/// At one worker the two stages run as one operator: every checkpoint of a run at 2
/// workers restores into it (its first stage's partials of windows still open merged
/// in, those of windows closed since not), and every checkpoint it takes restores into
/// the two stages at 2 and 3 workers.
#[test]
fn preaggregated_windows_restore_between_one_and_more_workers() {
    let rounds = steady();
    for (size, slide) in [(35, 35), (40, 10)] {
        let build = crash::dataflow(move |main, _late| preaggregated(main, size, slide));
        let mut want: BTreeMap<(u8, u64), u64> = BTreeMap::new();
        for (_, (k, v, t)) in rounds.iter().flat_map(|r| &r.records) {
            let (first, last) = freshet_operators::window::sliding_starts(*t, size, slide);
            for start in (first..=last).step_by(slide as usize) {
                *want.entry((*k, start)).or_default() += v;
            }
        }
        for (before, after) in [(1, 2), (1, 3)] {
            let runs = crash::restore_each_checkpoint(before, after, false, 3, &rounds, 9, build);
            for (epoch, first, second) in runs {
                let context =
                    format!("checkpoint {epoch} at {before} workers, restored at {after}");
                consume(&first, &second, &want, |&(k, s, v)| ((k, s), v), &context);
            }
        }
    }
}

/// A record of epoch 2 arrives while epoch 0 is open; checkpoint 0 is taken; the job
/// dies and replays from epoch 1: the window's sum counts it once.
#[test]
fn preaggregated_record_of_a_later_epoch_waits_for_the_checkpoint() {
    fn build(main: StreamVec<'_, Time, Rec>) -> StreamVec<'_, Time, Summed> {
        preaggregated(main, 100, 100)
    }
    let store = Arc::new(MemStore::default());
    crash::one_worker(
        &store,
        None,
        build,
        |main| {
            main.send(Time::new(5, 0), (1, 1, 5));
            main.send(Time::new(6, 2), (1, 10, 6));
            main.advance(Time::new(5, 1)); // epoch 0 sealed: checkpoint 0
        },
        false,
    );
    // At one worker the two stages run as one operator, with the second stage's part.
    let part = |name| Checkpoints::part_path(0, name, 0);
    let one = part("Tumble(p, 100ms, pre-aggregated)");
    assert!(store.get(&one).unwrap().is_some(), "{one} written");
    let first = part("Tumble(p, 100ms, pre-aggregated) (pre-aggregate)");
    assert!(store.get(&first).unwrap().is_none(), "{first} written");
    let restore = Restore {
        epoch: 0,
        workers: 1,
    };
    let send = |main: &mut Source<Rec>| main.send(Time::new(6, 2), (1, 10, 6));
    let out = crash::one_worker(&store, Some(restore), build, send, true);
    assert_eq!(out, vec![(1, 0, 11)]);
}

#[test]
fn preaggregated_windows_no_longer_hold_their_first_epoch_once_checkpointed() {
    follows_the_epochs(|main| preaggregated(main, 1_000, 1_000));
}

/// A left interval join's record that found its pair must stay paired across a restore
/// from incremental parts (the pairing is a change of its own, after the record was
/// first written), or it is emitted again, unpaired, when it expires.
#[test]
fn interval_join_pairing_survives_incremental_parts() {
    let round = |watermark: u64, records: Vec<Rec>| Round {
        watermark,
        records: records.into_iter().map(|r| (r.2, r)).collect(),
        late: vec![],
    };
    // `a` (even value) at 1 is written in checkpoint 0; `b` (odd) at 6 pairs it in
    // epoch 1; `a` expires once the watermark passes 1 + 50, after the restore.
    let rounds = vec![
        round(0, vec![(1, 2, 1)]),
        round(5, vec![(1, 3, 6)]),
        round(10, vec![]),
        round(15, vec![]),
        round(20, vec![]),
        round(70, vec![]),
        round(80, vec![]),
    ];
    let build = crash::dataflow(|main, _late| interval_join(main, 0, 50, JoinKind::Left));
    let want = pairs(&rounds, JoinKind::Left, |a, b| {
        a.0 == b.0 && a.2 <= b.2 && b.2 <= a.2 + 50
    });
    for restore_at in [1u64, 2] {
        // Only the first part is full.
        let (first, second) = crash::cut_and_restore(&rounds, 4, restore_at, build);
        let context = format!("restored from checkpoint {restore_at}");
        consume(&first, &second, &want, |p| (*p, ()), &context);
    }
}

/// Every key's state changes in every epoch: restoring each checkpoint in turn, each a
/// chain of incremental parts, must give exactly the reference's outputs.
#[test]
fn keyed_state_changes_survive_incremental_parts() {
    let rounds = steady();
    let ttl = 25;
    let build = crash::dataflow(move |main, _late| keyed_sum(main, ttl));
    for (epoch, first, second) in crash::restore_every_checkpoint(false, 1000, &rounds, 8, build) {
        consume(
            &first,
            &second,
            &keyed_reference(&rounds, ttl),
            |&(k, t, expired, sum)| ((k, t, expired), sum),
            &format!("restored from checkpoint {epoch}"),
        );
    }
}
