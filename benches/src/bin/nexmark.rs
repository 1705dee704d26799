//! Nexmark: the generator's own rate, the queries' in-memory throughput, and the
//! generator as a tuned Kafka producer.
//!
//! In memory, each worker generates its share of `--events` events before the clock
//! starts, then feeds them as a Kafka source would (batches grouped by event time,
//! watermark = largest event time seen − `--disorder-ms`), and each query runs to
//! completion in its own dataflow:
//!
//! ```text
//! cargo run --release -p freshet-benches --bin nexmark -- --queries q0,q1,q2,q3,q4,q5,q7,q8 --events 2000000 -w 2
//! ```
//!
//! `--checkpoint-dir DIR --checkpoint-epochs K` runs each query twice, back to back:
//! without checkpoints, then with its state checkpointed every K epochs (the other way
//! round with `--checkpointed-first`, to see what the order costs); the
//! `nexmark-checkpoint` line gives both rates and their ratio (`--warmup` runs each
//! query once, unmeasured, before them).
//!
//! As a Kafka producer (bincode payloads, event time as message timestamp, lz4,
//! linger, large batches), reporting msg/s:
//!
//! ```text
//! cargo run --release -p freshet-benches --bin nexmark -- --produce nexmark-events --partitions 4 --events 2000000
//! ```

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use freshet::operators::event_frontier;
use freshet_benches::checkpoints::{self, TimedDir};
use freshet_benches::cluster::{wait_step, ClusterArgs, Label};
use freshet_benches::input::Feeder;
use freshet_benches::kafka::{create_topic, produce_paced};
use freshet_benches::nexmark::queries::{self, Events};
use freshet_benches::nexmark::{Event, NexmarkConfig};
use freshet_benches::report::Line;
use timely::dataflow::operators::probe::Handle;
use timely::dataflow::operators::{Inspect, Probe};

#[derive(Parser, Debug)]
#[command(name = "nexmark", disable_help_flag = true)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Queries to run, comma separated (q0 q1 q2 q3 q4 q5 q7 q8).
    #[arg(long, value_delimiter = ',', default_value = "q0,q1,q2,q3,q4,q5,q7,q8")]
    queries: Vec<String>,
    /// Events.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Events per second of event time (event `n` is at `n / rate` s).
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Disorder of event times (and the watermark's out-of-orderness), ms.
    #[arg(long, default_value_t = 500)]
    disorder_ms: u64,
    /// Window size of Q4, Q7, Q8 and Q5's slide, ms (Q5's size is five slides).
    #[arg(long, default_value_t = 1000)]
    window_ms: u64,
    /// Instead of running queries, produce the events to this Kafka topic (created).
    #[arg(long)]
    produce: Option<String>,
    /// With --produce: send at most this many events per second (default: as fast as
    /// the broker takes them). Event-time spacing is set by --rate either way.
    #[arg(long)]
    produce_rate: Option<u64>,
    /// Partitions of the produced topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Checkpoint the queries' state into this directory (a fresh subdirectory per
    /// query) every `--checkpoint-epochs` epochs; without it, state stays in memory.
    #[arg(long, value_name = "DIR")]
    checkpoint_dir: Option<std::path::PathBuf>,
    /// With `--checkpoint-dir`: a checkpoint every this many epochs.
    #[arg(long, default_value_t = 1)]
    checkpoint_epochs: u64,
    /// With `--checkpoint-dir`: run each query with checkpoints first, then without.
    #[arg(long)]
    checkpointed_first: bool,
    /// Run each query once, unmeasured and without checkpoints, before its measured
    /// runs: a process's first run of a query also pays for growing the heap (under
    /// callgrind, q5's first run took about 30 % more instructions than a later one),
    /// which would otherwise land on whichever measured run goes first.
    #[arg(long)]
    warmup: bool,
    /// Input rounds (of the source's batch size, 4,096 events) per epoch.
    #[arg(long, default_value_t = 200)]
    rounds_per_epoch: u64,
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

fn attach<'s>(
    query: &str,
    events: Events<'s>,
    size: u64,
    probe: &Handle<freshet::Time>,
    out: Rc<Cell<u64>>,
) {
    macro_rules! sink {
        ($s:expr) => {{
            $s.inspect(move |_| out.set(out.get() + 1))
                .probe_with(probe);
        }};
    }
    match query {
        "q0" => sink!(queries::q0(events)),
        "q1" => sink!(queries::q1(events)),
        "q2" => sink!(queries::q2(events, 123)),
        "q3" => sink!(queries::q3(events, 1 << 40)),
        "q4" => sink!(queries::q4(events, size)),
        "q5" => sink!(queries::q5(events, 5 * size, size)),
        "q7" => sink!(queries::q7(events, size)),
        "q8" => sink!(queries::q8(events, size)),
        other => panic!("unknown query {other}"),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = NexmarkConfig {
        rate: args.rate,
        disorder_ms: args.disorder_ms,
        ..NexmarkConfig::default()
    };
    if let Some(topic) = &args.produce {
        create_topic(&args.brokers, topic, args.partitions)?;
        let parts = args.partitions as u64;
        let secs = produce_paced(
            &args.brokers,
            topic,
            args.events,
            args.produce_rate,
            |n, _key, payload| {
                let e = config.event(n);
                bincode::serialize_into(payload, &e).expect("encode");
                ((n % parts) as i32, e.time() as i64)
            },
        )?;
        Line::new("nexmark-produce")
            .field("topic", topic)
            .field("events", args.events)
            .field("partitions", args.partitions)
            .field("secs", format!("{secs:.3}"))
            .rate("msgs_per_s", args.events as f64 / secs)
            .print();
        return Ok(());
    }
    // The generator alone, one core.
    let t = Instant::now();
    let mut bytes = 0usize;
    let gen_n = args.events.min(1_000_000);
    for n in 0..gen_n {
        bytes += std::hint::black_box(config.event(n)).time() as usize;
    }
    Line::new("nexmark-generate")
        .field("events", gen_n)
        .rate("events_per_s", gen_n as f64 / t.elapsed().as_secs_f64())
        .field("check", bytes % 7)
        .print();

    let peers = args.cluster.peers();
    type Run = (String, bool, Duration, u64);
    let results: Arc<Mutex<Vec<Run>>> = Arc::default();
    let r2 = results.clone();
    let (queries, total, ooo, size) = (
        args.queries.clone(),
        args.events,
        args.disorder_ms,
        args.window_ms,
    );
    let multi_process = args.cluster.processes > 1;
    // One store per query: their operators' names may repeat.
    let stores: BTreeMap<String, Arc<TimedDir>> = match &args.checkpoint_dir {
        Some(dir) => queries
            .iter()
            .map(|q| Ok((q.clone(), TimedDir::fresh(dir, &format!("nexmark-{q}"))?)))
            .collect::<anyhow::Result<_>>()?,
        None => BTreeMap::new(),
    };
    let (every, rounds) = (args.checkpoint_epochs, args.rounds_per_epoch);
    let (checkpointed_first, warmup) = (args.checkpointed_first, args.warmup);
    let failed = Arc::new(AtomicU64::new(0));
    let (stores2, failed2) = (stores.clone(), failed.clone());
    let guards = timely::execute(args.cluster.timely_config()?, move |worker| {
        let index = worker.index();
        let mine: Vec<Event> = config.share(0..total, index, peers).collect();
        // With checkpoints, each query runs without them and with them, back to back
        // (after an unmeasured run with `--warmup`): `(query, checkpointed, measured)`.
        let runs = queries.iter().flat_map(|q| {
            let with = stores2.contains_key(q);
            let pair = if checkpointed_first {
                [with.then_some((q, true, true)), Some((q, false, true))]
            } else {
                [Some((q, false, true)), with.then_some((q, true, true))]
            };
            let first = warmup.then_some((q, false, false));
            first.into_iter().chain(pair.into_iter().flatten())
        });
        for (q, checkpointed, measured) in runs {
            let out = Rc::new(Cell::new(0u64));
            let probe = Handle::new();
            let o = out.clone();
            let ctx = stores2.get(q).filter(|_| checkpointed).map(|s| {
                checkpoints::context(s.clone(), every, index, peers, None, failed2.clone())
            });
            let installed = ctx.as_ref().map(|c| c.install());
            let mut feeder = worker.dataflow::<freshet::Time, _, _>(|scope| {
                let (feeder, events) = Feeder::<Event>::new(&scope, ooo, rounds);
                attach(q, events, size, &probe, o);
                feeder
            });
            drop(installed);
            let start = Instant::now();
            // Rounds of the Kafka source's default poll batch.
            for chunk in mine.chunks(freshet::SourceConfig::default().batch_size) {
                feeder.round(chunk.iter().map(|e| (e.time(), e.clone())));
                worker.step();
                let wm = feeder.time().map_or(0, |t| t.event);
                while probe.with_frontier(|f| event_frontier(&f)) + 10 * size < wm {
                    wait_step(worker, multi_process);
                }
            }
            feeder.close();
            while !probe.done() {
                wait_step(worker, multi_process);
            }
            let elapsed = start.elapsed();
            if !measured {
                continue;
            }
            r2.lock()
                .unwrap()
                .push((q.clone(), checkpointed, elapsed, out.get()));
        }
    })
    .map_err(|e| anyhow::anyhow!(e))?;
    for r in guards.join() {
        r.map_err(|e| anyhow::anyhow!(e))?;
    }
    let results = results.lock().unwrap().clone();
    // The slowest worker's time and every worker's outputs of one query's run.
    let measure = |q: &str, checkpointed: bool| {
        let mine: Vec<_> = results
            .iter()
            .filter(|(n, c, _, _)| n == q && *c == checkpointed)
            .collect();
        let secs = mine
            .iter()
            .map(|(_, _, d, _)| d.as_secs_f64())
            .fold(0.0, f64::max);
        let outputs: u64 = mine.iter().map(|(_, _, _, o)| o).sum();
        (secs, outputs)
    };
    for q in &args.queries {
        let (secs, outputs) = measure(q, false);
        let rate = total as f64 / secs;
        Line::new("nexmark")
            .field("config", args.cluster.label())
            .field("process", args.cluster.process)
            .field("query", q)
            .field("events", total)
            .field("outputs_here", outputs)
            .field("secs", format!("{secs:.3}"))
            .rate("events_per_s", rate)
            .rate("per_worker_per_s", rate / peers as f64)
            .print();
        if let Some(store) = stores.get(q) {
            let (with_secs, with_outputs) = measure(q, true);
            anyhow::ensure!(
                with_outputs == outputs,
                "{q}: {with_outputs} results with checkpoints, {outputs} without"
            );
            let line = Line::new("nexmark-checkpoint")
                .field("config", args.cluster.label())
                .field("process", args.cluster.process)
                .field("query", q)
                .field("events", total)
                .rate("events_per_s_without", rate)
                .rate("events_per_s_with", total as f64 / with_secs)
                .field("ratio", format!("{:.3}", secs / with_secs))
                .field("rounds_per_epoch", rounds)
                .field(
                    "checkpoints_per_s",
                    format!(
                        "{:.1}",
                        checkpoints::per_checkpoint(&store.written()).len() as f64 / with_secs
                    ),
                );
            checkpoints::report(line, store, every, &failed)?.print();
            store.remove();
        }
    }
    Ok(())
}
