//! Tumbling and sliding windows: against a sequential reference at 1 and 4 workers,
//! and the capabilities they hold.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use common::upsert::{check_contract, run_stepwise, Result4};
use common::{collect, rounds, run_windowed, steps, Rec, Round, Source};
use freshet_operators::aggregate::Sum;
use freshet_operators::window::sliding_starts;
use freshet_operators::{Emit, Late, Slide, Time, Tumble, WindowPolicy, WindowStreams};
use proptest::prelude::*;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concat, Inspect, Probe};
use timely::dataflow::StreamVec;

/// `(key, start, end, value, revision, kind)` or a too-late record.
type Out = Result<(u8, u64, u64, u64, u32, Emit), Late<Rec>>;

/// Per `(key, start)`: `(revision, kind, value)` of each emission.
type Emissions = BTreeMap<(u8, u64), Vec<(u32, Emit, u64)>>;

fn flatten<'s>(w: WindowStreams<'s, Time, u8, u64, Rec>) -> StreamVec<'s, Time, Out> {
    w.results
        .map(|w| Ok((w.key, w.start, w.end, w.value, w.revision, w.kind)))
        .concat(w.too_late.map(Err))
}

fn windows_of(event: u64, size: u64, slide: u64) -> impl Iterator<Item = u64> {
    let (first, last) = sliding_starts(event, size, slide);
    (first..=last).step_by(slide as usize)
}

/// The sequential model: finals of everything that reached each window before it
/// closed, then one correction per changed window per late round, in round order;
/// sorted.
fn reference(rounds: &[Round<Rec>], size: u64, slide: u64, lateness: u64) -> Vec<Out> {
    let mut out: Vec<Out> = timed_reference(rounds, size, slide, lateness)
        .into_iter()
        .map(|(_, o)| o)
        .collect();
    out.sort();
    out
}

/// The sequential model's results with the event time each is emitted at: a final
/// at `end - 1`, a correction at its late round's watermark.
fn timed_reference(rounds: &[Round<Rec>], size: u64, slide: u64, lateness: u64) -> Vec<(u64, Out)> {
    let mut sums: BTreeMap<(u64, u8), u64> = BTreeMap::new();
    for round in rounds {
        for (event, (k, v, _)) in &round.records {
            for s in windows_of(*event, size, slide) {
                *sums.entry((s, *k)).or_default() += v;
            }
        }
        for late in &round.late {
            for s in windows_of(late.event_time, size, slide) {
                if s + size > round.watermark {
                    *sums.entry((s, late.record.0)).or_default() += late.record.1;
                }
            }
        }
    }
    let mut out: Vec<(u64, Out)> = sums
        .iter()
        .map(|(&(s, k), &v)| (s + size - 1, Ok((k, s, s + size, v, 0, Emit::Final))))
        .collect();
    let mut revision: BTreeMap<(u64, u8), u32> = sums.keys().map(|w| (*w, 1)).collect();
    for round in rounds {
        let now = round.watermark;
        let mut changed = BTreeSet::new();
        for late in &round.late {
            let mut beyond = false;
            for s in windows_of(late.event_time, size, slide) {
                let end = s + size;
                if end <= now && now < end + lateness {
                    *sums.entry((s, late.record.0)).or_default() += late.record.1;
                    changed.insert((s, late.record.0));
                } else if now >= end + lateness {
                    beyond = true;
                }
            }
            if beyond {
                out.push((now, Err(late.clone())));
            }
        }
        for w in changed {
            let r = revision.entry(w).or_default();
            out.push((now, Ok((w.1, w.0, w.0 + size, sums[&w], *r, Emit::Late))));
            *r += 1;
        }
    }
    out
}

fn check(rounds: &[Round<Rec>], size: u64, slide: u64, lateness: u64) {
    let want = reference(rounds, size, slide, lateness);
    for workers in [1, 4] {
        let got = run_windowed(workers, rounds, move |main, late| {
            let policy = WindowPolicy::new().lateness(lateness);
            let key = |r: &Rec| r.0;
            let sum = Sum::new(|r: &Rec| r.1);
            if slide == size {
                flatten(main.tumble("t", size, policy, Some(late), key, sum))
            } else {
                flatten(main.slide("s", size, slide, policy, Some(late), key, sum))
            }
        });
        assert_eq!(got, want, "at {workers} workers");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn tumble_matches_reference(rounds in rounds(8), size in 1u64..30, lateness in 0u64..40) {
        check(&rounds, size, size, lateness);
    }

    #[test]
    fn slide_matches_reference(
        rounds in rounds(8), size in 2u64..30, div in 2u64..5, lateness in 0u64..40,
    ) {
        check(&rounds, size, (size / div).max(1), lateness);
    }
}

/// The reference's window results with their emission times (too-late records left
/// out: they are not window results).
fn reference_results(
    rounds: &[Round<Rec>],
    size: u64,
    slide: u64,
    lateness: u64,
) -> Vec<(u64, Result4)> {
    timed_reference(rounds, size, slide, lateness)
        .into_iter()
        .filter_map(|(at, o)| o.ok().map(|r| (at, r)))
        .collect()
}

/// The upsert contract (see `common::upsert`) with early results, lateness and late
/// records, at 1 and 3 workers: `early` is the early-result period, if any.
fn check_upsert_contract(
    rounds: &[Round<Rec>],
    size: u64,
    slide: u64,
    lateness: u64,
    early: Option<u64>,
) {
    let want = reference_results(rounds, size, slide, lateness);
    for workers in [1, 3] {
        let got = run_stepwise(workers, rounds, move |main, late| {
            let mut policy = WindowPolicy::new().lateness(lateness);
            if let Some(period) = early {
                policy = policy.early(period);
            }
            let key = |r: &Rec| r.0;
            let sum = Sum::new(|r: &Rec| r.1);
            let w = if slide == size {
                main.tumble("t", size, policy, Some(late), key, sum)
            } else {
                main.slide("s", size, slide, policy, Some(late), key, sum)
            };
            w.results
                .map(|w| (w.key, w.start, w.end, w.value, w.revision, w.kind))
        });
        check_contract(&got, &want);
    }
}

/// The pre-aggregated tumbling (`slide == size`) or sliding windows under test, as
/// `(key, start, end, value, revision, kind)`.
fn preaggregated<'s>(
    main: StreamVec<'s, Time, Rec>,
    size: u64,
    slide: u64,
) -> StreamVec<'s, Time, Result4> {
    let key = |r: &Rec| r.0;
    let sum = Sum::new(|r: &Rec| r.1);
    let results = if slide == size {
        main.tumble_preaggregate("tp", size, key, sum)
    } else {
        main.slide_preaggregate("sp", size, slide, key, sum)
    };
    results.map(|w| (w.key, w.start, w.end, w.value, w.revision, w.kind))
}

/// The upsert contract of the pre-aggregated variants (emit-final, no late input).
fn check_preaggregated_contract(rounds: &[Round<Rec>], size: u64, slide: u64) {
    let mut rounds = rounds.to_vec();
    rounds.iter_mut().for_each(|r| r.late.clear());
    let want = reference_results(&rounds, size, slide, 0);
    for workers in [1, 3] {
        let got = run_stepwise(workers, &rounds, move |main, _late| {
            preaggregated(main, size, slide)
        });
        check_contract(&got, &want);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn tumble_keeps_the_upsert_contract(
        rounds in rounds(8), size in 1u64..30, lateness in 0u64..40,
        early in prop::option::of(1u64..10),
    ) {
        check_upsert_contract(&rounds, size, size, lateness, early);
    }

    #[test]
    fn slide_keeps_the_upsert_contract(
        rounds in rounds(8), size in 2u64..30, div in 2u64..5, lateness in 0u64..40,
        early in prop::option::of(1u64..10),
    ) {
        check_upsert_contract(&rounds, size, (size / div).max(1), lateness, early);
    }

    #[test]
    fn preaggregated_windows_keep_the_upsert_contract(
        rounds in rounds(8), size in 2u64..30, div in 1u64..5,
    ) {
        check_preaggregated_contract(&rounds, size, (size / div).max(1));
    }
}

/// The pre-aggregated path (emit-final, no late input) gives exactly the reference's
/// finals, at 1 and 4 workers, for tumbling and sliding windows.
fn check_preaggregated(rounds: &[Round<Rec>], size: u64, slide: u64) {
    let mut rounds = rounds.to_vec();
    rounds.iter_mut().for_each(|r| r.late.clear());
    let want = reference(&rounds, size, slide, 0);
    for workers in [1, 4] {
        let got = run_windowed(workers, &rounds, move |main, _late| {
            preaggregated(main, size, slide).map(Ok)
        });
        assert_eq!(got, want, "at {workers} workers");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn tumble_preaggregate_matches_reference(rounds in rounds(8), size in 1u64..30) {
        check_preaggregated(&rounds, size, size);
    }

    #[test]
    fn slide_preaggregate_matches_reference(rounds in rounds(8), size in 2u64..30, div in 2u64..5) {
        check_preaggregated(&rounds, size, (size / div).max(1));
    }
}

/// Each result with the time it was emitted at, sorted.
type Timed = Vec<(Time, (u8, u64, u64))>;

/// The results and their times: pre-aggregated (`preagg`) or one-stage.
fn timed_results(workers: usize, rounds: &[Round<Rec>], size: u64, preagg: bool) -> Timed {
    let timed = Arc::new(Mutex::new(Vec::new()));
    let into = timed.clone();
    run_windowed(workers, rounds, move |main, _late| {
        let key = |r: &Rec| r.0;
        let sum = Sum::new(|r: &Rec| r.1);
        let results = if preagg {
            main.tumble_preaggregate("tp", size, key, sum)
        } else {
            main.tumble_aggregate("t", size, key, sum)
        };
        let into = into.clone();
        results
            .inspect_core(move |event| {
                if let Ok((stamp, data)) = event {
                    let time = *stamp.iter().next().expect("one time");
                    let mut into = into.lock().unwrap();
                    into.extend(data.iter().map(|w| (time, (w.key, w.start, w.value))));
                }
            })
            .map(|_| ())
    });
    let mut timed = timed.lock().unwrap().clone();
    timed.sort();
    timed
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// At 4 workers each pre-aggregated result is emitted at `(end - 1, e)` with `e`
    /// at or below the epoch the one-stage operator uses (hold what you owe: at or
    /// below the least epoch of the key's records) and at or above the least epoch of
    /// any record in the window (no earlier than needed).
    #[test]
    fn tumble_preaggregate_emits_at_owed_times(rounds in rounds(8), size in 1u64..30) {
        let mut rounds = rounds;
        rounds.iter_mut().for_each(|r| r.late.clear());
        let one_stage = timed_results(4, &rounds, size, false);
        let preagg = timed_results(4, &rounds, size, true);
        prop_assert_eq!(one_stage.len(), preagg.len());
        let mut window_min: BTreeMap<u64, u64> = BTreeMap::new();
        for (epoch, round) in rounds.iter().enumerate() {
            for (event, _) in &round.records {
                let e = window_min.entry(event - event % size).or_insert(epoch as u64);
                *e = (*e).min(epoch as u64);
            }
        }
        let by_result = |timed: &Timed| -> BTreeMap<(u8, u64, u64), Time> {
            timed.iter().map(|(t, r)| (*r, *t)).collect()
        };
        let (one_stage, preagg) = (by_result(&one_stage), by_result(&preagg));
        prop_assert_eq!(one_stage.keys().collect::<Vec<_>>(), preagg.keys().collect::<Vec<_>>());
        for (result, time) in &preagg {
            let want = one_stage[result];
            prop_assert_eq!(time.event, want.event);
            prop_assert_eq!(time.event, result.1 + size - 1);
            prop_assert!(time.epoch <= want.epoch, "{:?}: {:?} above {:?}", result, time, want);
            prop_assert!(time.epoch >= window_min[&result.1], "{:?}: {:?}", result, time);
        }
    }
}

fn advance2(
    main: &mut Source<Rec>,
    late: &mut Source<Late<Rec>>,
    time: Time,
    worker: &mut timely::worker::Worker,
) {
    main.advance(time);
    late.advance(time);
    steps(worker);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Early results depend on scheduling; what must hold regardless: each window's
    /// emissions are revisions 0..n, the last one `Final` with the reference value, and
    /// early values never exceed it (sums only grow).
    #[test]
    fn early_results_are_consistent(rounds in rounds(8), size in 5u64..40, period in 1u64..10) {
        let mut rounds = rounds;
        rounds.iter_mut().for_each(|r| r.late.clear());
        let want: Vec<Out> = reference(&rounds, size, size, 0);
        for workers in [1, 4] {
            let got = run_windowed(workers, &rounds, move |main, _late| {
                let policy = WindowPolicy::new().early(period);
                flatten(main.tumble("e", size, policy, None, |r: &Rec| r.0, Sum::new(|r: &Rec| r.1)))
            });
            let mut by_window: Emissions = BTreeMap::new();
            for (k, s, _, v, r, kind) in got.into_iter().flatten() {
                by_window.entry((k, s)).or_default().push((r, kind, v));
            }
            let mut finals = Vec::new();
            for ((k, s), mut emitted) in by_window {
                emitted.sort();
                let (last_revision, last_kind, last_value) = *emitted.last().unwrap();
                prop_assert_eq!(last_kind, Emit::Final);
                prop_assert_eq!(last_revision as usize, emitted.len() - 1);
                for (i, (r, kind, v)) in emitted.iter().enumerate() {
                    prop_assert_eq!(*r as usize, i);
                    prop_assert!(*v <= last_value);
                    prop_assert!(i + 1 == emitted.len() || *kind == Emit::Early);
                }
                finals.push(Ok((k, s, s + size, last_value, 0, Emit::Final)));
            }
            finals.sort();
            prop_assert_eq!(&finals, &want, "at {} workers", workers);
        }
    }
}

/// Whether every element of the probed frontier is past epoch `epoch`.
fn complete(probe: &timely::dataflow::ProbeHandle<Time>, epoch: u64) -> bool {
    probe.with_frontier(|f| f.iter().all(|t| t.epoch > epoch))
}

#[test]
fn tumble_holds_what_it_owes() {
    timely::execute(timely::Config::thread(), |worker| {
        let out = Arc::new(Mutex::new(Vec::new()));
        let (mut main, mut late, probe) = worker.dataflow::<Time, _, _>(|scope| {
            let (main, main_stream) = Source::<Rec>::new(&scope);
            let (late, late_stream) = Source::<Late<Rec>>::new(&scope);
            let w = main_stream.tumble(
                "owe",
                10,
                WindowPolicy::new().lateness(10),
                Some(late_stream),
                |r: &Rec| r.0,
                Sum::new(|r: &Rec| r.1),
            );
            let (probe, results) = w.results.probe();
            collect(results.map(|w| (w.value, w.revision, w.kind)), &out);
            (main, late, probe)
        });
        main.send(Time::new(3, 0), (1, 5, 3));
        advance2(&mut main, &mut late, Time::new(8, 1), worker);
        assert!(!complete(&probe, 0), "window [0, 10) holds epoch 0");
        advance2(&mut main, &mut late, Time::new(10, 2), worker);
        assert!(complete(&probe, 1), "window emitted, nothing held");
        assert_eq!(out.lock().unwrap().clone(), vec![(5, 0, Emit::Final)]);
        // A late record for [0, 10) at event time 15: held until the watermark passes 15.
        late.send(
            Time::new(15, 2),
            Late {
                event_time: 4,
                watermark: 15,
                record: (1, 7, 4),
            },
        );
        advance2(&mut main, &mut late, Time::new(15, 3), worker);
        assert!(!complete(&probe, 2), "correction owed for epoch 2");
        advance2(&mut main, &mut late, Time::new(16, 4), worker);
        assert!(complete(&probe, 3), "correction emitted, nothing held");
        assert_eq!(out.lock().unwrap()[1], (12, 1, Emit::Late));
        main.close();
        late.close();
    })
    .unwrap();
}

#[test]
fn tumble_preaggregate_holds_what_it_owes() {
    timely::execute(timely::Config::thread(), |worker| {
        let out = Arc::new(Mutex::new(Vec::new()));
        let (mut main, probe) = worker.dataflow::<Time, _, _>(|scope| {
            let (main, stream) = Source::<Rec>::new(&scope);
            let results =
                stream.tumble_preaggregate("owe", 10, |r: &Rec| r.0, Sum::new(|r: &Rec| r.1));
            let (probe, results) = results.probe();
            collect(results.map(|w| (w.value, w.revision, w.kind, w.end)), &out);
            (main, probe)
        });
        // Two records of key 1 in [0, 10), epochs 1 and 0.
        main.send(Time::new(3, 1), (1, 5, 3));
        main.send(Time::new(4, 0), (1, 7, 4));
        main.advance(Time::new(8, 2));
        steps(worker);
        assert!(!complete(&probe, 0), "window [0, 10) holds epoch 0");
        main.advance(Time::new(9, 3));
        steps(worker);
        assert!(!complete(&probe, 0), "window [0, 10) still open");
        assert!(out.lock().unwrap().is_empty());
        main.advance(Time::new(10, 3));
        steps(worker);
        assert!(complete(&probe, 2), "window emitted, nothing held");
        assert_eq!(out.lock().unwrap().clone(), vec![(12, 0, Emit::Final, 10)]);
        main.close();
    })
    .unwrap();
}

#[test]
fn slide_holds_what_it_owes() {
    timely::execute(timely::Config::thread(), |worker| {
        let (mut main, probe) = worker.dataflow::<Time, _, _>(|scope| {
            let (main, stream) = Source::<Rec>::new(&scope);
            let (probe, _) = stream.slide_count("owe", 10, 5, |r: &Rec| r.0).probe();
            (main, probe)
        });
        // In windows [0, 10) and [5, 15).
        main.send(Time::new(7, 0), (1, 1, 7));
        main.advance(Time::new(9, 1));
        steps(worker);
        assert!(!complete(&probe, 0));
        main.advance(Time::new(10, 1));
        steps(worker);
        assert!(!complete(&probe, 0), "[5, 15) still open");
        main.advance(Time::new(15, 1));
        steps(worker);
        assert!(complete(&probe, 0));
        main.close();
    })
    .unwrap();
}

#[test]
fn early_results_precede_the_final() {
    timely::execute(timely::Config::thread(), |worker| {
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut main = worker.dataflow::<Time, _, _>(|scope| {
            let (main, stream) = Source::<Rec>::new(&scope);
            let w = stream.tumble(
                "early",
                100,
                WindowPolicy::new().early(10),
                None,
                |r: &Rec| r.0,
                Sum::new(|r: &Rec| r.1),
            );
            collect(w.results.map(|w| (w.value, w.revision, w.kind)), &out);
            main
        });
        main.send(Time::new(1, 0), (0, 1, 1));
        main.advance(Time::new(15, 1));
        steps(worker);
        main.send(Time::new(20, 1), (0, 2, 20));
        main.advance(Time::new(35, 2));
        steps(worker);
        main.close();
        while worker.step() {}
        assert_eq!(
            out.lock().unwrap().clone(),
            vec![
                (1, 0, Emit::Early),
                (3, 1, Emit::Early),
                (3, 2, Emit::Final)
            ]
        );
    })
    .unwrap();
}

#[test]
fn late_record_in_an_open_window_holds_its_own_epoch() {
    timely::execute(timely::Config::thread(), |worker| {
        let out = Arc::new(Mutex::new(Vec::new()));
        let (mut main, mut late, probe) = worker.dataflow::<Time, _, _>(|scope| {
            let (main, main_stream) = Source::<Rec>::new(&scope);
            let (late, late_stream) = Source::<Late<Rec>>::new(&scope);
            let w = main_stream.tumble(
                "owe",
                10,
                WindowPolicy::new(),
                Some(late_stream),
                |r: &Rec| r.0,
                Sum::new(|r: &Rec| r.1),
            );
            let (probe, results) = w.results.probe();
            collect(results.map(|w| (w.value, w.kind)), &out);
            (main, late, probe)
        });
        // The window [0, 10) first holds epoch 2 (a record read in epoch 2) ...
        main.send(Time::new(3, 2), (1, 5, 3));
        main.advance(Time::new(4, 2));
        // ... then a late record read in epoch 1 by another source, at event time 4,
        // for the same window, which is still open: it must hold epoch 1 too.
        late.send(
            Time::new(4, 1),
            Late {
                event_time: 2,
                watermark: 4,
                record: (1, 7, 2),
            },
        );
        late.advance(Time::new(4, 2));
        steps(worker);
        assert!(!complete(&probe, 1), "epoch 1 is owed by the open window");
        advance2(&mut main, &mut late, Time::new(10, 3), worker);
        assert!(complete(&probe, 2));
        assert_eq!(out.lock().unwrap().clone(), vec![(12, Emit::Final)]);
        main.close();
        late.close();
    })
    .unwrap();
}
