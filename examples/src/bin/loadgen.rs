//! Load generator: a tuned producer that feeds the other examples and reports msg/s.
//!
//! It uses a `ThreadedProducer` with the knobs a confluent-kafka user sets —
//! `linger.ms`, `batch.size`, `compression.type` (lz4 by default), `acks` — and counts
//! delivery callbacks (delivered and failed) from librdkafka's thread; every second it
//! logs the send and delivery rates, and at the end prints the totals. Event time
//! (`ts`, also the message timestamp) is the wall clock at send time, so the jobs
//! downstream run live.
//!
//! Kinds: `payments` (risk-control), `readings` (iot-anomalies), `clicks` (sessionize),
//! `orders` and `customers` (enrich), `events` (window-count).
//!
//! Zero-install demo (produces to librdkafka's in-process mock cluster):
//!
//! ```text
//! cargo run --release -p freshet-examples --bin loadgen -- --demo
//! ```
//!
//! Against a real broker:
//!
//! ```text
//! scripts/kafka-broker create-topic payments 4
//! cargo run --release -p freshet-examples --bin loadgen -- \
//!     --brokers 127.0.0.1:9092 --topic payments --kind payments --rate 0 --count 1000000
//! ```
//!
//! `--rate 0` sends as fast as the producer takes messages; `--count` and `--seconds`
//! bound the run (whichever comes first).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use freshet_examples::risk::PaymentGen;
use freshet_examples::{enrich, now_ms, sessions, Event};
use rand::{Rng, SeedableRng};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    Payments,
    Readings,
    Clicks,
    Orders,
    Customers,
    Events,
}

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    about = "A tuned Kafka producer that feeds the example jobs"
)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, env = "FRESHET_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Topic to produce to.
    #[arg(long, default_value = "payments")]
    topic: String,
    /// What to produce.
    #[arg(long, value_enum, default_value = "payments")]
    kind: Kind,
    /// Messages per second (0: as fast as possible).
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Stop after this many messages (0: no limit).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Stop after this many seconds (0: no limit).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Keys (IPs, devices, users, customers).
    #[arg(long, default_value_t = 1_000)]
    keys: u64,
    /// linger.ms: how long the producer waits to fill a batch.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// batch.size in bytes.
    #[arg(long, default_value_t = 1_000_000)]
    batch_size: u64,
    /// compression.type: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "lz4")]
    compression: String,
    /// acks: 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: String,
    /// Raw librdkafka producer setting, repeatable: -X queue.buffering.max.kbytes=1048576.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    extra: Vec<String>,
    /// Produce to an in-process mock cluster instead.
    #[arg(long)]
    demo: bool,
}

/// Counts delivery callbacks.
#[derive(Default)]
struct Counts {
    delivered: AtomicU64,
    failed: AtomicU64,
}

struct Ctx(Arc<Counts>);

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.delivered.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                if self.0.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::error!(error = %e, "delivery failed");
                }
                0
            }
        };
    }
}

/// Makes the next message: key and JSON payload, at event time `ts`.
struct Gen {
    kind: Kind,
    keys: u64,
    rng: rand::rngs::StdRng,
    payments: PaymentGen,
    n: u64,
}

impl Gen {
    fn next(&mut self, ts: u64) -> anyhow::Result<(String, Vec<u8>)> {
        self.n += 1;
        let keys = self.keys.max(1);
        let rng = &mut self.rng;
        Ok(match self.kind {
            Kind::Payments => {
                let p = self.payments.next(ts);
                (p.ip.clone(), serde_json::to_vec(&p)?)
            }
            Kind::Readings => {
                let device = (self.n % keys) as u32;
                let spike = rng.gen_range(0..1000) == 0;
                let base = 20.0 + (device % 10) as f64;
                let value = if spike {
                    base + 25.0
                } else {
                    base + rng.gen_range(-1.0..1.0)
                };
                let r = freshet_examples::iot::Reading { device, ts, value };
                (device.to_string(), serde_json::to_vec(&r)?)
            }
            Kind::Clicks => {
                const PAGES: [&str; 4] = ["/", "/search", "/item", "/cart"];
                let c = sessions::Click {
                    user: rng.gen_range(0..keys),
                    page: PAGES[rng.gen_range(0..PAGES.len())].into(),
                    ts,
                };
                (c.user.to_string(), serde_json::to_vec(&c)?)
            }
            Kind::Orders => {
                let o = enrich::Order {
                    id: self.n,
                    customer: rng.gen_range(0..keys),
                    amount_cents: rng.gen_range(100..100_000),
                    ts,
                };
                (o.customer.to_string(), serde_json::to_vec(&o)?)
            }
            Kind::Customers => {
                let id = (self.n - 1) % keys;
                let c = enrich::Customer {
                    id,
                    name: format!("customer-{id}"),
                    tier: ["bronze", "silver", "gold"][(id % 3) as usize].into(),
                    country: ["DE", "FR", "US", "JP"][(id % 4) as usize].into(),
                    updated: 0,
                };
                (id.to_string(), serde_json::to_vec(&c)?)
            }
            Kind::Events => {
                let e = Event {
                    key: rng.gen_range(0..keys),
                    ts,
                    amount: rng.gen_range(-100..100),
                };
                (e.key.to_string(), serde_json::to_vec(&e)?)
            }
        })
    }
}

fn main() -> anyhow::Result<()> {
    freshet::cli::init_logging();
    let mut args = Args::parse();
    let _mock;
    if args.demo {
        let mock = MockCluster::new(1).context("starting the mock cluster")?;
        args.brokers = mock.bootstrap_servers();
        mock.create_topic(&args.topic, 4, 1)?;
        if args.count == 0 {
            args.count = 200_000;
        }
        args.rate = 0;
        _mock = mock;
    }
    let counts = Arc::new(Counts::default());
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.brokers)
        .set("linger.ms", args.linger_ms.to_string())
        .set("batch.size", args.batch_size.to_string())
        .set("compression.type", &args.compression)
        .set("acks", &args.acks)
        .set("queue.buffering.max.messages", "1000000");
    for kv in &args.extra {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("-X {kv}: expected key=value"))?;
        config.set(k, v);
    }
    let producer: ThreadedProducer<Ctx> = config
        .create_with_context(Ctx(counts.clone()))
        .context("creating the producer")?;
    let mut gen = Gen {
        kind: args.kind,
        keys: args.keys,
        rng: rand::rngs::StdRng::seed_from_u64(7),
        payments: PaymentGen::new(7, args.keys as u32, 3),
        n: 0,
    };
    if matches!(args.kind, Kind::Customers) && args.count == 0 {
        args.count = args.keys;
    }
    let start = Instant::now();
    let limit = (args.seconds > 0).then(|| Duration::from_secs(args.seconds));
    let mut sent = 0u64;
    let mut last_report = (Instant::now(), 0u64, 0u64);
    loop {
        if args.count > 0 && sent >= args.count {
            break;
        }
        if limit.is_some_and(|l| start.elapsed() >= l) {
            break;
        }
        if args.rate > 0 {
            let due = (start.elapsed().as_secs_f64() * args.rate as f64) as u64;
            if sent >= due {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        }
        let ts = now_ms();
        let (key, payload) = gen.next(ts)?;
        let mut record = BaseRecord::to(&args.topic)
            .key(&key)
            .payload(&payload)
            .timestamp(ts as i64);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err((e, _)) => return Err(e).context("producing"),
            }
        }
        sent += 1;
        let (at, s0, d0) = last_report;
        if at.elapsed() >= Duration::from_secs(1) {
            let secs = at.elapsed().as_secs_f64();
            let delivered = counts.delivered.load(Ordering::Relaxed);
            tracing::info!(
                sent,
                delivered,
                failed = counts.failed.load(Ordering::Relaxed),
                send_rate = format!("{:.0}/s", (sent - s0) as f64 / secs),
                delivery_rate = format!("{:.0}/s", (delivered - d0) as f64 / secs),
                "loadgen"
            );
            last_report = (Instant::now(), sent, delivered);
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .context("flushing")?;
    let secs = start.elapsed().as_secs_f64();
    let delivered = counts.delivered.load(Ordering::Relaxed);
    let failed = counts.failed.load(Ordering::Relaxed);
    println!(
        "loadgen: {sent} sent, {delivered} delivered, {failed} failed to '{}' in {secs:.2} s = {:.0} msg/s delivered ({:?}, linger {} ms, batch {} B, {})",
        args.topic,
        delivered as f64 / secs,
        args.kind,
        args.linger_ms,
        args.batch_size,
        args.compression
    );
    anyhow::ensure!(failed == 0, "{failed} messages were not delivered");
    Ok(())
}
