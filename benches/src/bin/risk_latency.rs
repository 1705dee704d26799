//! Latency of the risk-score job (`freshet_examples::risk_score`: rolling per-IP and
//! per-user features over one minute, a logistic regression, a decision per payment)
//! against the real broker, at a fixed open-loop rate of payments, recorded with
//! hdrhistogram:
//!
//! * **hand-over → producer**: from the moment the job's Kafka consumer hands a payment
//!   over (the source decodes it, right after the poll that returned it) to the moment
//!   its decision is handed to the job's producer (the sink encodes it, right before
//!   `send`), in the job's process: the time Freshet spends on the payment;
//! * **produce → consumed**: from this bench's producer `send` of a payment to this
//!   bench's consumer receiving its decision from the decisions topic: the whole path
//!   through the broker twice.
//!
//! Payments (JSON, keyed by IP, 100,000 IPs of which 50 attackers take a fifth of the
//! payments, 10,000 users) go to a fresh 4-partition topic at `--rate` per second for
//! `--seconds`, once the job is up (ping payments until one decision comes back); the
//! first `--warmup-seconds` are not recorded. Settings are printed on
//! each result line: the bench producer's and the job's producer's `linger.ms`, the
//! consumers' `fetch.wait.max.ms` (job and bench consumer), the source's poll size
//! and out-of-orderness. The bench producer, the job, the bench consumer and the broker
//! share the machine's cores, unless `--isolate-core N` gives the job's worker thread a
//! core of its own once the job is up.
//!
//! ```text
//! scripts/kafka-broker start
//! cargo run --release -p freshet-benches --bin risk-latency -- --rate 10000 --mode on-arrival
//! cargo run --release -p freshet-benches --bin risk-latency -- --rate 100000 --mode exact
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use freshet::operators::RollingMode;
use freshet::{Cluster, JobConfig, KafkaConfig, ProducerSettings};
use freshet_benches::kafka::create_topic;
use freshet_benches::report::Line;
use freshet_examples::now_ms;
use freshet_examples::risk::PaymentGen;
use freshet_examples::risk_score::{hand_over, now_us, risk_score_job, Model, ScoreJob, ScoreRule};
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// `--mode`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// Decide at once.
    OnArrival,
    /// Decide once the watermark passes the payment.
    Exact,
}

#[derive(Parser, Debug)]
#[command(name = "risk-latency", disable_help_flag = true)]
struct Args {
    /// The broker.
    #[arg(long, env = "FRESHET_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Payments per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds to produce.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Seconds at the start not recorded.
    #[arg(long, default_value_t = 3)]
    warmup_seconds: u64,
    /// Rolling mode of the job.
    #[arg(long, value_enum, default_value = "on-arrival")]
    mode: Mode,
    /// Job worker threads.
    #[arg(short = 'w', long = "workers", default_value_t = 1)]
    workers: usize,
    /// Partitions of the payments and decisions topics.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// linger.ms of the bench's payment producer.
    #[arg(long, default_value_t = 5)]
    producer_linger_ms: u64,
    /// linger.ms of the job's decisions producer.
    #[arg(long, default_value_t = 5)]
    job_linger_ms: u64,
    /// fetch.wait.max.ms of the job's consumer and of the bench's decisions consumer.
    #[arg(long, default_value_t = 5)]
    fetch_wait_ms: u64,
    /// Records the job's source hands over per poll at most (`SourceConfig::batch_size`).
    /// A poll's payments go through the job together, so each waits for the whole
    /// batch: its default 4,096 is ~40 ms of payments at 100k/s, and 256 still made the
    /// p50 at 100k/s about 2.3 ms against 0.5 ms with 64 (`docs/benchmarks.md`).
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// The source's allowed out-of-orderness, ms (what exact mode waits for).
    #[arg(long, default_value_t = 500)]
    out_of_orderness_ms: u64,
    /// Run the job without checkpoints (state in memory only), to see what they cost.
    #[arg(long)]
    no_checkpoints: bool,
    /// How often the job takes a checkpoint, ms (the job's `--checkpoint-interval`).
    #[arg(long, default_value_t = freshet::checkpoint::CheckpointConfig::default().interval.as_millis() as u64)]
    checkpoint_interval_ms: u64,
    /// Each stateful operator's chain of parts (what changed) is compacted into a full
    /// image every this many checkpoints (the job's `--checkpoint-full-every`).
    #[arg(long, default_value_t = freshet::checkpoint::CheckpointConfig::default().full_every)]
    checkpoint_full_every: u64,
    /// Write decisions exactly once (`--exactly-once`): each waits for its checkpoint,
    /// so produce → consumed grows by about the checkpoint interval.
    #[arg(long)]
    exactly_once: bool,
    /// Once the job is up, run its worker thread alone on this core and every other
    /// thread of the bench on the other cores (Linux, util-linux `taskset`): the job's
    /// time without the bench's own clients (or a broker kept off the core) taking turns
    /// with it.
    #[arg(long)]
    isolate_core: Option<usize>,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tag = format!("{:016x}", now_us());
    let payments = format!("bench-risk-payments-{tag}");
    let decisions = format!("bench-risk-decisions-{tag}");
    let errors = format!("bench-risk-errors-{tag}");
    create_topic(&args.brokers, &payments, args.partitions)?;
    create_topic(&args.brokers, &decisions, args.partitions)?;
    create_topic(&args.brokers, &errors, 1)?;

    let total = args.rate * args.seconds;
    let warmup_ids = args.rate * args.warmup_seconds;
    // When each payment was handed to the bench producer, µs (0: not yet).
    let sent_us: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());

    // The job.
    let mode = match args.mode {
        Mode::OnArrival => RollingMode::OnArrival,
        Mode::Exact => RollingMode::Exact,
    };
    let rule = ScoreRule {
        mode,
        ..ScoreRule::new(Model::shipped())
    };
    let kafka = KafkaConfig::new(args.brokers.clone(), format!("bench-risk-{tag}"))
        .set("fetch.wait.max.ms", &args.fetch_wait_ms.to_string())?;
    let mut config = JobConfig::new(kafka);
    config.cluster = Cluster {
        workers: args.workers,
        ..Cluster::default()
    };
    config.progress = false;
    config.source.out_of_orderness = Duration::from_millis(args.out_of_orderness_ms);
    config.source.batch_size = args.batch_size;
    let epoch_ms = config.source.epoch_interval.as_millis().max(1) as u64;
    config.source.max_epochs_ahead = config
        .source
        .max_epochs_ahead
        .max((rule.range_ms + rule.lateness_ms) / epoch_ms + 10);
    config.drain = Duration::from_secs(1);
    config.checkpoint.enabled = !args.no_checkpoints;
    config.checkpoint.exactly_once = args.exactly_once;
    config.checkpoint.full_every = args.checkpoint_full_every;
    config.checkpoint.interval = Duration::from_millis(args.checkpoint_interval_ms);
    // The run's checkpoints are of no use after it: removed at the end.
    let checkpoint_dir = config.checkpoint.dir_for(&config.kafka.group);
    let stop = config.stop.clone();
    let handover = hand_over();
    let job = {
        let build = risk_score_job(ScoreJob {
            input: payments.clone(),
            decisions: decisions.clone(),
            errors,
            rule,
            producer: ProducerSettings {
                linger: Duration::from_millis(args.job_linger_ms),
                ..ProducerSettings::default()
            },
            print: false,
            latency: Some(handover.clone()),
        });
        std::thread::spawn(move || freshet::run(config, build))
    };

    // The decisions consumer.
    let produced_all = Arc::new(AtomicBool::new(false));
    // Set when the first decision (of a ping payment, id `total`) is read back.
    let ready = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (brokers, topic, sent_us) = (args.brokers.clone(), decisions.clone(), sent_us.clone());
        let (partitions, fetch_wait, done) =
            (args.partitions, args.fetch_wait_ms, produced_all.clone());
        let ready = ready.clone();
        std::thread::spawn(move || -> anyhow::Result<(Histogram<u64>, u64)> {
            let c: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", format!("bench-risk-reader-{}", now_us()))
                .set("enable.auto.commit", "false")
                .set("fetch.wait.max.ms", fetch_wait.to_string())
                .set("fetch.min.bytes", "1")
                .create()?;
            let mut tpl = TopicPartitionList::new();
            for p in 0..partitions {
                tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
            }
            c.assign(&tpl)?;
            let mut h = histogram();
            let mut seen = 0u64;
            let mut last_progress = Instant::now();
            while seen < total {
                // Until every decision is in, or nothing came for 30 s after the end.
                if done.load(Ordering::SeqCst) && last_progress.elapsed() > Duration::from_secs(30)
                {
                    break;
                }
                match c.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        let now = now_us();
                        last_progress = Instant::now();
                        ready.store(true, Ordering::SeqCst);
                        let id = m
                            .key()
                            .and_then(|k| std::str::from_utf8(k).ok())
                            .and_then(|k| k.parse::<u64>().ok());
                        if id.is_some_and(|id| id < total) {
                            seen += 1;
                        }
                        if let Some(id) = id.filter(|id| *id >= warmup_ids && *id < total) {
                            let sent = sent_us[id as usize].load(Ordering::Relaxed);
                            h.saturating_record(now.saturating_sub(sent).max(1));
                        }
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                    Some(Err(e)) => return Err(e.into()),
                }
            }
            Ok((h, seen))
        })
    };

    // The payments producer: open loop, every millisecond the payments that came due.
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("linger.ms", args.producer_linger_ms.to_string())
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "2000000")
        .create()?;
    let mut g = PaymentGen::new(7, 100_000, 50);
    let mut buf = Vec::new();
    // Wait until the job is up (consumer assigned, producer connected): ping payments,
    // one every 100 ms, until the first decision is read back.
    let ping_start = Instant::now();
    while !ready.load(Ordering::SeqCst) {
        anyhow::ensure!(
            ping_start.elapsed() < Duration::from_secs(60),
            "no decision came back within 60 s"
        );
        let mut p = g.next(now_ms());
        p.id = total;
        buf.clear();
        serde_json::to_writer(&mut buf, &p)?;
        let record = BaseRecord::to(&payments)
            .key(&p.ip)
            .payload(&buf)
            .timestamp(p.ts as i64);
        producer.send(record).map_err(|(e, _)| e)?;
        // Waiting for the job to start: nothing in the dataflow can tell us sooner.
        std::thread::sleep(Duration::from_millis(100));
    }
    let startup_secs = ping_start.elapsed().as_secs_f64();
    if let Some(core) = args.isolate_core {
        isolate_worker(core)?;
    }
    let start = Instant::now();
    let mut next = 0u64;
    while next < total {
        let due = ((start.elapsed().as_secs_f64() * args.rate as f64) as u64).min(total);
        while next < due {
            let mut p = g.next(now_ms());
            p.id = next;
            buf.clear();
            serde_json::to_writer(&mut buf, &p)?;
            sent_us[next as usize].store(now_us(), Ordering::Relaxed);
            let mut record = BaseRecord::to(&payments)
                .key(&p.ip)
                .payload(&buf)
                .timestamp(p.ts as i64);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        producer.poll(Duration::from_millis(1));
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
            next += 1;
            if next == warmup_ids {
                handover.lock().unwrap_or_else(|e| e.into_inner()).reset();
            }
        }
        // Pacing of the open loop, not synchronisation.
        std::thread::sleep(Duration::from_micros(500));
    }
    let produce_secs = start.elapsed().as_secs_f64();
    producer.flush(Duration::from_secs(60))?;
    produced_all.store(true, Ordering::SeqCst);

    let (e2e, consumed) = consumer.join().expect("consumer thread")?;
    stop.store(true, Ordering::SeqCst);
    let summary = job
        .join()
        .expect("job thread")
        .context("the risk-score job")?;
    if let Err(e) = std::fs::remove_dir_all(&checkpoint_dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            eprintln!("could not remove {}: {e}", checkpoint_dir.display());
        }
    }
    let h = handover.lock().unwrap_or_else(|e| e.into_inner()).clone();

    let ms = |h: &Histogram<u64>, q: f64| format!("{:.3}", h.value_at_quantile(q) as f64 / 1000.0);
    for (path, h) in [("handover_to_producer", &h), ("produce_to_consumed", &e2e)] {
        Line::new("risk-latency")
            .field(
                "mode",
                match args.mode {
                    Mode::OnArrival => "on_arrival",
                    Mode::Exact => "exact",
                },
            )
            .field("rate", args.rate)
            .rate("achieved_rate", total as f64 / produce_secs)
            .field("config", format!("w{}", args.workers))
            .field("checkpoints", !args.no_checkpoints)
            .field("checkpoint_interval_ms", args.checkpoint_interval_ms)
            .field("exactly_once", args.exactly_once)
            .field("path", path)
            .field("samples", h.len())
            .field("p50_ms", ms(h, 0.5))
            .field("p99_ms", ms(h, 0.99))
            .field("p999_ms", ms(h, 0.999))
            .field("max_ms", format!("{:.3}", h.max() as f64 / 1000.0))
            .field("produced", total)
            .field("startup_s", format!("{startup_secs:.1}"))
            .field("decisions_consumed", consumed)
            .field("records_in", summary.records_in)
            .field("producer_linger_ms", args.producer_linger_ms)
            .field("job_linger_ms", args.job_linger_ms)
            .field("fetch_wait_ms", args.fetch_wait_ms)
            .field("out_of_orderness_ms", args.out_of_orderness_ms)
            .field("batch_size", args.batch_size)
            .field("partitions", args.partitions)
            .field(
                "worker_core",
                args.isolate_core.map_or("shared".into(), |c| c.to_string()),
            )
            .print();
    }
    anyhow::ensure!(
        consumed == total,
        "only {consumed} of {total} decisions were consumed"
    );
    Ok(())
}

/// Puts the job's worker threads (named `timely:work-N`) alone on `core` and every other
/// thread of this process on the remaining cores, with util-linux's `taskset` (the
/// workspace forbids the unsafe a direct `sched_setaffinity` call needs). Threads
/// started later (none once the job runs) inherit their creator's cores.
fn isolate_worker(core: usize) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism()?.get();
    anyhow::ensure!(
        core < cores && cores > 1,
        "--isolate-core {core}: this machine has {cores} cores"
    );
    let others: Vec<String> = (0..cores)
        .filter(|&c| c != core)
        .map(|c| c.to_string())
        .collect();
    let (alone, rest) = (core.to_string(), others.join(","));
    let mut workers = 0;
    for task in std::fs::read_dir("/proc/self/task")? {
        let task = task?;
        let tid = task.file_name().to_string_lossy().into_owned();
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let on = if name.trim_end().starts_with("timely:work-") {
            workers += 1;
            &alone
        } else {
            &rest
        };
        let status = std::process::Command::new("taskset")
            .args(["-p", "-c", on, &tid])
            .stdout(std::process::Stdio::null())
            .status()
            .context("running taskset (util-linux) for --isolate-core")?;
        anyhow::ensure!(status.success(), "taskset -p -c {on} {tid}: {status}");
    }
    anyhow::ensure!(
        workers > 0,
        "--isolate-core: no worker thread of the job found"
    );
    Ok(())
}
