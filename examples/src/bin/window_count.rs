//! Keyed tumbling-window counts: JSON events from one topic, per-key counts per window
//! written as JSON to another, offsets committed once the counts are delivered.
//!
//! Zero-install demo (librdkafka's in-process mock cluster, fed by a generator):
//!
//! ```text
//! cargo run --release -p freshet-examples --bin window-count -- --demo
//! ```
//!
//! Against a real broker (see `scripts/kafka-broker`):
//!
//! ```text
//! scripts/kafka-broker start
//! scripts/kafka-broker create-topic events 4 && scripts/kafka-broker create-topic counts 4
//! cargo run --release -p freshet-examples --bin window-count -- \
//!     --brokers 127.0.0.1:9092 --input events --output counts --bounded -w 2
//! ```
//!
//! Input events look like `{"key": 7, "ts": 1700000000123, "amount": 5}`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Parser;
use freshet::source::{SourceConsumer, SourceContext};
use freshet::{run, JobArgs};
use freshet_examples::window_count;
use freshet_examples::{generate, produce, reference_counts, WindowCount};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

#[derive(Parser, Debug)]
#[command(
    name = "window-count",
    disable_help_flag = true,
    about = "Keyed tumbling-window counts from Kafka to Kafka"
)]
struct Args {
    #[command(flatten)]
    job: JobArgs,
    /// Topic to read events from.
    #[arg(long, default_value = "events")]
    input: String,
    /// Topic to write window counts to.
    #[arg(long, default_value = "counts")]
    output: String,
    /// Window length, ms.
    #[arg(long, default_value_t = 1000)]
    window_ms: u64,
    /// Print each window result on stdout.
    #[arg(long)]
    print: bool,
    /// Run on an in-process mock Kafka cluster fed by a generator (nothing to install).
    #[arg(long)]
    demo: bool,
    /// Events the demo generates.
    #[arg(long, default_value_t = 40_000)]
    demo_events: usize,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

fn main() -> anyhow::Result<()> {
    freshet::cli::init_logging();
    let mut args = Args::parse();
    let _mock;
    let mut expected = None;
    if args.demo {
        let mock = freshet_examples::start_demo(&mut args.job)?;
        args.print = true;
        mock.create_topic(&args.input, 4, 1)?;
        mock.create_topic(&args.output, 4, 1)?;
        let start = 1_700_000_000_000;
        let events = generate(7, args.demo_events, 8, 4, start, 10_000, 300);
        let t = Instant::now();
        produce(&args.job.brokers, &args.input, &events)?;
        eprintln!(
            "demo: produced {} events to '{}' in {:.2?}",
            events.len(),
            args.input,
            t.elapsed()
        );
        expected = Some(reference_counts(
            events.iter().map(|(_, e)| e),
            args.window_ms,
        ));
        _mock = mock;
    }
    let config = args.job.into_config()?;
    freshet::cli::stop_on_signals(&config.stop)?;
    let brokers = config.kafka.brokers.clone();
    let summary = run(
        config,
        window_count::job(args.input, args.output.clone(), args.window_ms, args.print),
    )?;
    println!("{summary}");
    if let Some(expected) = expected {
        // Read the results back from the output topic and compare with a sequential count.
        let written = read_counts(&brokers, &args.output)?;
        anyhow::ensure!(
            written == expected,
            "the output topic holds {} windows that differ from the sequential reference ({} windows)",
            written.len(),
            expected.len()
        );
        println!(
            "verified:          {} windows in '{}' equal a sequential count",
            written.len(),
            args.output
        );
    }
    Ok(())
}

/// Reads every window result in `topic` back, as (key, start) -> count.
fn read_counts(brokers: &str, topic: &str) -> anyhow::Result<BTreeMap<(u64, u64), u64>> {
    let consumer: SourceConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "window-count-verify")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create_with_context(SourceContext)?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let parts = md.topics().first().map_or(0, |t| t.partitions().len());
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let (mut ended, mut counts) = (0, BTreeMap::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    while ended < parts && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let w: WindowCount = serde_json::from_slice(m.payload().unwrap_or_default())?;
                let first = counts.insert((w.key, w.start), w.value).is_none();
                anyhow::ensure!(first, "window {} of key {} written twice", w.start, w.key);
            }
            Some(Err(KafkaError::PartitionEOF(_))) => ended += 1,
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    anyhow::ensure!(ended == parts, "could not read '{topic}' to its end");
    Ok(counts)
}
