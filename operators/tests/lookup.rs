//! Stream–table lookups: against a sequential reference at 1 and 4 workers, and the
//! capabilities they hold.

mod common;

use std::sync::{Arc, Mutex};

use common::{
    collect, lookup_reference, lookup_with_tombstones, rounds, run_windowed, steps, Rec, Round,
    Source,
};
use freshet_operators::{JoinKind, Lookup, Time};
use proptest::prelude::*;
use timely::dataflow::operators::vec::{Filter, Map};
use timely::dataflow::operators::Probe;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Tombstones (`lookup_upserts_with`): a key deleted at `t` has no value for stream
    /// records at or after `t` until its next upsert.
    #[test]
    fn lookup_with_tombstones_matches_reference(rounds in rounds(8), left in any::<bool>()) {
        let kind = if left { JoinKind::Left } else { JoinKind::Inner };
        let want = lookup_reference(&rounds, kind, true);
        let deletes = rounds.iter().flat_map(|r| &r.records).any(|(_, r)| r.1 & 1 == 1 && r.1.is_multiple_of(5));
        for workers in [1, 4] {
            let got = run_windowed(workers, &rounds, move |main, _late| {
                lookup_with_tombstones(main, kind)
            });
            prop_assert_eq!(&got, &want, "at {} workers (tombstones: {})", workers, deletes);
        }
    }

    #[test]
    fn lookup_matches_reference(rounds in rounds(8), left in any::<bool>()) {
        let kind = if left { JoinKind::Left } else { JoinKind::Inner };
        let want = lookup_reference(&rounds, kind, false);
        for workers in [1, 4] {
            let got = run_windowed(workers, &rounds, move |main, _late| {
                let table = main.clone().filter(|r: &Rec| r.1 & 1 == 1).map(|r| (r.0, r.1));
                main.filter(|r: &Rec| r.1 & 1 == 0)
                    .lookup_with(table, "l", kind, |r: &Rec| r.0, |r, v| (r, v.copied()))
            });
            prop_assert_eq!(&got, &want, "at {} workers", workers);
        }
    }
}

#[test]
fn lookup_holds_what_it_owes() {
    timely::execute(timely::Config::thread(), |worker| {
        let out = Arc::new(Mutex::new(Vec::new()));
        let (mut stream, mut table, probe) = worker.dataflow::<Time, _, _>(|scope| {
            let (stream, s) = Source::<Rec>::new(&scope);
            let (table, t) = Source::<(u8, u64)>::new(&scope);
            let (probe, joined) = s.lookup_left(t, "owe", |r: &Rec| r.0).probe();
            collect(joined, &out);
            (stream, table, probe)
        });
        let complete = |epoch: u64| probe.with_frontier(|f| f.iter().all(|t| t.epoch > epoch));
        table.send(Time::new(1, 0), (1, 100));
        stream.send(Time::new(5, 0), (1, 0, 5));
        stream.advance(Time::new(10, 1));
        table.advance(Time::new(5, 1));
        steps(worker);
        assert!(!complete(0), "an upsert at 5 could still come");
        assert!(out.lock().unwrap().is_empty());
        table.advance(Time::new(6, 1));
        steps(worker);
        assert!(complete(0));
        assert_eq!(out.lock().unwrap().clone(), vec![((1, 0, 5), Some(100))]);
        stream.close();
        table.close();
    })
    .unwrap();
}

/// A key written, then deleted, then written again: stream records see the value, then
/// none, then the new value; a value and a tombstone at one time: the value wins.
#[test]
fn a_tombstone_deletes_the_key_until_the_next_upsert() {
    let rounds = vec![Round {
        watermark: 0,
        records: vec![
            (1, (1, 11, 1)), // upsert 11 at 1
            (5, (1, 5, 5)),  // tombstone at 5
            (9, (1, 13, 9)), // upsert 13 at 9
            (3, (1, 0, 3)),
            (5, (1, 2, 5)),
            (7, (1, 4, 7)),
            (9, (1, 6, 9)),
            (11, (1, 17, 11)), // upsert 17 and tombstone at 11: the value wins
            (11, (1, 15, 11)),
            (11, (1, 8, 11)),
        ],
        late: vec![],
    }];
    let got = run_windowed(1, &rounds, |main, _late| {
        lookup_with_tombstones(main, JoinKind::Left).map(|(r, v)| (r.2, v))
    });
    assert_eq!(
        got,
        vec![
            (3, Some(11)),
            (5, None),
            (7, None),
            (9, Some(13)),
            (11, Some(17))
        ]
    );
}

/// A lookup publishes how many stream records wait for its table (what a Freshet job's
/// sources pause on): exactly the records whose event time the table's watermark has
/// not passed, at 1 and 2 workers; none once it has, each emitted once with the
/// table's value as of its time.
#[test]
fn a_lookup_publishes_the_records_waiting_for_its_table() {
    use freshet_operators::backlog::Backlogs;
    for workers in [1usize, 2] {
        let backlogs = Backlogs::new();
        let out = Arc::new(Mutex::new(Vec::new()));
        let (b, o) = (backlogs.clone(), out.clone());
        let barrier = Arc::new(std::sync::Barrier::new(workers));
        timely::execute(timely::Config::process(workers), move |worker| {
            let (index, peers) = (worker.index(), worker.peers());
            let installed = b.install();
            let (mut stream, mut table, probe) = worker.dataflow::<Time, _, _>(|scope| {
                let (stream, s) = Source::<Rec>::new(&scope);
                let (table, t) = Source::<(u8, u64)>::new(&scope);
                let looked = s.lookup_left(t, "prices", |r: &Rec| r.0);
                collect(looked.clone(), &o);
                let (probe, _) = looked.probe();
                (stream, table, probe)
            });
            drop(installed);
            // Key 1 costs 7 from event time 10 (every worker's table input knows it).
            if index == 0 {
                table.send(Time::new(10, 0), (1, 7));
            }
            table.advance(Time::new(50, 0));
            // Ten records per worker at event times 100..110, beyond the table.
            for i in 0..10u64 {
                stream.send(
                    Time::new(100 + i, 0),
                    ((i % 3) as u8, index as u64, 100 + i),
                );
            }
            stream.advance(Time::new(200, 1));
            let all = 10 * peers;
            let mut steps = 0;
            while b.waiting() < all {
                worker.step();
                steps += 1;
                assert!(steps < 100_000, "{} of {all} records waiting", b.waiting());
            }
            assert_eq!(b.waiting(), all, "no more than were sent wait");
            // Every worker has seen them all wait before any lets the table move.
            barrier.wait();
            // The table's watermark passes them all: none waits any more.
            table.advance(Time::new(300, 1));
            stream.close();
            table.close();
            while probe.less_than(&Time::new(200, 1)) {
                worker.step();
            }
            assert_eq!(b.waiting(), 0, "records wait after the table passed them");
        })
        .expect("timely ran");
        let mut got = out.lock().unwrap().clone();
        got.sort();
        let mut want: Vec<(Rec, Option<u64>)> = (0..workers as u64)
            .flat_map(|w| (0..10u64).map(move |i| ((i % 3) as u8, w, 100 + i)))
            .map(|r| (r, (r.0 == 1).then_some(7)))
            .collect();
        want.sort();
        assert_eq!(got, want, "at {workers} workers");
    }
}
