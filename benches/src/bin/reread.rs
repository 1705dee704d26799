//! Records a restart would read again: a live job with long (10-minute) tumbling
//! windows reads a topic written at a steady rate, with checkpoints every
//! `--checkpoint-interval-ms`; at random moments the bench compares what was produced
//! with what the job's group has committed. That difference is what a SIGKILL at that
//! moment would make the restart read again (an upper bound: records still in flight to
//! the broker count too). The target is at most two checkpoint intervals of input.
//!
//! ```text
//! cargo run --release -p freshet-benches --bin reread -- --rate 20000 --seconds 30
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use freshet::{run, Bincode, JobArgs, KafkaSink, KafkaSource, Tumble, Windowed, WriteKafka};
use freshet_benches::kafka::{create_topic, produce_paced};
use freshet_benches::report::Line;
use freshet_benches::windowed::KeyedEvent;
use hdrhistogram::Histogram;
use rand::Rng;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

#[derive(Parser, Debug)]
#[command(name = "reread", disable_help_flag = true)]
struct Args {
    #[command(flatten)]
    job: JobArgs,
    /// Records produced per second.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Seconds of input.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Window length, ms (long: windows stay open for the whole run).
    #[arg(long, default_value_t = 600_000)]
    window: u64,
    /// Partitions of the input topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

type Count = Windowed<u64, u64>;

/// The group's committed offsets on `topic`, summed (0 for partitions without one).
fn committed(consumer: &BaseConsumer, topic: &str, partitions: i32) -> anyhow::Result<i64> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer.committed_offsets(tpl, Duration::from_secs(5))?;
    Ok(got
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum())
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    let nonce: u64 = rand::thread_rng().gen();
    let topic = format!("reread-{nonce:x}");
    let output = format!("{topic}-out");
    let brokers = args.job.brokers.clone();
    create_topic(&brokers, &topic, args.partitions)?;
    create_topic(&brokers, &output, args.partitions)?;
    args.job.group = format!("{topic}-job");
    args.job.from = freshet::StartFrom::Earliest;
    args.job
        .checkpoints
        .checkpoint_dir
        .get_or_insert_with(|| std::env::temp_dir().join(format!("freshet-reread-{nonce:x}")));
    let mut config = args.job.clone().into_config()?;
    config.status_every = Duration::ZERO;
    let interval = config.checkpoint.interval;
    let stop = config.stop.clone();
    let (input, out, window) = (topic.clone(), output.clone(), args.window);
    let job = std::thread::spawn(move || {
        run(config, move |job| {
            KafkaSource::new(input.clone(), Bincode::<KeyedEvent>::new())
                .build(job)?
                .records
                .tumble_count("count", window, |e: &KeyedEvent| e.key)
                .write_kafka(
                    job,
                    KafkaSink::new(out.clone(), Bincode::<Count>::new())
                        .key(|r: &Count| Some(r.key.to_le_bytes().to_vec())),
                )?;
            Ok(())
        })
    });

    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let n = args.rate * args.seconds;
    let producer = {
        let (brokers, topic, sent, done) =
            (brokers.clone(), topic.clone(), sent.clone(), done.clone());
        let (rate, parts) = (args.rate, args.partitions as u64);
        std::thread::spawn(move || {
            let start_ms = freshet::clock::now_ms();
            let result = produce_paced(&brokers, &topic, n, Some(rate), |i, _key, payload| {
                let e = KeyedEvent {
                    key: i % 10_000,
                    ts: start_ms + i * 1000 / rate,
                    value: 1,
                };
                bincode::serialize_into(payload, &e).expect("encode");
                sent.fetch_add(1, Ordering::Relaxed);
                ((i % parts) as i32, e.ts as i64)
            });
            done.store(true, Ordering::Relaxed);
            result
        })
    };

    let group: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &args.job.group)
        .create()?;
    // Samples after a warm-up of a few checkpoint intervals, at random moments.
    let mut behind = Histogram::<u64>::new(3)?;
    let warm = Instant::now() + 3 * interval;
    let mut rng = rand::thread_rng();
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(rng.gen_range(50..400)));
        if Instant::now() < warm {
            continue;
        }
        let produced = sent.load(Ordering::Relaxed) as i64;
        let c = committed(&group, &topic, args.partitions)?;
        behind.record((produced - c).max(0) as u64)?;
    }
    producer.join().expect("producer")?;
    stop.store(true, Ordering::Relaxed);
    let summary = job.join().expect("job")?;
    let per_interval = args.rate as f64 * interval.as_secs_f64();
    Line::new("reread")
        .field("rate", args.rate)
        .field("window_ms", args.window)
        .field("checkpoint_interval_ms", interval.as_millis())
        .field("samples", behind.len())
        .field("records_in", summary.records_in)
        .field("behind_p50", behind.value_at_quantile(0.5))
        .field("behind_p99", behind.value_at_quantile(0.99))
        .field("behind_max", behind.max())
        .field(
            "max_in_intervals",
            format!("{:.2}", behind.max() as f64 / per_interval),
        )
        .print();
    Ok(())
}
