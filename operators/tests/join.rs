//! Window and interval joins: against sequential references at 1 and 4 workers, and
//! the capabilities they hold.

mod common;

use std::sync::{Arc, Mutex};

use common::upsert::run_stepwise;
use common::{collect, rounds, run_windowed, steps, Rec, Round, Source};
use freshet_operators::{Emit, IntervalJoin, JoinKind, Time, WindowJoin};
use proptest::prelude::*;
use timely::dataflow::operators::vec::{Filter, Map};
use timely::dataflow::operators::{Concat, Probe};

/// Left records are those with an even value, right ones those with an odd value.
fn sides(rounds: &[Round<Rec>]) -> (Vec<Rec>, Vec<Rec>) {
    let all = rounds
        .iter()
        .flat_map(|r| r.records.iter().map(|(_, d)| *d));
    all.partition(|r| r.1 & 1 == 0)
}

fn pairs(
    rounds: &[Round<Rec>],
    kind: JoinKind,
    matches: impl Fn(&Rec, &Rec) -> bool,
) -> Vec<(Rec, Option<Rec>)> {
    let (left, right) = sides(rounds);
    let mut out = Vec::new();
    for a in &left {
        let before = out.len();
        out.extend(
            right
                .iter()
                .filter(|b| matches(a, b))
                .map(|b| (*a, Some(*b))),
        );
        if out.len() == before && kind == JoinKind::Left {
            out.push((*a, None));
        }
    }
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn window_join_matches_reference(rounds in rounds(8), size in 1u64..30, left in any::<bool>()) {
        let kind = if left { JoinKind::Left } else { JoinKind::Inner };
        let want = pairs(&rounds, kind, |a, b| a.0 == b.0 && a.2 / size == b.2 / size);
        for workers in [1, 4] {
            let got = run_windowed(workers, &rounds, move |main, _late| {
                let a = main.clone().filter(|r: &Rec| r.1 & 1 == 0);
                let b = main.filter(|r: &Rec| r.1 & 1 == 1);
                a.window_join_with(b, "j", size, kind, |r: &Rec| r.0, |r: &Rec| r.0,
                    |_, a, b| (*a, b.copied()))
                    .map(move |w| {
                        assert_eq!(w.start, w.value.0 .2 / size * size);
                        w.value
                    })
            });
            prop_assert_eq!(&got, &want, "at {} workers", workers);
        }
    }

    /// A window join's results are rows, not upserts of one value per window: each row
    /// is emitted once, as revision 0 `Final`, stamped `(end - 1, e)`. What a consumer
    /// has read once the event-time frontier reaches a round's watermark `W` (every
    /// row stamped below `W`) is exactly the reference's rows of the windows ending at
    /// or before `W`, at 1 and 3 workers.
    #[test]
    fn window_join_rows_are_final_when_read(
        rounds in rounds(8), size in 1u64..30, left in any::<bool>(),
    ) {
        let kind = if left { JoinKind::Left } else { JoinKind::Inner };
        let want = pairs(&rounds, kind, |a, b| a.0 == b.0 && a.2 / size == b.2 / size);
        for workers in [1, 3] {
            let got = run_stepwise(workers, &rounds, move |main, _late| {
                let a = main.clone().filter(|r: &Rec| r.1 & 1 == 0);
                let b = main.filter(|r: &Rec| r.1 & 1 == 1);
                a.window_join_with(b, "j", size, kind, |r: &Rec| r.0, |r: &Rec| r.0,
                    |_, a, b| (*a, b.copied()))
                    .map(|w| (w.end, w.revision, w.kind, w.value))
            });
            for &(_, (_, revision, kind, _)) in &got.arrived {
                prop_assert_eq!((revision, kind), (0, Emit::Final));
            }
            for &w in &got.watermarks {
                let mut read: Vec<_> = got.read_by(w).map(|(_, _, _, row)| *row).collect();
                read.sort();
                let closed: Vec<_> = want
                    .iter()
                    .filter(|(a, _)| (a.2 / size + 1) * size <= w)
                    .copied()
                    .collect();
                prop_assert_eq!(&read, &closed, "at watermark {} and {} workers", w, workers);
            }
        }
    }

    #[test]
    fn interval_join_matches_reference(
        rounds in rounds(8), lower in 0u64..15, upper in 0u64..15, left in any::<bool>(),
    ) {
        let kind = if left { JoinKind::Left } else { JoinKind::Inner };
        let want = pairs(&rounds, kind, |a, b| {
            a.0 == b.0 && a.2 <= b.2 + lower && b.2 <= a.2 + upper
        });
        for workers in [1, 4] {
            let got = run_windowed(workers, &rounds, move |main, _late| {
                let a = main.clone().filter(|r: &Rec| r.1 & 1 == 0);
                let b = main.filter(|r: &Rec| r.1 & 1 == 1);
                a.interval_join_with(b, "j", lower, upper, kind, |r: &Rec| r.0, |r: &Rec| r.0,
                    |_, a, b| (*a, b.copied()))
            });
            prop_assert_eq!(&got, &want, "at {} workers", workers);
        }
    }
}

fn complete(probe: &timely::dataflow::ProbeHandle<Time>, epoch: u64) -> bool {
    probe.with_frontier(|f| f.iter().all(|t| t.epoch > epoch))
}

#[test]
fn window_join_holds_what_it_owes() {
    timely::execute(timely::Config::thread(), |worker| {
        let out = Arc::new(Mutex::new(Vec::new()));
        let (mut a, mut b, probe) = worker.dataflow::<Time, _, _>(|scope| {
            let (a, a_stream) = Source::<Rec>::new(&scope);
            let (b, b_stream) = Source::<Rec>::new(&scope);
            let (probe, joined) = a_stream
                .window_join(b_stream, "owe", 10, |r: &Rec| r.0, |r: &Rec| r.0)
                .probe();
            collect(joined.map(|w| w.value), &out);
            (a, b, probe)
        });
        a.send(Time::new(2, 0), (1, 0, 2));
        b.send(Time::new(6, 1), (1, 1, 6));
        a.advance(Time::new(9, 2));
        b.advance(Time::new(9, 2));
        steps(worker);
        assert!(!complete(&probe, 0), "window [0, 10) holds epoch 0");
        a.advance(Time::new(10, 2));
        b.advance(Time::new(10, 2));
        steps(worker);
        assert!(complete(&probe, 1));
        assert_eq!(out.lock().unwrap().clone(), vec![((1, 0, 2), (1, 1, 6))]);
        a.close();
        b.close();
    })
    .unwrap();
}

#[test]
fn interval_join_holds_what_it_owes() {
    timely::execute(timely::Config::thread(), |worker| {
        let (mut a, mut b, probe) = worker.dataflow::<Time, _, _>(|scope| {
            let (a, a_stream) = Source::<Rec>::new(&scope);
            let (b, b_stream) = Source::<Rec>::new(&scope);
            let (probe, _) = a_stream
                .interval_left_join(b_stream, "owe", 0, 10, |r: &Rec| r.0, |r: &Rec| r.0)
                .probe();
            (a, b, probe)
        });
        a.send(Time::new(5, 0), (1, 0, 5));
        for (t, epoch) in [(15, 1), (16, 2)] {
            a.advance(Time::new(t, epoch));
            b.advance(Time::new(t, epoch));
            steps(worker);
            // `a` at 5 may still pair with a `b` at 15, and is owed as unmatched; its
            // epoch is held at the watermark, not at 5.
            assert_eq!(complete(&probe, 0), t > 15, "watermark {t}");
            if t <= 15 {
                assert_eq!(probe.with_frontier(|f| f.to_vec()), vec![Time::new(t, 0)]);
            }
        }
        a.close();
        b.close();
    })
    .unwrap();
}

/// A join's rows by `(key, window start)`.
type ByWindow = std::collections::BTreeMap<(u8, u64), Vec<(Rec, Option<Rec>)>>;

/// A capped join's output: a row, or a `(key, window)`'s overflow report `(key, start,
/// left, right, rows, emitted)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Capped {
    Row(u64, (Rec, Option<Rec>)),
    Over(u8, u64, u64, u64, u64, u64),
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// `window_join_capped`: per `(key, window)` exactly `min(cap, rows)` rows, each
    /// one of the sequential reference's; a `(key, window)` over the cap reported once
    /// with its exact counts, every other one not at all; at 1 and 2 workers.
    #[test]
    fn capped_window_join_emits_the_cap_and_reports_the_rest(
        rounds in rounds(8), size in 1u64..30, left in any::<bool>(), cap in 1usize..4,
    ) {
        let kind = if left { JoinKind::Left } else { JoinKind::Inner };
        let want = pairs(&rounds, kind, |a, b| a.0 == b.0 && a.2 / size == b.2 / size);
        let (l, r) = sides(&rounds);
        for workers in [1, 2] {
            let got = run_windowed(workers, &rounds, move |main, _late| {
                let a = main.clone().filter(|r: &Rec| r.1 & 1 == 0);
                let b = main.filter(|r: &Rec| r.1 & 1 == 1);
                let j = a.window_join_capped(b, "j", size, kind, cap, |r: &Rec| r.0,
                    |r: &Rec| r.0, |_, a, b| (*a, b.copied()));
                let over = j.overflow.map(|o| {
                    Capped::Over(o.key, o.start, o.left, o.right, o.rows, o.emitted)
                });
                j.rows.map(|w| Capped::Row(w.start, w.value)).concat(over)
            });
            // Per (key, window): the reference's rows, and the rows emitted.
            let mut reference: ByWindow = Default::default();
            for row in &want {
                reference.entry((row.0 .0, row.0 .2 / size * size)).or_default().push(*row);
            }
            let mut rows: ByWindow = Default::default();
            let mut reports = Vec::new();
            for o in &got {
                match o {
                    Capped::Row(start, row) => rows.entry((row.0 .0, *start)).or_default().push(*row),
                    Capped::Over(k, s, n, m, all, emitted) => reports.push((*k, *s, *n, *m, *all, *emitted)),
                }
            }
            let mut want_reports = Vec::new();
            for ((k, s), all) in &reference {
                let got_rows = rows.remove(&(*k, *s)).unwrap_or_default();
                prop_assert_eq!(got_rows.len(), all.len().min(cap), "rows of {:?} at {} workers", (k, s), workers);
                for row in &got_rows {
                    prop_assert!(all.contains(row), "{:?} is not a reference row", row);
                }
                if all.len() > cap {
                    let count = |side: &[Rec]| side.iter().filter(|x| x.0 == *k && x.2 / size * size == *s).count() as u64;
                    want_reports.push((*k, *s, count(&l), count(&r), all.len() as u64, cap as u64));
                }
            }
            prop_assert!(rows.is_empty(), "rows of windows without reference rows: {:?}", rows);
            reports.sort();
            prop_assert_eq!(&reports, &want_reports, "overflow reports at {} workers", workers);
        }
    }
}

/// A hot key: 30 left and 40 right records in one window make 1,200 rows; capped at
/// 50, exactly 50 come out, and one report says 30, 40, 1,200 and 50.
#[test]
fn a_hot_key_is_capped_and_reported() {
    let rounds = vec![Round {
        watermark: 0,
        records: (0..70u64)
            .map(|i| {
                (
                    i % 10,
                    (1u8, if i < 30 { 2 * i } else { 2 * i + 1 }, i % 10),
                )
            })
            .collect(),
        late: vec![],
    }];
    for workers in [1, 2] {
        let got = run_windowed(workers, &rounds, move |main, _late| {
            let a = main.clone().filter(|r: &Rec| r.1 & 1 == 0);
            let b = main.filter(|r: &Rec| r.1 & 1 == 1);
            let j = a.window_join_capped(
                b,
                "hot",
                100,
                JoinKind::Inner,
                50,
                |r: &Rec| r.0,
                |r: &Rec| r.0,
                |_, a, b| (*a, b.copied()),
            );
            let over = j
                .overflow
                .map(|o| Capped::Over(o.key, o.start, o.left, o.right, o.rows, o.emitted));
            j.rows.map(|w| Capped::Row(w.start, w.value)).concat(over)
        });
        let rows = got.iter().filter(|o| matches!(o, Capped::Row(..))).count();
        let reports: Vec<_> = got
            .iter()
            .filter(|o| matches!(o, Capped::Over(..)))
            .collect();
        assert_eq!(rows, 50, "at {workers} workers");
        assert_eq!(
            reports,
            vec![&Capped::Over(1, 0, 30, 40, 1_200, 50)],
            "at {workers} workers"
        );
    }
}
