//! Session windows: against a sequential reference at 1 and 4 workers, and the
//! capabilities they hold.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::upsert::{check_contract, run_stepwise, Result4};
use common::{collect, rounds, run_windowed, steps, Rec, Round, Source};
use freshet_operators::aggregate::{Count, Sum};
use freshet_operators::{Emit, Late, Session, Time, WindowPolicy};
use proptest::prelude::*;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concat, Probe};

/// `(key, start, end, sum, revision, kind)` or a too-late record.
type Out = Result<(u8, u64, u64, u64, u32, Emit), Late<Rec>>;

/// A session in the model: `(start, last, sum)`, and for emitted ones
/// `(revision of the next emission, value last emitted)`.
#[derive(Clone, Debug)]
struct S {
    start: u64,
    last: u64,
    sum: u64,
    next: u32,
    shown: Option<u64>,
}

/// The sequential model, in event-time order: main records up to a late batch's time,
/// then the sessions ended by then, then the batch; at the end all the rest. Sorted.
fn reference(rounds: &[Round<Rec>], gap: u64, lateness: u64) -> Vec<Out> {
    let mut out: Vec<Out> = timed_reference(rounds, gap, lateness)
        .into_iter()
        .map(|(_, o)| o)
        .collect();
    out.sort();
    out
}

/// The sequential model's results with the event time each is emitted at: a final
/// at `end - 1`, what a late batch changes at the batch's time.
fn timed_reference(rounds: &[Round<Rec>], gap: u64, lateness: u64) -> Vec<(u64, Out)> {
    let mut main: Vec<(u64, u8, u64)> = rounds
        .iter()
        .flat_map(|r| r.records.iter().map(|(t, (k, v, _))| (*t, *k, *v)))
        .collect();
    main.sort();
    let mut main = main.into_iter().peekable();
    let mut open: BTreeMap<u8, Vec<S>> = BTreeMap::new();
    let mut closed: BTreeMap<u8, Vec<S>> = BTreeMap::new();
    let mut out = Vec::new();
    let touches = |s: &S, t: u64| s.start < t + gap && t < s.last + gap;
    // Removes the sessions `f` picks from `list`, returning them.
    fn take(list: &mut Vec<S>, f: impl Fn(&S) -> bool) -> Vec<S> {
        let (hit, keep): (Vec<S>, Vec<S>) = list.drain(..).partition(|s| f(s));
        *list = keep;
        hit
    }
    let add = |list: &mut Vec<S>, parts: Vec<S>, t: u64, v: u64| {
        let mut s = S {
            start: t,
            last: t,
            sum: v,
            next: 0,
            shown: None,
        };
        for p in parts {
            s.start = s.start.min(p.start);
            s.last = s.last.max(p.last);
            s.sum += p.sum;
        }
        list.push(s);
        list.sort_by_key(|s| s.start);
    };
    let close = |upto: u64,
                 open: &mut BTreeMap<u8, Vec<S>>,
                 closed: &mut BTreeMap<u8, Vec<S>>,
                 out: &mut Vec<(u64, Out)>| {
        for (k, list) in open.iter_mut() {
            for mut s in take(list, |s| s.last + gap <= upto) {
                let end = s.last + gap;
                out.push((end - 1, Ok((*k, s.start, end, s.sum, 0, Emit::Final))));
                s.next = 1;
                s.shown = Some(s.sum);
                closed.entry(*k).or_default().push(s);
            }
        }
    };
    for round in rounds {
        let now = round.watermark;
        while let Some((t, k, v)) = main.next_if(|(t, _, _)| *t <= now) {
            let list = open.entry(k).or_default();
            let parts = take(list, |s| touches(s, t));
            add(list, parts, t, v);
        }
        close(now, &mut open, &mut closed, &mut out);
        let mut dirty: Vec<(u8, u64, u64)> = Vec::new();
        for late in &round.late {
            let (et, k, v) = (late.event_time, late.record.0, late.record.1);
            if now >= et + gap + lateness {
                out.push((now, Err(late.clone())));
                continue;
            }
            let cl = closed.entry(k).or_default();
            let hit_closed = take(cl, |s| touches(s, et));
            let hit_open = take(open.entry(k).or_default(), |s| touches(s, et));
            let start = hit_closed
                .iter()
                .chain(&hit_open)
                .map(|s| s.start)
                .fold(et, u64::min);
            let last = hit_closed
                .iter()
                .chain(&hit_open)
                .map(|s| s.last)
                .fold(et, u64::max);
            let same = hit_closed.len() == 1
                && hit_open.is_empty()
                && hit_closed[0].start == start
                && hit_closed[0].last == last;
            if same {
                let mut s = hit_closed.into_iter().next().unwrap();
                s.sum += v;
                cl.push(s);
                cl.sort_by_key(|s| s.start);
                dirty.push((k, start, last));
                continue;
            }
            for c in &hit_closed {
                if let Some(shown) = c.shown {
                    let retract = (k, c.start, c.last + gap, shown, c.next, Emit::Retract);
                    out.push((now, Ok(retract)));
                }
            }
            let ended = hit_open.is_empty() && last + gap <= now;
            let parts: Vec<S> = hit_closed.into_iter().chain(hit_open).collect();
            if ended {
                add(cl, parts, et, v);
                dirty.push((k, start, last));
            } else {
                add(open.entry(k).or_default(), parts, et, v);
            }
        }
        dirty.sort();
        dirty.dedup();
        for (k, start, last) in dirty {
            if let Some(s) = closed
                .get_mut(&k)
                .and_then(|l| l.iter_mut().find(|s| s.start == start && s.last == last))
            {
                let correction = (k, s.start, s.last + gap, s.sum, s.next, Emit::Late);
                out.push((now, Ok(correction)));
                s.next += 1;
                s.shown = Some(s.sum);
            }
        }
    }
    for (t, k, v) in main {
        let list = open.entry(k).or_default();
        let parts = take(list, |s| touches(s, t));
        add(list, parts, t, v);
    }
    close(u64::MAX, &mut open, &mut closed, &mut out);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// The upsert contract (see `common::upsert`) with early results, lateness and
    /// late records, at 1 and 3 workers.
    #[test]
    fn session_keeps_the_upsert_contract(
        rounds in rounds(8), gap in 1u64..20, lateness in 0u64..30,
        early in prop::option::of(1u64..8),
    ) {
        let want: Vec<(u64, Result4)> = timed_reference(&rounds, gap, lateness)
            .into_iter()
            .filter_map(|(at, o)| o.ok().map(|r| (at, r)))
            .collect();
        for workers in [1, 3] {
            let got = run_stepwise(workers, &rounds, move |main, late| {
                let mut policy = WindowPolicy::new().lateness(lateness);
                if let Some(period) = early {
                    policy = policy.early(period);
                }
                main.session("s", gap, policy, Some(late), |r: &Rec| r.0, Sum::new(|r: &Rec| r.1))
                    .results
                    .map(|w| (w.key, w.start, w.end, w.value, w.revision, w.kind))
            });
            check_contract(&got, &want);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn session_matches_reference(rounds in rounds(8), gap in 1u64..20, lateness in 0u64..30) {
        let want = reference(&rounds, gap, lateness);
        for workers in [1, 4] {
            let got = run_windowed(workers, &rounds, move |main, late| {
                let w = main.session("s", gap, WindowPolicy::new().lateness(lateness), Some(late), |r: &Rec| r.0, Sum::new(|r: &Rec| r.1));
                w.results
                    .map(|w| Ok((w.key, w.start, w.end, w.value, w.revision, w.kind)))
                    .concat(w.too_late.map(Err))
            });
            prop_assert_eq!(&got, &want, "at {} workers", workers);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Early results depend on scheduling; what must hold regardless: replaying the
    /// output as upserts by `(key, start, end)` (highest revision wins, `Retract`
    /// deletes) leaves exactly the reference's sessions, each with its final value,
    /// and every `(key, start, end)` has revisions 0, 1, 2, ...
    #[test]
    fn early_session_results_replay_to_the_reference(
        rounds in rounds(8), gap in 1u64..20, period in 1u64..8,
    ) {
        let mut rounds = rounds;
        rounds.iter_mut().for_each(|r| r.late.clear());
        let want: Vec<(u8, u64, u64, u64)> = reference(&rounds, gap, 0)
            .into_iter()
            .flatten()
            .map(|(k, s, e, v, _, _)| (k, s, e, v))
            .collect();
        for workers in [1, 4] {
            let got = run_windowed(workers, &rounds, move |main, _late| {
                let policy = WindowPolicy::new().early(period);
                main.session("s", gap, policy, None, |r: &Rec| r.0, Sum::new(|r: &Rec| r.1))
                    .results
                    .map(|w| ((w.key, w.start, w.end), w.revision, w.kind, w.value))
            });
            let mut table: History = BTreeMap::new();
            for (window, revision, kind, value) in got {
                table.entry(window).or_default().push((revision, kind, value));
            }
            let mut live = Vec::new();
            for ((k, s, e), mut history) in table {
                history.sort();
                for (i, (revision, _, _)) in history.iter().enumerate() {
                    prop_assert_eq!(*revision as usize, i, "{:?}", history);
                }
                let (_, kind, value) = *history.last().unwrap();
                if kind != Emit::Retract {
                    prop_assert_eq!(kind, Emit::Final);
                    live.push((k, s, e, value));
                }
            }
            prop_assert_eq!(&live, &want, "at {} workers", workers);
        }
    }
}

/// Per `(key, start, end)`: `(revision, kind, value)` of each emission.
type History = BTreeMap<(u8, u64, u64), Vec<(u32, Emit, u64)>>;

#[test]
fn session_holds_what_it_owes() {
    timely::execute(timely::Config::thread(), |worker| {
        let out = Arc::new(Mutex::new(Vec::new()));
        let (mut main, probe) = worker.dataflow::<Time, _, _>(|scope| {
            let (main, stream) = Source::<Rec>::new(&scope);
            let (probe, results) = stream.session_count("owe", 10, |r: &Rec| r.0).probe();
            collect(results.map(|w| (w.start, w.end, w.value)), &out);
            (main, probe)
        });
        let complete = |epoch: u64| probe.with_frontier(|f| f.iter().all(|t| t.epoch > epoch));
        main.send(Time::new(5, 0), (1, 0, 5));
        main.advance(Time::new(12, 1));
        steps(worker);
        assert!(!complete(0), "session [5, 15) open");
        // Extends the session to [5, 24): epoch 0 is still owed, now until 24.
        main.send(Time::new(14, 1), (1, 0, 14));
        main.advance(Time::new(20, 2));
        steps(worker);
        assert!(!complete(0), "session [5, 24) open");
        // Extends it to [5, 33): its capability, a gap behind, moves up to (32, 0).
        main.send(Time::new(23, 2), (1, 0, 23));
        main.advance(Time::new(30, 3));
        steps(worker);
        assert!(!complete(0), "session [5, 33) open");
        let frontier = probe.with_frontier(|f| f.to_vec());
        assert!(frontier.contains(&Time::new(32, 0)), "{frontier:?}");
        main.advance(Time::new(33, 3));
        steps(worker);
        assert!(complete(2), "session emitted, nothing held");
        assert_eq!(out.lock().unwrap().clone(), vec![(5, 33, 3)]);
        main.close();
    })
    .unwrap();
}

#[test]
fn session_late_batch_holds_its_epoch_until_applied() {
    timely::execute(timely::Config::thread(), |worker| {
        let out = Arc::new(Mutex::new(Vec::new()));
        let (mut main, mut late, probe) = worker.dataflow::<Time, _, _>(|scope| {
            let (main, stream) = Source::<Rec>::new(&scope);
            let (late, late_stream) = Source::<Late<Rec>>::new(&scope);
            let w = stream.session(
                "owe",
                5,
                WindowPolicy::new().lateness(10),
                Some(late_stream),
                |r: &Rec| r.0,
                Sum::new(|r: &Rec| r.1),
            );
            let (probe, results) = w.results.probe();
            collect(
                results.map(|w| (w.start, w.end, w.value, w.revision, w.kind)),
                &out,
            );
            (main, late, probe)
        });
        let complete = |epoch: u64| probe.with_frontier(|f| f.iter().all(|t| t.epoch > epoch));
        main.send(Time::new(1, 0), (1, 1, 1));
        main.advance(Time::new(8, 1));
        late.advance(Time::new(8, 1));
        steps(worker);
        assert!(complete(0), "[1, 6) emitted");
        // A late 3 at event time 8 (epoch 1) grows [1, 6) to [1, 8): owed until 8 passes.
        late.send(
            Time::new(8, 1),
            Late {
                event_time: 3,
                watermark: 8,
                record: (1, 10, 3),
            },
        );
        main.advance(Time::new(8, 2));
        late.advance(Time::new(8, 2));
        steps(worker);
        assert!(!complete(1), "correction owed for epoch 1");
        main.advance(Time::new(9, 2));
        late.advance(Time::new(9, 2));
        steps(worker);
        assert!(complete(1));
        assert_eq!(
            out.lock().unwrap().clone(),
            vec![
                (1, 6, 1, 0, Emit::Final),
                (1, 6, 1, 1, Emit::Retract),
                (1, 8, 11, 0, Emit::Late)
            ]
        );
        main.close();
        late.close();
    })
    .unwrap();
}

/// A late record inside an open session that already showed an early result keeps the
/// session's revision sequence: Early rev 0, then Final rev 1 (a regression: the late
/// path rebuilt the session, so it retracted its own bounds and restarted at rev 0).
#[test]
fn late_record_inside_an_early_session_continues_its_revisions() {
    let out = Arc::new(Mutex::new(Vec::new()));
    let shared = out.clone();
    timely::execute(timely::Config::thread(), move |worker| {
        let (mut main, mut late) = worker.dataflow::<Time, _, _>(|scope| {
            let (main, stream) = Source::<Rec>::new(&scope);
            let (late, late_stream) = Source::<Late<Rec>>::new(&scope);
            let policy = WindowPolicy::new().early(100);
            let w = stream.session(
                "visits",
                300,
                policy,
                Some(late_stream),
                |r: &Rec| r.0,
                Count,
            );
            collect(
                w.results
                    .map(|w| (w.start, w.end, w.value, w.revision, w.kind)),
                &shared,
            );
            (main, late)
        });
        main.send(Time::new(110, 0), (0, 0, 110));
        main.send(Time::new(170, 0), (0, 0, 170));
        main.advance(Time::new(150, 1));
        late.advance(Time::new(150, 1));
        steps(worker);
        late.send(
            Time::new(150, 1),
            Late {
                event_time: 130,
                watermark: 150,
                record: (0, 0, 130),
            },
        );
        main.close();
        late.close();
    })
    .unwrap();
    assert_eq!(
        out.lock().unwrap().clone(),
        vec![(110, 470, 2, 0, Emit::Early), (110, 470, 3, 1, Emit::Final)]
    );
}
