//! Keyed state with a TTL: against a sequential reference at 1 and 4 workers, and the
//! capabilities it holds.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use common::{collect, rounds, run_windowed, steps, Rec, Round, Source};
use freshet_operators::{KeyedState, Time};
use proptest::prelude::*;
use timely::dataflow::operators::Probe;

/// After each record `Ok((key, running sum, event))`; on expiry `Err((key, sum))`.
type Out = Result<(u8, u64, u64), (u8, u64)>;

/// Keeps one record per key and event time in each round, so no two records of a key
/// share a timestamp (their order would be arrival order).
fn distinct(mut rounds: Vec<Round<Rec>>) -> Vec<Round<Rec>> {
    for round in &mut rounds {
        let mut seen = BTreeSet::new();
        round.records.retain(|(_, r)| seen.insert((r.0, r.2)));
    }
    rounds
}

fn reference(rounds: &[Round<Rec>], ttl: u64) -> Vec<Out> {
    let mut by_key: BTreeMap<u8, Vec<(u64, u64, u64)>> = BTreeMap::new();
    for (epoch, round) in rounds.iter().enumerate() {
        for (_, (k, v, t)) in &round.records {
            by_key.entry(*k).or_default().push((*t, epoch as u64, *v));
        }
    }
    let mut out = Vec::new();
    for (k, mut records) in by_key {
        records.sort();
        let mut state: Option<(u64, u64)> = None;
        for (t, _, v) in records {
            if let Some((sum, last)) = state {
                if last + ttl < t {
                    out.push(Err((k, sum)));
                    state = None;
                }
            }
            let sum = state.map_or(0, |s| s.0) + v;
            state = Some((sum, t));
            out.push(Ok((k, sum, t)));
        }
        if let Some((sum, _)) = state {
            out.push(Err((k, sum)));
        }
    }
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn keyed_state_matches_reference(rounds in rounds(8), ttl in 0u64..30) {
        let rounds = distinct(rounds);
        let want = reference(&rounds, ttl);
        for workers in [1, 4] {
            let got = run_windowed(workers, &rounds, move |main, _late| {
                main.keyed_state_with(
                    "sum",
                    ttl,
                    |r: &Rec| r.0,
                    |k, sum: &mut Option<u64>, r: Rec| {
                        let s = sum.unwrap_or(0) + r.1;
                        *sum = Some(s);
                        Some(Ok((*k, s, r.2)))
                    },
                    |k, sum| Some(Err((*k, sum))),
                )
            });
            prop_assert_eq!(&got, &want, "at {} workers", workers);
        }
    }
}

#[test]
fn keyed_state_holds_what_it_owes() {
    timely::execute(timely::Config::thread(), |worker| {
        let out = Arc::new(Mutex::new(Vec::new()));
        let (mut input, probe) = worker.dataflow::<Time, _, _>(|scope| {
            let (input, stream) = Source::<Rec>::new(&scope);
            let (probe, results) = stream
                .keyed_state_with(
                    "owe",
                    10,
                    |r: &Rec| r.0,
                    |_, n: &mut Option<u64>, _| {
                        *n = Some(n.unwrap_or(0) + 1);
                        None
                    },
                    |k, n| Some((*k, n)),
                )
                .probe();
            collect(results, &out);
            (input, probe)
        });
        let frontier = || probe.with_frontier(|f| f.to_vec());
        input.send(Time::new(5, 0), (1, 0, 5));
        input.advance(Time::new(8, 1));
        steps(worker);
        // Applied (the watermark passed 5); the state, from epoch 0, is held at the
        // watermark, not at its own event time.
        assert_eq!(frontier(), vec![Time::new(8, 0)]);
        input.advance(Time::new(15, 2));
        steps(worker);
        assert_eq!(frontier(), vec![Time::new(15, 0)], "expires only after 15");
        input.advance(Time::new(16, 2));
        steps(worker);
        assert_eq!(frontier(), vec![Time::new(16, 2)], "expired: nothing owed");
        assert_eq!(out.lock().unwrap().clone(), vec![(1, 1)]);
        input.close();
    })
    .unwrap();
}
