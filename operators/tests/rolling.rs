//! Rolling (OVER) windows: both modes against sequential references at 1 and 4 workers
//! on disordered input with late records, and the capabilities they hold.

mod common;

use std::sync::{Arc, Mutex};

use common::{collect, round_at, rounds, steps, Rec, Round, Source};
use freshet_operators::aggregate::Collect;
use freshet_operators::{Late, Rolling, RollingMode, RollingPolicy, Time};
use proptest::prelude::*;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concat, Probe};
use timely::dataflow::StreamVec;

/// A record, the records its window counted (sorted) and whether it was late; or a
/// too-late record.
type Out = Result<(Rec, Vec<Rec>, bool), Late<Rec>>;

fn in_window(t: u64, range: u64, s: u64) -> bool {
    s <= t && s + range > t
}

/// The sequential model. Exact: every on-time record of the key in `(t - range, t]`.
/// On arrival: those read before it (in the order each key's records were read) and
/// itself. Late records (both modes): every on-time record of the key in their window
/// and themselves, or too late if more than `lateness` behind the round's watermark.
fn reference(rounds: &[Round<Rec>], range: u64, mode: RollingMode, lateness: u64) -> Vec<Out> {
    let all: Vec<Rec> = rounds
        .iter()
        .flat_map(|r| r.records.iter().map(|(_, rec)| *rec))
        .collect();
    let counted = |r: &Rec, from: &[Rec]| {
        let mut v: Vec<Rec> = from
            .iter()
            .filter(|s| s.0 == r.0 && in_window(r.2, range, s.2))
            .copied()
            .collect();
        v.sort();
        v
    };
    let mut out = Vec::new();
    let mut seen: Vec<Rec> = Vec::new();
    for round in rounds {
        for (_, r) in &round.records {
            seen.push(*r);
            let value = match mode {
                RollingMode::Exact => counted(r, &all),
                RollingMode::OnArrival => counted(r, &seen),
            };
            out.push(Ok((*r, value, false)));
        }
        for late in &round.late {
            if late.event_time + lateness < round.watermark {
                out.push(Err(late.clone()));
            } else {
                let mut value = counted(&late.record, &all);
                value.push(late.record);
                value.sort();
                out.push(Ok((late.record, value, true)));
            }
        }
    }
    out.sort();
    out
}

/// Like `common::run_windowed`, but each key's records are read by one worker (as
/// from a keyed topic), in the order of the rounds, so on-arrival order is defined.
fn run_keyed<F>(workers: usize, rounds: &[Round<Rec>], build: F) -> Vec<Out>
where
    F: for<'s> Fn(
            StreamVec<'s, Time, Rec>,
            StreamVec<'s, Time, Late<Rec>>,
        ) -> StreamVec<'s, Time, Out>
        + Send
        + Sync
        + 'static,
{
    let out = Arc::new(Mutex::new(Vec::new()));
    let rounds = rounds.to_vec();
    let shared = out.clone();
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let (mut main, mut late) = worker.dataflow::<Time, _, _>(|scope| {
            let (main, main_stream) = Source::new(&scope);
            let (late, late_stream) = Source::new(&scope);
            collect(build(main_stream, late_stream), &shared);
            (main, late)
        });
        for (epoch, round) in rounds.iter().enumerate() {
            let epoch = epoch as u64;
            for (event, record) in &round.records {
                if record.0 as usize % peers == index {
                    main.send(Time::new(*event, epoch), *record);
                }
            }
            for (i, record) in round.late.iter().enumerate() {
                if i % peers == index {
                    late.send(Time::new(round.watermark, epoch), record.clone());
                }
            }
            let next = rounds
                .get(epoch as usize + 1)
                .map_or(round.watermark, |r| r.watermark);
            main.advance(Time::new(next, epoch + 1));
            late.advance(Time::new(next, epoch + 1));
            for _ in 0..3 {
                worker.step();
            }
        }
        main.close();
        late.close();
    })
    .expect("timely ran");
    let mut out = Arc::try_unwrap(out)
        .expect("workers done")
        .into_inner()
        .unwrap();
    out.sort();
    out
}

fn check(rounds: &[Round<Rec>], range: u64, mode: RollingMode, lateness: u64) {
    let want = reference(rounds, range, mode, lateness);
    for workers in [1, 4] {
        let got = run_keyed(workers, rounds, move |main, late| {
            let policy = RollingPolicy { mode, lateness };
            let records = Collect::new(|rs: &[Rec]| {
                let mut v = rs.to_vec();
                v.sort();
                v
            });
            let r = main.rolling("r", range, policy, Some(late), |r: &Rec| r.0, records);
            r.results
                .map(|r| Ok((r.record, r.value, r.late)))
                .concat(r.too_late.map(Err))
        });
        assert_eq!(got, want, "{mode:?} at {workers} workers");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn exact_matches_reference(rounds in rounds(8), range in 1u64..40, lateness in 0u64..40) {
        check(&rounds, range, RollingMode::Exact, lateness);
    }

    #[test]
    fn on_arrival_matches_reference(rounds in rounds(8), range in 1u64..40, lateness in 0u64..40) {
        check(&rounds, range, RollingMode::OnArrival, lateness);
    }
}

/// Rounds dense enough in event time that a key has a record in nearly every block
/// of a range of 4.5–9 s: its results span more blocks than the operator merges one
/// by one, so they read the runs it keeps, as time moves on, with disorder and late
/// records far behind.
fn dense_rounds() -> impl Strategy<Value = Vec<Round<Rec>>> {
    let round = (
        400u64..2500,
        prop::collection::vec((0u8..2, 0u64..100, 0u64..3300), 150..300),
        prop::collection::vec((0u8..2, 0u64..100, 0u64..11_000), 0..6),
    );
    prop::collection::vec(round, 4..9).prop_map(|raw| {
        let mut watermark = 0;
        raw.into_iter()
            .map(|(step, records, late)| {
                watermark += step;
                let records = records
                    .into_iter()
                    .map(|(k, v, off)| (k, v, watermark + off % (step + 800)));
                round_at(watermark, records, late)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    #[test]
    fn long_ranges_over_dense_keys_match_reference(
        rounds in dense_rounds(),
        range in 4500u64..9000,
        lateness in 0u64..6000,
    ) {
        check(&rounds, range, RollingMode::Exact, lateness);
        check(&rounds, range, RollingMode::OnArrival, lateness);
    }
}

/// Disorder separates the modes: a record read after a later-stamped one of its key
/// is counted by it in exact mode only.
#[test]
fn modes_differ_on_disorder() {
    let rounds = vec![Round {
        watermark: 0,
        records: vec![(10, (1, 7, 10)), (5, (1, 3, 5))],
        late: vec![],
    }];
    let exact = reference(&rounds, 100, RollingMode::Exact, 0);
    let arrival = reference(&rounds, 100, RollingMode::OnArrival, 0);
    assert_ne!(exact, arrival);
    check(&rounds, 100, RollingMode::Exact, 0);
    check(&rounds, 100, RollingMode::OnArrival, 0);
    // On arrival, the record at 10 was read first and counts itself only.
    assert!(arrival.contains(&Ok(((1, 7, 10), vec![(1, 7, 10)], false))));
    assert!(exact.contains(&Ok(((1, 7, 10), vec![(1, 3, 5), (1, 7, 10)], false))));
}

#[test]
fn rolling_holds_what_it_owes() {
    for mode in [RollingMode::Exact, RollingMode::OnArrival] {
        timely::execute(timely::Config::thread(), move |worker| {
            let out = Arc::new(Mutex::new(Vec::new()));
            let (mut input, probe) = worker.dataflow::<Time, _, _>(|scope| {
                let (input, stream) = Source::<Rec>::new(&scope);
                let (probe, results) = stream
                    .rolling_count("owe", 10, mode, |r: &Rec| r.0)
                    .map(|r| (r.record, r.value))
                    .probe();
                collect(results, &out);
                (input, probe)
            });
            let frontier = || probe.with_frontier(|f| f.to_vec());
            input.send(Time::new(5, 0), (1, 0, 5));
            steps(worker);
            match mode {
                RollingMode::Exact => {
                    assert!(
                        out.lock().unwrap().is_empty(),
                        "exact waits for the watermark"
                    );
                    assert_eq!(frontier(), vec![Time::new(0, 0)]);
                }
                RollingMode::OnArrival => {
                    assert_eq!(out.lock().unwrap().clone(), vec![((1, 0, 5), 1)]);
                }
            }
            input.advance(Time::new(8, 1));
            steps(worker);
            assert_eq!(out.lock().unwrap().clone(), vec![((1, 0, 5), 1)]);
            // Emitted; the state, from epoch 0, is held at the watermark.
            assert_eq!(frontier(), vec![Time::new(8, 0)], "{mode:?}");
            // The record's block is [3, 5] (width ⌊√10⌋): kept until the watermark
            // is 10 past its end.
            input.advance(Time::new(14, 2));
            steps(worker);
            assert_eq!(frontier(), vec![Time::new(14, 0)], "{mode:?}: still owed");
            input.advance(Time::new(15, 2));
            steps(worker);
            assert_eq!(frontier(), vec![Time::new(15, 2)], "{mode:?}: dropped");
            input.close();
        })
        .unwrap();
    }
}
