//! Risk scoring: a decision for every payment within milliseconds. Per payment, features
//! over the minute that ends at it — per source IP the count, sum and distinct users,
//! per user the count, sum and this amount against their mean — computed with rolling
//! (OVER) windows, scored by a logistic regression whose weights are read from a JSON
//! file (`--weights`, default: the shipped `examples/data/risk-weights.json`), and a
//! decision (`approve` / `review` / `block`, with the features and the score) written
//! to the decisions topic keyed by payment id. Malformed messages and payments too late
//! to score go to the errors topic. At the end it prints the time from the moment the
//! job's consumer handed each payment over to the moment its decision was handed to the
//! producer (p50/p99/p99.9/max).
//!
//! `--mode on-arrival` (default) decides at once from the payments seen so far;
//! `--mode exact` waits for the watermark (`--out-of-orderness-ms`) so every earlier
//! payment is counted. See `freshet_operators::rolling` and `docs/guide.md`.
//!
//! Zero-install demo (librdkafka's in-process mock cluster; a generator thread produces
//! live payments, event time = now, at `--demo-rate` per second for `--demo-seconds`;
//! the job then stops as on SIGTERM: drains, commits, prints its summary):
//!
//! ```text
//! cargo run --release -p freshet-examples --bin risk-score -- --demo
//! ```
//!
//! Against a real broker (feed it with the load generator):
//!
//! ```text
//! scripts/kafka-broker create-topic payments 4
//! scripts/kafka-broker create-topic risk-decisions 4
//! scripts/kafka-broker create-topic risk-errors 1
//! cargo run --release -p freshet-examples --bin loadgen -- --topic payments --kind payments --keys 100000 --rate 5000 --seconds 60 &
//! cargo run --release -p freshet-examples --bin risk-score -- \
//!     --brokers 127.0.0.1:9092 --input payments --decisions risk-decisions --errors risk-errors --print
//! ```
//!
//! Payments look like `{"id":1,"ip":"10.66.0.1","user":7,"amount_cents":1250,"ts":1700000000123}`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use freshet::operators::RollingMode;
use freshet::{run, JobArgs, ProducerSettings};
use freshet_examples::risk::PaymentGen;
use freshet_examples::risk_score::{hand_over, risk_score_job, Model, ScoreJob, ScoreRule};
use freshet_examples::{now_ms, produce_json, start_demo, Outgoing};

/// `--mode`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// Decide at once, from the payments seen so far.
    OnArrival,
    /// Decide once the watermark passes the payment: every earlier payment counted.
    Exact,
}

#[derive(Parser, Debug)]
#[command(
    name = "risk-score",
    disable_help_flag = true,
    about = "A decision per payment from rolling per-IP and per-user features and a logistic regression"
)]
struct Args {
    #[command(flatten)]
    job: JobArgs,
    /// Topic to read payments from.
    #[arg(long, default_value = "payments")]
    input: String,
    /// Topic to write decisions to (keyed by payment id).
    #[arg(long, default_value = "risk-decisions")]
    decisions: String,
    /// Topic to write malformed messages and too-late payments to.
    #[arg(long, default_value = "risk-errors")]
    errors: String,
    /// When a decision is taken.
    #[arg(long, value_enum, default_value = "on-arrival")]
    mode: Mode,
    /// Feature range, ms.
    #[arg(long, default_value_t = 60_000)]
    range_ms: u64,
    /// Late payments up to this far behind the watermark are still scored, ms.
    #[arg(long, default_value_t = 5_000)]
    lateness_ms: u64,
    /// Model weights (JSON); default: the shipped examples/data/risk-weights.json.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// The decisions producer's linger.ms.
    #[arg(long, default_value_t = 1)]
    linger_ms: u64,
    /// Print every decision that is not an approval, and every error.
    #[arg(long)]
    print: bool,
    /// Run on an in-process mock Kafka cluster fed by a live generator.
    #[arg(long)]
    demo: bool,
    /// Demo: payments per second.
    #[arg(long, default_value_t = 2_000)]
    demo_rate: u64,
    /// Demo: how long the generator runs, seconds.
    #[arg(long, default_value_t = 10)]
    demo_seconds: u64,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

fn main() -> anyhow::Result<()> {
    freshet::cli::init_logging();
    let mut args = Args::parse();
    let model = match &args.weights {
        Some(path) => Model::load(path)?,
        None => Model::shipped(),
    };
    let _mock;
    let mut generator = None;
    if args.demo {
        let mock = start_demo(&mut args.job)?;
        args.job.bounded = false; // live: stopped after the generator ends
        args.print = true;
        mock.create_topic(&args.input, 4, 1)?;
        mock.create_topic(&args.decisions, 4, 1)?;
        mock.create_topic(&args.errors, 1, 1)?;
        _mock = mock;
        let (brokers, topic) = (args.job.brokers.clone(), args.input.clone());
        let (rate, seconds) = (args.demo_rate.max(1), args.demo_seconds);
        generator = Some(std::thread::spawn(move || -> anyhow::Result<u64> {
            // 50 attacking IPs take a fifth of the payments.
            let mut g = PaymentGen::new(1, 100_000, 50);
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
    let mode = match args.mode {
        Mode::OnArrival => RollingMode::OnArrival,
        Mode::Exact => RollingMode::Exact,
    };
    let rule = ScoreRule {
        range_ms: args.range_ms,
        mode,
        lateness_ms: args.lateness_ms,
        model,
    };
    let mut config = args.job.into_config()?;
    // The rolling windows hold the epochs of their state for range + lateness, and the
    // source pauses when it runs more than max_epochs_ahead epochs past the last complete
    // one: let it run that far ahead, or it would stall the state it waits on.
    let epoch_ms = config.source.epoch_interval.as_millis().max(1) as u64;
    let needed = (rule.range_ms + rule.lateness_ms) / epoch_ms + 10;
    config.source.max_epochs_ahead = config.source.max_epochs_ahead.max(needed);
    freshet::cli::stop_on_signals(&config.stop)?;
    let stop = config.stop.clone();
    let stopper = generator.map(|g| {
        std::thread::spawn(move || {
            let sent = g.join();
            std::thread::sleep(Duration::from_secs(2));
            stop.store(true, Ordering::SeqCst);
            sent
        })
    });
    config.drain = Duration::from_secs(2);
    let latency = hand_over();
    let summary = run(
        config,
        risk_score_job(ScoreJob {
            input: args.input,
            decisions: args.decisions,
            errors: args.errors,
            rule,
            producer: ProducerSettings {
                linger: Duration::from_millis(args.linger_ms),
                ..ProducerSettings::default()
            },
            print: args.print,
            latency: Some(latency.clone()),
        }),
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
        println!("hand-over latency: no decisions");
    } else {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "hand-over latency: {} decisions; p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms (consumer hand-over to producer hand-over, {:?})",
            h.len(),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1000.0,
            mode
        );
    }
    Ok(())
}
