//! Kafka end to end against a real broker: preloads N keyed events into a P-partition
//! topic (tuned producer, reports produce msg/s), runs a Freshet job in bounded mode —
//! Kafka source → 1 s tumbling count + sum per key → Kafka sink — and reports
//! records/s; then reads the same topic with a raw rdkafka consume loop (decoding each
//! payload with the same codec, one consumer per job worker, configured as Freshet's
//! consumers are) as the ceiling, and prints the ratio.
//!
//! ```text
//! cargo run --release -p freshet-benches --bin kafka-e2e -- --events 2000000 --partitions 4 -w 2
//! ```
//!
//! Two processes: preload once (`--stage preload --topic T`), run the job in each
//! process (`--stage job --topic T -n 2 -p 0|1 -h hosts`), then `--stage raw --topic T`.

use std::time::Instant;

use clap::{Parser, ValueEnum};
use freshet::{run, Bincode, JobArgs, KafkaSink, KafkaSource, Tumble, Windowed, WriteKafka};
use freshet_benches::cluster::Label;
use freshet_benches::kafka::{create_topic, produce, raw_consume};
use freshet_benches::report::Line;
use freshet_benches::windowed::{KeyedEvent, Workload};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Stage {
    /// Preload, job, raw loop.
    All,
    /// Create the topics and preload the input.
    Preload,
    /// Run the Freshet job only.
    Job,
    /// Run the raw consume loop only.
    Raw,
}

#[derive(Parser, Debug)]
#[command(name = "kafka-e2e", disable_help_flag = true)]
struct Args {
    #[command(flatten)]
    job: JobArgs,
    /// What to run.
    #[arg(long, value_enum, default_value = "all")]
    stage: Stage,
    /// Input topic (default: a fresh name; output is `<topic>-out`).
    #[arg(long)]
    topic: Option<String>,
    /// Records to preload.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Partitions of the input and output topics.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Events per second of event time.
    #[arg(long, default_value_t = 100_000)]
    per_second: u64,
    /// Window size, ms.
    #[arg(long, default_value_t = 1000)]
    window_ms: u64,
    /// Consumer threads of the raw loop (default: as many as the job's workers).
    #[arg(long)]
    raw_threads: Option<usize>,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

type Result = Windowed<u64, (u64, u64)>;

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    freshet::cli::init_logging();
    let label = args.job.cluster.label();
    let peers = args.job.cluster.peers();
    let topic = args.topic.clone().unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("bench-e2e-{nanos:x}")
    });
    let output = format!("{topic}-out");
    let brokers = args.job.brokers.clone();
    let w = Workload {
        keys: args.keys,
        per_second: args.per_second,
        seconds: args.events.div_ceil(args.per_second),
        disorder_ms: args.job.out_of_orderness_ms,
        start_ms: 1_700_000_000_000,
        seed: 11,
    };
    if matches!(args.stage, Stage::All | Stage::Preload) {
        create_topic(&brokers, &topic, args.partitions)?;
        create_topic(&brokers, &output, args.partitions)?;
        let parts = args.partitions as u64;
        let secs = produce(&brokers, &topic, args.events, |i, key, payload| {
            let e = w.event(i);
            key.extend_from_slice(&e.key.to_le_bytes());
            bincode::serialize_into(payload, &e).expect("encode");
            ((i % parts) as i32, e.ts as i64)
        })?;
        Line::new("kafka-produce")
            .field("topic", &topic)
            .field("events", args.events)
            .field("partitions", args.partitions)
            .field("secs", format!("{secs:.3}"))
            .rate("msgs_per_s", args.events as f64 / secs)
            .print();
    }
    let mut job_rate = None;
    if matches!(args.stage, Stage::All | Stage::Job) {
        args.job.bounded = true;
        args.job.from = freshet::StartFrom::Earliest;
        args.job.group = format!("{topic}-job");
        let mut config = args.job.clone().into_config()?;
        config.status_every = std::time::Duration::ZERO;
        let (input, out, window_ms) = (topic.clone(), output.clone(), args.window_ms);
        let start = Instant::now();
        let summary = run(config, move |job| {
            let streams =
                KafkaSource::new(input.clone(), Bincode::<KeyedEvent>::new()).build(job)?;
            streams
                .records
                .tumble_fold(
                    "count-sum",
                    window_ms,
                    |e: &KeyedEvent| e.key,
                    |acc: &mut (u64, u64), e: &KeyedEvent| {
                        acc.0 += 1;
                        acc.1 += e.value;
                    },
                )
                .write_kafka(
                    job,
                    KafkaSink::new(out.clone(), Bincode::<Result>::new())
                        .key(|r: &Result| Some(r.key.to_le_bytes().to_vec())),
                )?;
            Ok(())
        })?;
        let secs = start.elapsed().as_secs_f64();
        // Each process reads its own partitions: its rate is its records over its time.
        let rate = summary.records_in as f64 / secs;
        job_rate = Some(rate);
        Line::new("kafka-e2e-job")
            .field("config", &label)
            .field("process", args.job.cluster.process)
            .field("exactly_once", args.job.checkpoints.exactly_once)
            .field("topic", &topic)
            .field("records_in", summary.records_in)
            .field("records_out", summary.records_out)
            .field("late", summary.late)
            .field("secs", format!("{secs:.3}"))
            .rate("records_per_s", rate)
            .rate("per_worker_per_s", rate / args.job.cluster.workers as f64)
            .print();
        if args.job.cluster.processes == 1 {
            anyhow::ensure!(
                summary.records_in == args.events,
                "job read {} of {}",
                summary.records_in,
                args.events
            );
        }
    }
    if matches!(args.stage, Stage::All | Stage::Raw) {
        let sum = std::sync::atomic::AtomicU64::new(0);
        let threads = args.raw_threads.unwrap_or(peers);
        let (n, secs) = raw_consume(&brokers, &topic, args.partitions, threads, |p| {
            let e: KeyedEvent = bincode::deserialize(p).expect("decode");
            sum.fetch_add(e.value, std::sync::atomic::Ordering::Relaxed);
        })?;
        let rate = n as f64 / secs;
        let mut line = Line::new("kafka-raw-consume")
            .field("topic", &topic)
            .field("records", n)
            .field("threads", threads)
            .field("secs", format!("{secs:.3}"))
            .rate("records_per_s", rate);
        if let Some(j) = job_rate {
            line = line
                .field("config", &label)
                .field("ratio_job_vs_raw", format!("{:.3}", j / rate));
        }
        line.print();
    }
    Ok(())
}
