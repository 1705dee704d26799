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

use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use freshet::{run, JobArgs};
use freshet_examples::{generate, produce, reference_counts, window_count_job};
use rdkafka::mocking::MockCluster;

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
        let mock = MockCluster::new(1).context("starting the mock cluster")?;
        args.job.brokers = mock.bootstrap_servers();
        args.job.bounded = true;
        args.job.from = freshet::StartFrom::Earliest;
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
    let summary = run(
        config,
        window_count_job(args.input, args.output, args.window_ms, args.print),
    )?;
    println!("{summary}");
    if let Some(expected) = expected {
        println!(
            "windows expected:  {} (sequential reference count)",
            expected.len()
        );
        anyhow::ensure!(
            summary.records_out as usize >= expected.len(),
            "fewer window results than the reference"
        );
    }
    Ok(())
}
