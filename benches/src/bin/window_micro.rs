//! Windowed-aggregation micro-benchmark: 10,000 keys, 1 s tumbling windows, count and
//! sum per key, event time with up to 500 ms of disorder, 100k events per second of
//! event time, fed from memory the way a Kafka source feeds a dataflow (batches
//! grouped by event time, watermark = largest event time seen − 500 ms). In the same
//! run, process 0 runs a hand-written single-threaded
//! `HashMap<(window, key), (count, sum)>` loop over the same events, twice: with std's
//! default hasher (the loop as the specification names it) and with FxHash (the
//! hasher Freshet's operators use, a stricter reference), and prints the rates and
//! ratios.
//!
//! `--rolling-ms R` runs a rolling (OVER) window instead, on arrival: for every event,
//! the count and sum of its key's events in the `R` ms up to it (one result per event;
//! no reference loop).
//!
//! `--checkpoint-dir DIR --checkpoint-epochs K` checkpoints the window state into DIR
//! every K epochs (the operator's part of the checkpoint protocol: epoch alignment,
//! serialization, a durable write): compare with the same run without it.
//!
//! ```text
//! cargo run --release -p freshet-benches --bin window-micro -- -w 1 --seconds 30
//! cargo run --release -p freshet-benches --bin window-micro -- -w 2 --seconds 30
//! printf '127.0.0.1:2101\n127.0.0.1:2102\n' > hosts
//! window-micro -n 2 -p 0 -h hosts & window-micro -n 2 -p 1 -h hosts
//! ```

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use freshet::operators::aggregate::Aggregator;
use freshet::operators::event_frontier;
use freshet::operators::unconnected::Watch;
use freshet::operators::{Rolling, RollingMode};
use freshet::Tumble;
use freshet_benches::checkpoints::{self, TimedDir};
use freshet_benches::cluster::{wait_step, ClusterArgs, Label};
use freshet_benches::input::Feeder;
use freshet_benches::report::Line;
use freshet_benches::windowed::{hashmap_loop, Hasher, KeyedEvent, Split, Workload};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Inspect, Probe};

/// `(count, sum)` of the values: the fold below, with a merge for pre-aggregation.
struct CountSum;

impl Aggregator<KeyedEvent> for CountSum {
    type Acc = (u64, u64);
    type Out = (u64, u64);
    fn create(&self) -> (u64, u64) {
        (0, 0)
    }
    #[inline]
    fn add(&self, acc: &mut (u64, u64), e: &KeyedEvent) {
        acc.0 += 1;
        acc.1 += e.value;
    }
    fn merge(&self, acc: &mut (u64, u64), other: (u64, u64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
    fn finish(&self, acc: &(u64, u64)) -> (u64, u64) {
        *acc
    }
}

#[derive(Parser, Debug)]
#[command(name = "window-micro", disable_help_flag = true)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Number of keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Events per second of event time.
    #[arg(long, default_value_t = 100_000)]
    per_second: u64,
    /// Seconds of event time.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Largest disorder of event times, ms (also the watermark's out-of-orderness).
    #[arg(long, default_value_t = 500)]
    disorder_ms: u64,
    /// Window size, ms.
    #[arg(long, default_value_t = 1000)]
    window_ms: u64,
    /// Records per input round: a source's poll batch (default: the Kafka source's
    /// `SourceConfig::batch_size`, what it reads per activation when data is waiting).
    #[arg(long, default_value_t = freshet::SourceConfig::default().batch_size)]
    round: usize,
    /// Round timestamps down to this many ms (the source's `tick_ms`; 1 = exact).
    #[arg(long, default_value_t = 1)]
    tick_ms: u64,
    /// How events are spread over the workers' partitions.
    #[arg(long, value_enum, default_value = "round-robin")]
    split: Split,
    /// Skip the HashMap reference loop.
    #[arg(long)]
    no_reference: bool,
    /// Use `tumble_fold` (every record exchanged by key) instead of
    /// `tumble_preaggregate` (partial accumulators exchanged).
    #[arg(long)]
    no_preagg: bool,
    /// A rolling window of this many ms (on arrival, one result per event) instead of
    /// tumbling windows.
    #[arg(long, value_name = "R")]
    rolling_ms: Option<u64>,
    /// Checkpoint the window state into this directory (a fresh subdirectory per run)
    /// every `--checkpoint-epochs` epochs; without it, state stays in memory.
    #[arg(long, value_name = "DIR")]
    checkpoint_dir: Option<std::path::PathBuf>,
    /// With `--checkpoint-dir`: a checkpoint every this many epochs (an epoch is 200
    /// input rounds).
    #[arg(long, default_value_t = 1)]
    checkpoint_epochs: u64,
    /// Build the dataflow under `freshet::operators::unconnected::Watch`, as
    /// `freshet::run` does (its logger stays in the channels built meanwhile): compare
    /// with the same run without it.
    #[arg(long)]
    watch_unconnected: bool,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let w = Workload {
        keys: args.keys,
        per_second: args.per_second,
        seconds: args.seconds,
        disorder_ms: args.disorder_ms,
        start_ms: 1_700_000_000_000,
        seed: 7,
    };
    let peers = args.cluster.peers();
    let counted = Arc::new(AtomicU64::new(0));
    let windows = Arc::new(AtomicU64::new(0));
    let late = Arc::new(AtomicU64::new(0));
    let (c2, w2, l2) = (counted.clone(), windows.clone(), late.clone());
    let (window_ms, ooo, round, tick) =
        (args.window_ms, args.disorder_ms, args.round, args.tick_ms);
    let preagg = !args.no_preagg;
    let rolling = args.rolling_ms;
    let multi_process = args.cluster.processes > 1;
    let split = args.split;
    let store = match &args.checkpoint_dir {
        Some(dir) => Some(TimedDir::fresh(dir, "window-micro")?),
        None => None,
    };
    let every = args.checkpoint_epochs;
    let watched = args.watch_unconnected;
    let failed = Arc::new(AtomicU64::new(0));
    let (store2, failed2) = (store.clone(), failed.clone());
    let guards = timely::execute(args.cluster.timely_config()?, move |worker| {
        let index = worker.index();
        let ctx = store2
            .as_ref()
            .map(|s| checkpoints::context(s.clone(), every, index, peers, None, failed2.clone()));
        let installed = ctx.as_ref().map(|c| c.install());
        let events: Vec<KeyedEvent> = w.share(index, peers, split);
        let my_count = Rc::new(Cell::new((0u64, 0u64)));
        let mc = my_count.clone();
        let (mut feeder, probe) = worker.dataflow::<freshet::Time, _, _>(|scope| {
            let watch = watched.then(|| Watch::start(scope.worker()));
            let (feeder, stream) = Feeder::<KeyedEvent>::new(&scope, ooo, 200);
            let feeder = feeder.tick(tick);
            let results = if let Some(range) = rolling {
                // One result per event, counted as a window of one.
                stream
                    .rolling_aggregate(
                        "count-sum",
                        range,
                        RollingMode::OnArrival,
                        |e: &KeyedEvent| e.key,
                        CountSum,
                    )
                    .map(|_| 1)
            } else if preagg {
                stream
                    .tumble_preaggregate("count-sum", window_ms, |e: &KeyedEvent| e.key, CountSum)
                    .map(|r| r.value.0)
            } else {
                stream
                    .tumble_fold(
                        "count-sum",
                        window_ms,
                        |e: &KeyedEvent| e.key,
                        |acc: &mut (u64, u64), e: &KeyedEvent| {
                            acc.0 += 1;
                            acc.1 += e.value;
                        },
                    )
                    .map(|r| r.value.0)
            };
            let (probe, _) = results
                .inspect(move |counted| {
                    let (n, c) = mc.get();
                    mc.set((n + 1, c + counted));
                })
                .probe();
            if let Some(watch) = watch {
                watch.finish(scope.worker());
            }
            (feeder, probe)
        });
        drop(installed);
        let start = Instant::now();
        for chunk in events.chunks(round) {
            feeder.round(chunk.iter().map(|e| (e.ts, *e)));
            worker.step();
            // Bounded in-flight state: stay within a few windows of the output.
            let wm = feeder.time().map_or(0, |t| t.event);
            while probe.with_frontier(|f| event_frontier(&f)) + 3 * window_ms < wm {
                wait_step(worker, multi_process);
            }
        }
        feeder.close();
        while !probe.done() {
            wait_step(worker, multi_process);
        }
        let elapsed = start.elapsed();
        let (n, c) = my_count.get();
        w2.fetch_add(n, Ordering::Relaxed);
        c2.fetch_add(c, Ordering::Relaxed);
        l2.fetch_add(feeder.late, Ordering::Relaxed);
        (events.len() as u64, elapsed)
    })
    .map_err(|e| anyhow::anyhow!(e))?;
    let mut local_events = 0;
    let mut slowest = std::time::Duration::ZERO;
    for r in guards.join() {
        let (n, e) = r.map_err(|e| anyhow::anyhow!(e))?;
        local_events += n;
        slowest = slowest.max(e);
    }
    // Before the reference loop allocates its copy of the events.
    let dataflow_rss = freshet_benches::report::peak_rss_kib();
    let total = w.events();
    let secs = slowest.as_secs_f64();
    let rate = total as f64 / secs;
    let mut line = Line::new("window-micro")
        .field("config", args.cluster.label())
        .field("tick_ms", args.tick_ms)
        .field("preagg", preagg)
        .field("rolling_ms", rolling.unwrap_or(0))
        .field("event_time_s", args.seconds)
        .field("watch_unconnected", watched)
        .field("round", args.round)
        .field("split", format!("{:?}", args.split))
        .field("process", args.cluster.process)
        .field("events", total)
        .field("local_events", local_events)
        .field("secs", format!("{secs:.3}"))
        .rate("events_per_s", rate)
        .rate("per_worker_per_s", rate / peers as f64)
        .field("windows_out", windows.load(Ordering::Relaxed))
        .field("counted", counted.load(Ordering::Relaxed))
        .field("late", late.load(Ordering::Relaxed))
        .field(
            "dataflow_peak_rss_mib",
            format!("{:.1}", dataflow_rss as f64 / 1024.0),
        );
    if let Some(store) = &store {
        line = checkpoints::report(line, store, every, &failed)?;
        store.remove();
    }
    if args.cluster.processes == 1 {
        anyhow::ensure!(
            counted.load(Ordering::Relaxed) == total,
            "window counts do not add up to the events"
        );
    }
    if args.cluster.process == 0 && !args.no_reference && rolling.is_none() {
        let all = w.share(0, 1, Split::RoundRobin);
        for (hasher, label) in [(Hasher::Std, "std"), (Hasher::Fx, "fx")] {
            let mut n_windows = 0u64;
            let mut n_counted = 0u64;
            let t = Instant::now();
            hashmap_loop(hasher, &all, window_ms, ooo, round, |_, _, (c, _)| {
                n_windows += 1;
                n_counted += c;
            });
            let ref_rate = total as f64 / t.elapsed().as_secs_f64();
            if args.cluster.processes == 1 {
                anyhow::ensure!(n_counted == total, "reference lost events");
                anyhow::ensure!(
                    n_windows == windows.load(Ordering::Relaxed),
                    "dataflow and reference disagree on the number of windows"
                );
            }
            line = line
                .rate(&format!("{label}_hashmap_events_per_s"), ref_rate)
                .field(
                    &format!("ratio_vs_{label}_hashmap"),
                    format!("{:.3}", rate / ref_rate),
                );
        }
    }
    line.print();
    Ok(())
}
