//! Latency at a fixed open-loop rate (default 100k events/s for 20 s, 10,000 keys,
//! 1 s tumbling count + sum, 50 ms of disorder and out-of-orderness), in memory,
//! recorded with hdrhistogram:
//!
//! * **ingest → delivered**: from the moment an event was due (open loop: its
//!   scheduled send time, so a stalled worker cannot hide its own delay) to when it
//!   comes out of a keyed exchange at the end of the dataflow;
//! * **window close → delivered**: from the moment this process's inputs moved their
//!   watermark past a window's end (the frontier passing it) to when each of the
//!   window's results comes out of the tumbling window.
//!
//! "Delivered" is an in-memory sink at the end of the dataflow (no Kafka produce).
//!
//! Each worker takes the events that came due every `--poll-us` (500 µs), as a source
//! polls, and parks between polls while the dataflow is idle: a worker spinning on an
//! empty dataflow starved timely's network threads of the 2 cores when running as 2
//! processes (window close → delivered p99 of 6–14 ms instead of 1–5 ms). The wait for
//! the poll counts in ingest → delivered.
//!
//! ```text
//! cargo run --release -p freshet-benches --bin latency -- --rate 100000 --seconds 20 -w 1
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use freshet::Tumble;
use freshet_benches::cluster::{ClusterArgs, Label};
use freshet_benches::input::Feeder;
use freshet_benches::report::Line;
use freshet_benches::windowed::mix;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Inspect, Probe};

#[derive(Parser, Debug)]
#[command(name = "latency", disable_help_flag = true)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Events per second, all workers together.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Seconds to run.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Disorder of event times and the watermark's out-of-orderness, ms.
    #[arg(long, default_value_t = 50)]
    disorder_ms: u64,
    /// Window size, ms.
    #[arg(long, default_value_t = 1000)]
    window_ms: u64,
    /// How often each worker takes the events that came due, µs (a source's poll
    /// interval). Between polls the worker parks unless the dataflow has work, leaving
    /// the cores to timely's network threads; 0 spins.
    #[arg(long, default_value_t = 500)]
    poll_us: u64,
    /// Results of windows ending in the first this many seconds are not recorded.
    #[arg(long, default_value_t = 2)]
    warmup_s: u64,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Ev {
    key: u64,
    value: u64,
    ts: u64,
    /// When it was due, ns since the Unix epoch.
    due_ns: u64,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let peers = args.cluster.peers() as u64;
    let ingest = Arc::new(Mutex::new(hist()));
    let close = Arc::new(Mutex::new(hist()));
    let closed_at: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let (ing2, close2) = (ingest.clone(), close.clone());
    let (rate, seconds, keys, ooo, window_ms) = (
        args.rate,
        args.seconds,
        args.keys,
        args.disorder_ms,
        args.window_ms,
    );
    let poll = Duration::from_micros(args.poll_us);
    // Every process starts its schedule at the same wall-clock second.
    let t0_ns = (now_ns() / 1_000_000_000 + 2) * 1_000_000_000;
    let warm_until_ms = t0_ns / 1_000_000 + args.warmup_s * 1000;
    let guards = timely::execute(args.cluster.timely_config()?, move |worker| {
        let index = worker.index() as u64;
        let my_ingest = Rc::new(RefCell::new(hist()));
        let my_close = Rc::new(RefCell::new(hist()));
        let (mi, mc) = (my_ingest.clone(), my_close.clone());
        let closed_read = closed_at.clone();
        let (mut feeder, probe) = worker.dataflow::<freshet::Time, _, _>(|scope| {
            let (feeder, stream) = Feeder::<Ev>::new(&scope, ooo, 1);
            let (probe, _) = stream
                .clone()
                .unary::<timely::container::CapacityContainerBuilder<Vec<usize>>, _, _, _>(
                    Exchange::new(|e: &Ev| e.key),
                    "deliver",
                    |_, _| {
                        move |input, output| {
                            input.for_each(|cap, data| {
                                let now = now_ns();
                                let mut h = mi.borrow_mut();
                                for e in data.iter() {
                                    let _ = h.record(now.saturating_sub(e.due_ns).max(1));
                                }
                                output.session(&cap).give(data.len());
                            });
                        }
                    },
                )
                .probe();
            stream
                .tumble_fold(
                    "count-sum",
                    window_ms,
                    |e: &Ev| e.key,
                    |acc: &mut (u64, u64), e: &Ev| {
                        acc.0 += 1;
                        acc.1 += e.value;
                    },
                )
                .inspect(move |w| {
                    let now = now_ns();
                    if w.end <= warm_until_ms {
                        return;
                    }
                    if let Some(&c) = closed_read.lock().unwrap().get(&w.end) {
                        let _ = mc.borrow_mut().record(now.saturating_sub(c).max(1));
                    }
                })
                .probe_with(&probe);
            (feeder, probe)
        });
        while now_ns() < t0_ns {
            std::thread::sleep(Duration::from_millis(1));
        }
        let total = rate * seconds;
        let period_ns = 1_000_000_000 / rate;
        let mut next = index; // next global event index this worker sends
        let mut last_wm = 0u64;
        let mut batch = Vec::new();
        loop {
            let now = now_ns();
            while next < total && t0_ns + next * period_ns <= now {
                let due = t0_ns + next * period_ns;
                let h = mix(next);
                let ts = (due / 1_000_000).saturating_sub(h % (ooo + 1));
                batch.push((
                    ts,
                    Ev {
                        key: (h >> 16) % keys,
                        value: (h >> 40) & 0xff,
                        ts,
                        due_ns: due,
                    },
                ));
                next += peers;
            }
            if next >= total {
                break;
            }
            if !batch.is_empty() {
                feeder.round(batch.drain(..));
            }
            // The watermark follows the wall clock, as a live source's does.
            feeder.advance_to((now / 1_000_000).saturating_sub(ooo));
            let wm = feeder.time().map_or(0, |t| t.event);
            if last_wm > 0 && wm / window_ms > last_wm / window_ms {
                let stamp = now_ns();
                let mut map = closed_at.lock().unwrap();
                let mut end = (last_wm / window_ms + 1) * window_ms;
                while end <= wm {
                    let e = map.entry(end).or_insert(stamp);
                    *e = (*e).max(stamp);
                    end += window_ms;
                }
            }
            last_wm = wm;
            // Work until the next poll is due, parking while the dataflow is idle.
            let poll_at = now + poll.as_nanos() as u64;
            loop {
                let now = now_ns();
                if now >= poll_at {
                    break;
                }
                worker.step_or_park(Some(Duration::from_nanos(poll_at - now)));
            }
            if poll.is_zero() {
                worker.step();
            }
        }
        feeder.close();
        while !probe.done() {
            worker.step();
        }
        ing2.lock()
            .unwrap()
            .add(&*my_ingest.borrow())
            .expect("merge");
        close2
            .lock()
            .unwrap()
            .add(&*my_close.borrow())
            .expect("merge");
    })
    .map_err(|e| anyhow::anyhow!(e))?;
    for r in guards.join() {
        r.map_err(|e| anyhow::anyhow!(e))?;
    }
    let ms = |h: &Histogram<u64>, q: f64| format!("{:.3}", h.value_at_quantile(q) as f64 / 1e6);
    for (name, h) in [
        ("ingest_to_delivered", ingest.lock().unwrap()),
        ("window_close_to_delivered", close.lock().unwrap()),
    ] {
        Line::new("latency")
            .field("config", args.cluster.label())
            .field("process", args.cluster.process)
            .field("path", name)
            .field("rate", args.rate)
            .field("samples", h.len())
            .field("p50_ms", ms(&h, 0.5))
            .field("p99_ms", ms(&h, 0.99))
            .field("p999_ms", ms(&h, 0.999))
            .field("max_ms", format!("{:.3}", h.max() as f64 / 1e6))
            .print();
    }
    Ok(())
}
