//! Aggregators: each through a tumbling window against a sequential reference at 1 and
//! 4 workers, and merge agreeing with add.

mod common;

use std::collections::BTreeMap;

use common::{rounds, run_windowed, Rec, Round};
use freshet_operators::aggregate::{
    Aggregator, Collect, Count, Max, Mean, MeanValue, Min, Sum, TopK,
};
use freshet_operators::Tumble;
use proptest::prelude::*;
use timely::dataflow::operators::vec::Map;

/// Each key's records per tumbling window.
fn groups(rounds: &[Round<Rec>], size: u64) -> BTreeMap<(u8, u64), Vec<Rec>> {
    let mut groups: BTreeMap<(u8, u64), Vec<Rec>> = BTreeMap::new();
    for round in rounds {
        for (t, r) in &round.records {
            groups.entry((r.0, t / size * size)).or_default().push(*r);
        }
    }
    groups
}

/// Runs `agg` (built on each worker by `make`) in a tumbling window and compares with
/// `model` applied to each group.
fn check<G, O>(
    rounds: &[Round<Rec>],
    size: u64,
    make: impl Fn() -> G + Send + Sync + 'static,
    model: impl Fn(&[Rec]) -> O,
) where
    G: Aggregator<Rec, Out = O>,
    O: 'static,
    O: timely::ExchangeData + Clone + Ord + std::fmt::Debug,
{
    let mut want: Vec<(u8, u64, O)> = groups(rounds, size)
        .into_iter()
        .map(|((k, s), rs)| (k, s, model(&rs)))
        .collect();
    want.sort();
    let make = std::sync::Arc::new(make);
    for workers in [1, 4] {
        let make = make.clone();
        let got = run_windowed(workers, rounds, move |main, _late| {
            main.tumble_aggregate("agg", size, |r: &Rec| r.0, make())
                .map(|w| (w.key, w.start, w.value))
        });
        assert_eq!(got, want, "at {workers} workers");
    }
}

fn top3(rs: &[Rec]) -> Vec<Rec> {
    let mut v = rs.to_vec();
    v.sort_by(|a, b| (b.1, b).cmp(&(a.1, a)));
    v.truncate(3);
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn aggregators_match_reference(rounds in rounds(6), size in 1u64..30) {
        check(&rounds, size, || Count, |rs| rs.len() as u64);
        check(&rounds, size, || Sum::new(|r: &Rec| r.1), |rs| rs.iter().map(|r| r.1).sum::<u64>());
        check(&rounds, size, || Min::new(|r: &Rec| r.1), |rs| rs.iter().map(|r| r.1).min());
        check(&rounds, size, || Max::new(|r: &Rec| r.1), |rs| rs.iter().map(|r| r.1).max());
        check(&rounds, size, || Mean::new(|r: &Rec| r.1), |rs| MeanValue {
            sum: rs.iter().map(|r| r.1 as i128).sum(),
            count: rs.len() as u64,
        });
        check(&rounds, size, || TopK::new(3, |r: &Rec| r.1), top3);
        // Whole-window: the median value (sorted inside, so arrival order is moot).
        check(
            &rounds,
            size,
            || Collect::new(|rs: &[Rec]| {
                let mut v: Vec<u64> = rs.iter().map(|r| r.1).collect();
                v.sort();
                v[v.len() / 2]
            }),
            |rs| {
                let mut v: Vec<u64> = rs.iter().map(|r| r.1).collect();
                v.sort();
                v[v.len() / 2]
            },
        );
    }

    #[test]
    fn merge_agrees_with_add(records in prop::collection::vec((0u8..4, 0u64..100, 0u64..50), 0..30), split in 0usize..30) {
        fn merged<G: Aggregator<Rec>>(g: &G, rs: &[Rec], split: usize) -> G::Out {
            let (a, b) = rs.split_at(split.min(rs.len()));
            let (mut x, mut y) = (g.create(), g.create());
            a.iter().for_each(|r| g.add(&mut x, r));
            b.iter().for_each(|r| g.add(&mut y, r));
            g.merge(&mut x, y);
            g.finish(&x)
        }
        fn added<G: Aggregator<Rec>>(g: &G, rs: &[Rec]) -> G::Out {
            let mut x = g.create();
            rs.iter().for_each(|r| g.add(&mut x, r));
            g.finish(&x)
        }
        prop_assert_eq!(merged(&Count, &records, split), added(&Count, &records));
        let sum = Sum::new(|r: &Rec| r.1);
        prop_assert_eq!(merged(&sum, &records, split), added(&sum, &records));
        let min = Min::new(|r: &Rec| r.1);
        prop_assert_eq!(merged(&min, &records, split), added(&min, &records));
        let max = Max::new(|r: &Rec| r.1);
        prop_assert_eq!(merged(&max, &records, split), added(&max, &records));
        let mean = Mean::new(|r: &Rec| r.1);
        prop_assert_eq!(merged(&mean, &records, split), added(&mean, &records));
        let top = TopK::new(3, |r: &Rec| r.1);
        prop_assert_eq!(merged(&top, &records, split), added(&top, &records));
    }
}
