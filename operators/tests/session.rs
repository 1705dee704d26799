//! Session windows: against a sequential reference at 1 and 4 workers, and the
//! capabilities they hold.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::{collect, rounds, run_windowed, steps, Rec, Round, Source};
use freshet_operators::aggregate::Sum;
use freshet_operators::{Late, Session, Time};
use proptest::prelude::*;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concat, Probe};

/// `(key, start, end, sum)` or a too-late record.
type Out = Result<(u8, u64, u64, u64), Late<Rec>>;

/// Sessions of each key: sorted events, split where consecutive ones are `gap` apart.
fn reference(rounds: &[Round<Rec>], gap: u64) -> Vec<Out> {
    let mut by_key: BTreeMap<u8, Vec<(u64, u64)>> = BTreeMap::new();
    let mut out = Vec::new();
    for round in rounds {
        for (event, (k, v, _)) in &round.records {
            by_key.entry(*k).or_default().push((*event, *v));
        }
        out.extend(round.late.iter().cloned().map(Err));
    }
    for (k, mut events) in by_key {
        events.sort();
        let mut current: Option<(u64, u64, u64)> = None;
        for (t, v) in events {
            current = match current {
                Some((start, last, sum)) if t < last + gap => Some((start, t, sum + v)),
                Some((start, last, sum)) => {
                    out.push(Ok((k, start, last + gap, sum)));
                    Some((t, t, v))
                }
                None => Some((t, t, v)),
            };
        }
        if let Some((start, last, sum)) = current {
            out.push(Ok((k, start, last + gap, sum)));
        }
    }
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn session_matches_reference(rounds in rounds(8), gap in 1u64..20) {
        let want = reference(&rounds, gap);
        for workers in [1, 4] {
            let got = run_windowed(workers, &rounds, move |main, late| {
                let w = main.session("s", gap, Some(late), |r: &Rec| r.0, Sum::new(|r: &Rec| r.1));
                w.results
                    .map(|w| Ok((w.key, w.start, w.end, w.value)))
                    .concat(w.too_late.map(Err))
            });
            prop_assert_eq!(&got, &want, "at {} workers", workers);
        }
    }
}

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
