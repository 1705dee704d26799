//! Sessionization: a clickstream becomes per-user session windows (clicks less than
//! `--gap-ms` apart), and each session becomes one summary (clicks, duration, entry and
//! exit page) written to an output topic when the session ends.
//!
//! Zero-install demo (librdkafka's in-process mock cluster, fed by a generator):
//!
//! ```text
//! cargo run --release -p freshet-examples --bin sessionize -- --demo
//! ```
//!
//! Against a real broker:
//!
//! ```text
//! scripts/kafka-broker create-topic clicks 4 && scripts/kafka-broker create-topic sessions 4
//! cargo run --release -p freshet-examples --bin loadgen -- --topic clicks --kind clicks --keys 50000 --rate 5000 --seconds 60 &
//! cargo run --release -p freshet-examples --bin sessionize -- \
//!     --brokers 127.0.0.1:9092 --input clicks --output sessions --gap-ms 10000 --print
//! ```
//!
//! Clicks look like `{"user":42,"page":"/cart","ts":1700000000123}`.

use std::time::Instant;

use clap::Parser;
use freshet::{run, JobArgs};
use freshet_examples::sessions;
use freshet_examples::sessions::{generate_clicks, reference};
use freshet_examples::{produce_json, Outgoing};

#[derive(Parser, Debug)]
#[command(
    name = "sessionize",
    disable_help_flag = true,
    about = "Clickstream to per-user session summaries"
)]
struct Args {
    #[command(flatten)]
    job: JobArgs,
    /// Topic to read clicks from.
    #[arg(long, default_value = "clicks")]
    input: String,
    /// Topic to write session summaries to.
    #[arg(long, default_value = "sessions")]
    output: String,
    /// A session ends after this many ms without a click.
    #[arg(long, default_value_t = 30_000)]
    gap_ms: u64,
    /// Print each summary on stdout.
    #[arg(long)]
    print: bool,
    /// Run on an in-process mock Kafka cluster fed by a generator.
    #[arg(long)]
    demo: bool,
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
        args.gap_ms = 5_000;
        mock.create_topic(&args.input, 4, 1)?;
        mock.create_topic(&args.output, 4, 1)?;
        let clicks = generate_clicks(2, 200, 1_700_000_000_000, 300_000, args.gap_ms, 300);
        let t = Instant::now();
        produce_json(
            &args.job.brokers,
            &args.input,
            clicks.iter().map(|c| Outgoing {
                partition: None,
                key: c.user.to_string(),
                ts: c.ts,
                value: c,
            }),
        )?;
        eprintln!(
            "demo: produced {} clicks in {:.2?}",
            clicks.len(),
            t.elapsed()
        );
        expected = Some(reference(&clicks, args.gap_ms).len());
        _mock = mock;
    }
    let config = args.job.into_config()?;
    freshet::cli::stop_on_signals(&config.stop)?;
    let summary = run(
        config,
        sessions::job(args.input, args.output, args.gap_ms, args.print),
    )?;
    println!("{summary}");
    if let Some(expected) = expected {
        println!("sessions expected: {expected} (sequential reference)");
        anyhow::ensure!(
            summary.records_out as usize >= expected,
            "fewer sessions than the reference"
        );
    }
    Ok(())
}
