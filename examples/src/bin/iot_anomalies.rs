//! IoT anomaly detection: devices report a reading every 50 ms, delivered in bursts and
//! out of order; per device, a rolling mean and standard deviation over its last 40
//! readings (applied in event-time order); a reading more than `k` deviations from the
//! mean goes to the anomalies topic; a device silent for `--silence-ms` of event time is
//! reported on the status topic. (At the end of a bounded run the input ends, so every
//! device is reported silent once.)
//!
//! Zero-install demo (librdkafka's in-process mock cluster, fed by a generator; 20
//! devices for 30 s of event time, device 0 silent for 3 s in the middle):
//!
//! ```text
//! cargo run --release -p freshet-examples --bin iot-anomalies -- --demo
//! ```
//!
//! Against a real broker:
//!
//! ```text
//! scripts/kafka-broker create-topic readings 4
//! scripts/kafka-broker create-topic anomalies 4 && scripts/kafka-broker create-topic device-status 4
//! cargo run --release -p freshet-examples --bin loadgen -- --topic readings --kind readings --rate 20000 --seconds 60 &
//! cargo run --release -p freshet-examples --bin iot-anomalies -- \
//!     --brokers 127.0.0.1:9092 --input readings --anomalies anomalies --status device-status --print
//! ```
//!
//! Readings look like `{"device":3,"ts":1700000000050,"value":23.4}`.

use std::time::Instant;

use clap::Parser;
use freshet::{run, JobArgs};
use freshet_examples::iot;
use freshet_examples::iot::{generate_readings, reference, IotRule};
use freshet_examples::{produce_json, Outgoing};

#[derive(Parser, Debug)]
#[command(
    name = "iot-anomalies",
    disable_help_flag = true,
    about = "Per-device rolling mean/deviation; k-sigma anomalies and silent devices"
)]
struct Args {
    #[command(flatten)]
    job: JobArgs,
    /// Topic to read readings from.
    #[arg(long, default_value = "readings")]
    input: String,
    /// Topic to write anomalies to.
    #[arg(long, default_value = "anomalies")]
    anomalies: String,
    /// Topic to write silent-device reports to.
    #[arg(long, default_value = "device-status")]
    status: String,
    /// Readings in each device's rolling window.
    #[arg(long, default_value_t = 40)]
    window: usize,
    /// Deviations from the mean that make an anomaly.
    #[arg(long, default_value_t = 4.0)]
    k: f64,
    /// Event-time ms without a reading after which a device is reported silent.
    #[arg(long, default_value_t = 1_000)]
    silence_ms: u64,
    /// Print every report on stdout.
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
    let rule = IotRule {
        window: args.window,
        k: args.k,
        silence_ms: args.silence_ms,
        ..IotRule::default()
    };
    let _mock;
    let mut expected = None;
    if args.demo {
        let mock = freshet_examples::start_demo(&mut args.job)?;
        args.print = true;
        for t in [&args.input, &args.anomalies, &args.status] {
            mock.create_topic(t, 4, 1)?;
        }
        let readings = generate_readings(5, 20, 1_700_000_000_000, 30_000, 500, 3_000, 300);
        let t = Instant::now();
        produce_json(
            &args.job.brokers,
            &args.input,
            readings.iter().map(|r| Outgoing {
                partition: None,
                key: r.device.to_string(),
                ts: r.ts,
                value: r,
            }),
        )?;
        eprintln!(
            "demo: produced {} readings in {:.2?}",
            readings.len(),
            t.elapsed()
        );
        expected = Some(reference(&readings, &rule));
        _mock = mock;
    }
    let config = args.job.into_config()?;
    freshet::cli::stop_on_signals(&config.stop)?;
    let summary = run(
        config,
        iot::job(args.input, args.anomalies, args.status, rule, args.print),
    )?;
    println!("{summary}");
    if let Some(expected) = expected {
        let anomalies = expected.iter().filter(|a| a.is_anomaly()).count();
        println!(
            "expected:          {anomalies} anomalies, {} silent reports (sequential reference)",
            expected.len() - anomalies
        );
        anyhow::ensure!(
            summary.records_out as usize >= expected.len(),
            "fewer reports than the reference"
        );
    }
    Ok(())
}
