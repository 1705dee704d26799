//! Every Nexmark query against its sequential reference on a small generated run
//! (with event-time disorder), at 1 and 2 workers.

use std::sync::{Arc, Mutex};

use freshet::time::Time;
use freshet_benches::input::Feeder;
use freshet_benches::nexmark::queries::{self, Events};
use freshet_benches::nexmark::{reference, Event, NexmarkConfig};
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::StreamVec;

const EVENTS: u64 = 20_000;
const DISORDER: u64 = 200;

fn config() -> NexmarkConfig {
    NexmarkConfig {
        seed: 3,
        rate: 1000,
        start_ms: 1_700_000_000_000,
        disorder_ms: DISORDER,
        auction_ms: 10_000,
    }
}

fn all_events() -> Vec<Event> {
    let c = config();
    (0..EVENTS).map(|n| c.event(n)).collect()
}

/// Runs `query` over the generated events at `workers` workers; returns its output.
fn run<R, F>(workers: usize, query: F) -> Vec<R>
where
    R: Clone + Send + 'static,
    F: for<'s> Fn(Events<'s>) -> StreamVec<'s, Time, R> + Send + Sync + 'static,
{
    let out = Arc::new(Mutex::new(Vec::new()));
    let o = out.clone();
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let o = o.clone();
        let (mut feeder, probe) = worker.dataflow::<Time, _, _>(|scope| {
            let (feeder, events) = Feeder::<Event>::new(&scope, DISORDER, 3);
            let (probe, _) = query(events)
                .inspect(move |r| o.lock().unwrap().push(r.clone()))
                .probe();
            (feeder, probe)
        });
        let mine: Vec<Event> = config().share(0..EVENTS, index, peers).collect();
        for chunk in mine.chunks(97) {
            feeder.round(chunk.iter().map(|e| (e.time(), e.clone())));
            worker.step();
        }
        assert_eq!(
            feeder.late, 0,
            "the disorder is within the out-of-orderness"
        );
        feeder.close();
        while !probe.done() {
            worker.step();
        }
    })
    .unwrap()
    .join()
    .into_iter()
    .for_each(|r| r.unwrap());
    let v = out.lock().unwrap().clone();
    v
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[test]
fn q0_passes_every_event() {
    for w in [1, 2] {
        assert_eq!(sorted(run(w, queries::q0)), sorted(all_events()));
    }
}

#[test]
fn q1_converts_prices() {
    let want = reference::q1(&all_events());
    assert!(!want.is_empty());
    for w in [1, 2] {
        assert_eq!(sorted(run(w, queries::q1)), want);
    }
}

#[test]
fn q2_filters_auctions() {
    let want = reference::q2(&all_events(), 7);
    assert!(!want.is_empty());
    for w in [1, 2] {
        assert_eq!(sorted(run(w, |e| queries::q2(e, 7))), want);
    }
}

#[test]
fn q3_joins_sellers_and_auctions() {
    let want = reference::q3(&all_events());
    assert!(want.len() > 10, "{}", want.len());
    for w in [1, 2] {
        assert_eq!(sorted(run(w, |e| queries::q3(e, 1 << 40))), want);
    }
}

#[test]
fn q4_average_winning_bid_per_category() {
    let want = reference::q4(&all_events(), 2000);
    assert!(want.len() > 10);
    for w in [1, 2] {
        let got = run(w, |e| queries::q4(e, 2000));
        let got: std::collections::BTreeMap<_, _> = got
            .into_iter()
            .map(|r| ((r.start, r.key), (r.value.sum, r.value.count)))
            .collect();
        assert_eq!(got, want);
    }
}

#[test]
fn q5_hottest_auction_per_sliding_window() {
    let want = reference::q5(&all_events(), 4000, 1000);
    assert!(want.len() > 10);
    for w in [1, 2] {
        assert_eq!(sorted(run(w, |e| queries::q5(e, 4000, 1000))), want);
    }
}

#[test]
fn q7_highest_bid_per_window() {
    let want = reference::q7(&all_events(), 1000);
    assert_eq!(want.len(), 20);
    for w in [1, 2] {
        assert_eq!(sorted(run(w, |e| queries::q7(e, 1000))), want);
    }
}

#[test]
fn q8_new_sellers() {
    let want = reference::q8(&all_events(), 2000);
    assert!(want.len() > 10, "{}", want.len());
    for w in [1, 2] {
        assert_eq!(sorted(run(w, |e| queries::q8(e, 2000))), want);
    }
}
