//! Stream–table lookups: against a sequential reference at 1 and 4 workers, and the
//! capabilities they hold.

mod common;

use std::sync::{Arc, Mutex};

use common::{collect, rounds, run_windowed, steps, Rec, Round, Source};
use freshet_operators::{JoinKind, Lookup, Time};
use proptest::prelude::*;
use timely::dataflow::operators::vec::{Filter, Map};
use timely::dataflow::operators::Probe;

/// Stream records have an even value; table upserts `(key, value)` an odd one.
fn reference(rounds: &[Round<Rec>], kind: JoinKind) -> Vec<(Rec, Option<u64>)> {
    let all: Vec<(u64, Rec)> = rounds
        .iter()
        .enumerate()
        .flat_map(|(epoch, r)| r.records.iter().map(move |(_, d)| (epoch as u64, *d)))
        .collect();
    let mut out = Vec::new();
    for (_, s) in all.iter().filter(|(_, r)| r.1 & 1 == 0) {
        let value = all
            .iter()
            .filter(|(_, t)| t.1 & 1 == 1 && t.0 == s.0 && t.2 <= s.2)
            .max_by_key(|(epoch, t)| (t.2, *epoch, t.1))
            .map(|(_, t)| t.1);
        if value.is_some() || kind == JoinKind::Left {
            out.push((*s, value));
        }
    }
    out.sort();
    out
}

/// Like `reference`, with tombstones: a table record whose value is a multiple of 5
/// deletes its key. The winning table record for a stream record is the one of
/// greatest (event time, epoch, value), a tombstone below any value; a tombstone
/// gives no value.
fn reference_with_tombstones(rounds: &[Round<Rec>], kind: JoinKind) -> Vec<(Rec, Option<u64>)> {
    let all: Vec<(u64, Rec)> = rounds
        .iter()
        .enumerate()
        .flat_map(|(epoch, r)| r.records.iter().map(move |(_, d)| (epoch as u64, *d)))
        .collect();
    let row = |v: u64| (!v.is_multiple_of(5)).then_some(v);
    let mut out = Vec::new();
    for (_, s) in all.iter().filter(|(_, r)| r.1 & 1 == 0) {
        let value = all
            .iter()
            .filter(|(_, t)| t.1 & 1 == 1 && t.0 == s.0 && t.2 <= s.2)
            .max_by_key(|(epoch, t)| (t.2, *epoch, row(t.1)))
            .and_then(|(_, t)| row(t.1));
        if value.is_some() || kind == JoinKind::Left {
            out.push((*s, value));
        }
    }
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Tombstones (`lookup_upserts_with`): a key deleted at `t` has no value for stream
    /// records at or after `t` until its next upsert.
    #[test]
    fn lookup_with_tombstones_matches_reference(rounds in rounds(8), left in any::<bool>()) {
        let kind = if left { JoinKind::Left } else { JoinKind::Inner };
        let want = reference_with_tombstones(&rounds, kind);
        let deletes = rounds.iter().flat_map(|r| &r.records).any(|(_, r)| r.1 & 1 == 1 && r.1.is_multiple_of(5));
        for workers in [1, 4] {
            let got = run_windowed(workers, &rounds, move |main, _late| {
                let table = main
                    .clone()
                    .filter(|r: &Rec| r.1 & 1 == 1)
                    .map(|r| (r.0, (!r.1.is_multiple_of(5)).then_some(r.1)));
                main.filter(|r: &Rec| r.1 & 1 == 0).lookup_upserts_with(
                    table,
                    "l",
                    kind,
                    |r: &Rec| r.0,
                    |r, v| (r, v.copied()),
                )
            });
            prop_assert_eq!(&got, &want, "at {} workers (tombstones: {})", workers, deletes);
        }
    }

    #[test]
    fn lookup_matches_reference(rounds in rounds(8), left in any::<bool>()) {
        let kind = if left { JoinKind::Left } else { JoinKind::Inner };
        let want = reference(&rounds, kind);
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
        let table = main
            .clone()
            .filter(|r: &Rec| r.1 & 1 == 1)
            .map(|r| (r.0, (!r.1.is_multiple_of(5)).then_some(r.1)));
        main.filter(|r: &Rec| r.1 & 1 == 0).lookup_upserts_with(
            table,
            "l",
            JoinKind::Left,
            |r: &Rec| r.0,
            |r, v| (r.2, v.copied()),
        )
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
