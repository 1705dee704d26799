//! Risk control: payment events; per source IP, the count and sum of payments over a
//! sliding 1-minute window (10 s slide); an alert to an output topic when a threshold is
//! crossed (at most one per IP and window, raised from early results every second, so
//! it does not wait for the window to close). The time from the payment that tipped a
//! window to its alert is measured and printed (p50/p99/max) at the end.
//!
//! Zero-install demo (librdkafka's in-process mock cluster; a generator thread produces
//! live payments, event time = now, at `--demo-rate` per second for `--demo-seconds`;
//! the job then stops as on SIGTERM: drains, commits, prints its summary):
//!
//! ```text
//! cargo run --release -p freshet-examples --bin risk-control -- --demo
//! ```
//!
//! Against a real broker (feed it with the load generator):
//!
//! ```text
//! scripts/kafka-broker create-topic payments 4 && scripts/kafka-broker create-topic risk-alerts 4
//! cargo run --release -p freshet-examples --bin loadgen -- --topic payments --kind payments --keys 100000 --rate 5000 --seconds 60 &
//! cargo run --release -p freshet-examples --bin risk-control -- \
//!     --brokers 127.0.0.1:9092 --input payments --output risk-alerts --print
//! ```
//!
//! Payments look like `{"id":1,"ip":"10.66.0.1","user":7,"amount_cents":1250,"ts":1700000000123}`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use freshet::{run, JobArgs};
use freshet_examples::risk;
use freshet_examples::risk::{PaymentGen, RiskRule};
use freshet_examples::{latencies, now_ms, produce_json, Outgoing};
use rdkafka::mocking::MockCluster;

#[derive(Parser, Debug)]
#[command(
    name = "risk-control",
    disable_help_flag = true,
    about = "Per-IP sliding-window payment counts and sums; alerts on thresholds"
)]
struct Args {
    #[command(flatten)]
    job: JobArgs,
    /// Topic to read payments from.
    #[arg(long, default_value = "payments")]
    input: String,
    /// Topic to write alerts to.
    #[arg(long, default_value = "risk-alerts")]
    output: String,
    /// Alert at this many payments per IP in a window.
    #[arg(long, default_value_t = 30)]
    max_count: u64,
    /// Alert at this total per IP in a window, cents.
    #[arg(long, default_value_t = 500_000)]
    max_sum_cents: i64,
    /// Window length, ms.
    #[arg(long, default_value_t = 60_000)]
    window_ms: u64,
    /// Window slide, ms.
    #[arg(long, default_value_t = 10_000)]
    slide_ms: u64,
    /// Early results every this many ms of event time (0: at window close only).
    #[arg(long, default_value_t = 1_000)]
    early_ms: u64,
    /// Print each alert on stdout.
    #[arg(long)]
    print: bool,
    /// Run on an in-process mock Kafka cluster fed by a live generator.
    #[arg(long)]
    demo: bool,
    /// Demo: payments per second.
    #[arg(long, default_value_t = 2_000)]
    demo_rate: u64,
    /// Demo: how long the generator runs, seconds.
    #[arg(long, default_value_t = 15)]
    demo_seconds: u64,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

fn main() -> anyhow::Result<()> {
    freshet::cli::init_logging();
    let mut args = Args::parse();
    let _mock;
    let mut generator = None;
    if args.demo {
        let mock = MockCluster::new(1).context("starting the mock cluster")?;
        args.job.brokers = mock.bootstrap_servers();
        args.job.from = freshet::StartFrom::Earliest;
        args.print = true;
        mock.create_topic(&args.input, 4, 1)?;
        mock.create_topic(&args.output, 4, 1)?;
        _mock = mock;
        let (brokers, topic) = (args.job.brokers.clone(), args.input.clone());
        let (rate, seconds) = (args.demo_rate.max(1), args.demo_seconds);
        generator = Some(std::thread::spawn(move || -> anyhow::Result<u64> {
            let mut g = PaymentGen::new(1, 100_000, 3);
            let start = Instant::now();
            let mut sent = 0u64;
            while start.elapsed() < Duration::from_secs(seconds) {
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                let batch: Vec<_> = (sent..due).map(|_| g.next(now_ms())).collect();
                produce_json(
                    &brokers,
                    &topic,
                    batch.iter().map(|p| Outgoing {
                        partition: None,
                        key: p.ip.clone(),
                        ts: p.ts,
                        value: p,
                    }),
                )?;
                sent = due;
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(sent)
        }));
    }
    let rule = RiskRule {
        window_ms: args.window_ms,
        slide_ms: args.slide_ms,
        max_count: args.max_count,
        max_sum_cents: args.max_sum_cents,
        early_ms: args.early_ms,
    };
    let mut config = args.job.into_config()?;
    // A window holds the epochs of its records until it closes, and the source pauses when
    // it runs more than max_epochs_ahead epochs past the last complete one: let it run
    // at least a window and a slide ahead, or the source would stall the windows it waits on.
    let epoch_ms = config.source.epoch_interval.as_millis().max(1) as u64;
    let needed = (rule.window_ms + rule.slide_ms) / epoch_ms + 10;
    config.source.max_epochs_ahead = config.source.max_epochs_ahead.max(needed);
    freshet::cli::stop_on_signals(&config.stop)?;
    let stop = config.stop.clone();
    let stopper = generator.map(|g| {
        std::thread::spawn(move || {
            let sent = g.join();
            std::thread::sleep(Duration::from_secs(3));
            stop.store(true, Ordering::SeqCst);
            sent
        })
    });
    config.drain = Duration::from_secs(2);
    let latency = latencies();
    let summary = run(
        config,
        risk::job(
            args.input,
            args.output,
            rule,
            args.print,
            Some(latency.clone()),
        ),
    )?;
    if let Some(s) = stopper {
        let sent = s
            .join()
            .expect("stopper thread")
            .expect("generator thread")?;
        eprintln!("demo: produced {sent} payments");
    }
    println!("{summary}");
    let h = latency.lock().unwrap_or_else(|e| e.into_inner());
    if h.is_empty() {
        println!("alert latency:     no alerts");
    } else {
        println!(
            "alert latency:     {} alerts; p50 {} ms, p99 {} ms, max {} ms (from the payment that tipped the window)",
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max()
        );
    }
    Ok(())
}
