//! Rough single-process throughput of the window operators.
//!
//! Feeds `records` keyed records (1000 keys, event time advancing 1 ms per 100
//! records, 1000 records per batch, a new epoch every 100 batches) through a tumbling
//! count, a sliding sum and a session count, and prints records per second for each.
//!
//! ```text
//! cargo run --release -p freshet-operators --example throughput -- 2000000 1
//! ```
//! Arguments: record count (default 2,000,000), then timely's own (`-w` workers, …).

use std::time::Instant;

use freshet_operators::aggregate::Sum;
use freshet_operators::{Session, Slide, Time, Tumble};
use timely::dataflow::operators::probe::Handle;
use timely::dataflow::operators::vec::UnorderedInput;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::StreamVec;

fn main() {
    let mut args = std::env::args().skip(1);
    let records: u64 = args
        .next()
        .map_or(2_000_000, |a| a.parse().expect("record count"));
    for which in ["tumble_count", "slide_sum", "session_count"] {
        let args = std::env::args().skip(2);
        timely::execute_from_args(args, move |worker| {
            let (index, peers) = (worker.index() as u64, worker.peers() as u64);
            let probe = Handle::new();
            let counted = std::rc::Rc::new(std::cell::Cell::new(0u64));
            let total = counted.clone();
            let (mut input, mut cap) = worker.dataflow::<Time, _, _>(|scope| {
                let (input, stream): (_, StreamVec<_, (u64, u64)>) = scope.new_unordered_input();
                let key = |r: &(u64, u64)| r.0;
                match which {
                    "tumble_count" => stream
                        .tumble_count("bench", 1000, key)
                        .inspect(move |w| counted.set(counted.get() + w.value))
                        .probe_with(&probe),
                    "slide_sum" => stream
                        .slide_aggregate("bench", 1000, 250, key, Sum::new(|r: &(u64, u64)| r.1))
                        .probe_with(&probe),
                    _ => stream.session_count("bench", 500, key).probe_with(&probe),
                };
                input
            });
            let start = Instant::now();
            let batch = 1000;
            let mut sent = 0;
            let mut round = 0u64;
            while sent < records {
                let event = sent / 100;
                let time = Time::new(event, round / 100);
                if cap.time() != &time {
                    cap.downgrade(&time);
                }
                {
                    let mut handle = input.activate();
                    let mut session = handle.session(&cap);
                    for n in (sent..sent + batch).filter(|n| n % peers == index) {
                        session.give(((n * 7919) % 1000, n));
                    }
                }
                sent += batch;
                round += 1;
                while probe.less_than(&Time::new(event.saturating_sub(2000), 0)) {
                    worker.step();
                }
                worker.step();
            }
            drop(cap);
            while !probe.done() {
                worker.step();
            }
            if index == 0 {
                let secs = start.elapsed().as_secs_f64();
                println!(
                    "{which:>14}: {records} records in {secs:.2}s = {:.2} M records/s ({peers} workers)",
                    records as f64 / secs / 1e6
                );
            }
            if which == "tumble_count" {
                println!("worker {index} counted {}", total.get());
            }
        })
        .expect("timely ran");
    }
}
