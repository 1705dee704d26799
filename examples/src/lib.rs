//! Pieces the example jobs and their tests share: the event type, a deterministic
//! generator, a producer that preloads a topic, and sequential reference results.
//!
//! Each example's logic is a function over input streams ([`risk::risk_alerts`],
//! [`iot::detect`], [`sessions::sessionize`], [`enrich::enrich`]), so the same code
//! runs under [`freshet::testing::Harness`] (no broker) and in the job binaries, whose
//! build functions ([`risk_job`], [`iot_job`], [`sessions_job`], [`enrich_job`]) add
//! the Kafka sources and sinks around it.

#![forbid(missing_docs)]

pub mod enrich;
pub mod iot;
pub mod risk;
pub mod risk_score;
pub mod sessions;

use std::collections::BTreeMap;
use std::time::Duration;

use freshet::{Job, Json, KafkaSink, KafkaSource, PrintStdout, Tumble, Windowed, WriteKafka};
use rand::{Rng, SeedableRng};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

/// Starts librdkafka's in-process mock cluster for a `--demo` run and points the job at
/// it: bounded, from the earliest offsets. Keep the cluster alive until the job ends.
pub fn start_demo(
    job: &mut freshet::JobArgs,
) -> anyhow::Result<rdkafka::mocking::MockCluster<'static, DefaultProducerContext>> {
    let mock = rdkafka::mocking::MockCluster::new(1)
        .map_err(|e| anyhow::anyhow!("starting the mock cluster: {e}"))?;
    job.brokers = mock.bootstrap_servers();
    job.bounded = true;
    job.from = freshet::StartFrom::Earliest;
    Ok(mock)
}

/// An input event: a key, an event time in ms, an amount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The key windows are counted by.
    pub key: u64,
    /// Event time, ms since the Unix epoch.
    pub ts: u64,
    /// A value carried along.
    pub amount: i64,
}

/// A window result as the window-count job writes it.
pub type WindowCount = Windowed<u64, u64>;

/// Generates `n` events over `keys` keys and `partitions` partitions, deterministic in
/// `seed`: event times advance from `start_ms` over `span_ms`, each jittered back by up
/// to `disorder_ms` (keep it below the job's out-of-orderness so none is late).
pub fn generate(
    seed: u64,
    n: usize,
    keys: u64,
    partitions: i32,
    start_ms: u64,
    span_ms: u64,
    disorder_ms: u64,
) -> Vec<(i32, Event)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let base = start_ms + span_ms * i as u64 / n.max(1) as u64;
            let ts = base
                .saturating_sub(rng.gen_range(0..=disorder_ms))
                .max(start_ms);
            let key = rng.gen_range(0..keys);
            let partition = rng.gen_range(0..partitions);
            (
                partition,
                Event {
                    key,
                    ts,
                    amount: rng.gen_range(-100..100),
                },
            )
        })
        .collect()
}

/// Produces `events` to `topic` (JSON payloads, the event time as message timestamp),
/// waiting until all are delivered.
pub fn produce(brokers: &str, topic: &str, events: &[(i32, Event)]) -> anyhow::Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    for (partition, e) in events {
        let payload = serde_json::to_vec(e)?;
        let key = e.key.to_string();
        let mut record = BaseRecord::to(topic)
            .partition(*partition)
            .key(&key)
            .payload(&payload)
            .timestamp(e.ts as i64);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(())
}

/// The per-(key, window start) counts a sequential loop computes over `events`.
pub fn reference_counts<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    window_ms: u64,
) -> BTreeMap<(u64, u64), u64> {
    let mut counts = BTreeMap::new();
    for e in events {
        *counts.entry((e.key, e.ts - e.ts % window_ms)).or_insert(0) += 1;
    }
    counts
}

/// What the window-count job does, as a build function for [`freshet::run`]: JSON events
/// from `input`, per-key counts in tumbling windows of `window_ms`, written as JSON to
/// `output` (keyed by the event key), and printed when `print` is set. Malformed messages
/// are printed to stderr with their coordinates.
pub fn window_count_job(
    input: String,
    output: String,
    window_ms: u64,
    print: bool,
) -> impl Fn(&mut Job<'_>) -> freshet::Result<()> + Send + Sync + 'static {
    move |job| {
        let streams = KafkaSource::new(input.clone(), Json::<Event>::new())
            .event_time(|e: &Event| Some(e.ts))
            .build(job)?;
        let counts = streams
            .records
            .tumble_count("count", window_ms, |e: &Event| e.key);
        if print {
            counts
                .clone()
                .print_with(job, "windows", |w: &WindowCount| {
                    format!(
                        "key={:<4} window=[{}, {}) count={}",
                        w.key, w.start, w.end, w.value
                    )
                });
        }
        counts.write_kafka(
            job,
            KafkaSink::new(output.clone(), Json::<WindowCount>::new())
                .key(|w: &WindowCount| Some(w.key.to_string().into_bytes())),
        )?;
        streams.errors.print_with(job, "malformed", |e| {
            format!(
                "malformed {}[{}]@{}: {}",
                e.topic, e.partition, e.offset, e.reason
            )
        });
        Ok(())
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One message to produce: partition (or the key's), key, timestamp, value.
pub struct Outgoing<'a, T> {
    /// Partition, or `None` to let the key pick it.
    pub partition: Option<i32>,
    /// Message key.
    pub key: String,
    /// Message timestamp, ms.
    pub ts: u64,
    /// The value, sent as JSON.
    pub value: &'a T,
}

/// Produces JSON `items` to `topic` and waits until all are delivered.
pub fn produce_json<'a, T: Serialize + 'a>(
    brokers: &str,
    topic: &str,
    items: impl IntoIterator<Item = Outgoing<'a, T>>,
) -> anyhow::Result<usize> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let mut n = 0;
    for item in items {
        let payload = serde_json::to_vec(item.value)?;
        let mut record = BaseRecord::to(topic)
            .key(&item.key)
            .payload(&payload)
            .timestamp(item.ts as i64);
        if let Some(p) = item.partition {
            record = record.partition(p);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        n += 1;
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(n)
}

/// Prints malformed messages of a source on stdout, with their coordinates.
fn report_malformed(
    job: &Job<'_>,
    errors: timely::dataflow::StreamVec<'_, freshet::Time, freshet::SourceError>,
) {
    errors.print_with(job, "malformed", |e| {
        format!(
            "malformed {}[{}]@{}: {}",
            e.topic, e.partition, e.offset, e.reason
        )
    });
}

/// Event-to-alert latencies in ms, shared by the workers of a process.
pub type Latencies = std::sync::Arc<std::sync::Mutex<hdrhistogram::Histogram<u64>>>;

/// An empty latency histogram (1 ms to 1 hour, 3 significant digits).
pub fn latencies() -> Latencies {
    std::sync::Arc::new(std::sync::Mutex::new(
        hdrhistogram::Histogram::new_with_bounds(1, 3_600_000, 3).expect("histogram bounds"),
    ))
}

/// The risk-control job: JSON [`risk::Payment`]s from `input`, [`risk::RiskAlert`]s as
/// JSON to `output` keyed by IP, optionally printed; each alert's latency (from the
/// payment that tipped its window to the alert) is recorded in `latency` if given.
pub fn risk_job(
    input: String,
    output: String,
    rule: risk::RiskRule,
    print: bool,
    latency: Option<Latencies>,
) -> impl Fn(&mut Job<'_>) -> freshet::Result<()> + Send + Sync + 'static {
    use timely::dataflow::operators::Inspect;
    move |job| {
        let s = KafkaSource::new(input.clone(), Json::<risk::Payment>::new())
            .event_time(|p: &risk::Payment| Some(p.ts))
            .build(job)?;
        let mut alerts = risk::risk_alerts(s.records, rule);
        if let Some(h) = latency.clone() {
            alerts = alerts.inspect(move |a: &risk::RiskAlert| {
                let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
                h.saturating_record(a.latency_ms().max(1) as u64);
            });
        }
        if print {
            alerts
                .clone()
                .print_with(job, "alerts", |a: &risk::RiskAlert| {
                    format!(
                        "ALERT ip={} window=[{}, {}) count={} sum={:.2} early={} latency={} ms",
                        a.ip,
                        a.start,
                        a.end,
                        a.stats.count,
                        a.stats.sum_cents as f64 / 100.0,
                        a.early,
                        a.latency_ms()
                    )
                });
        }
        alerts.write_kafka(
            job,
            KafkaSink::new(output.clone(), Json::<risk::RiskAlert>::new())
                .key(|a: &risk::RiskAlert| Some(a.ip.clone().into_bytes())),
        )?;
        report_malformed(job, s.errors);
        Ok(())
    }
}

/// The IoT job: JSON [`iot::Reading`]s from `input`; anomalies to `anomalies`, silent
/// devices to `status` (both JSON [`iot::IotAlert`]s keyed by device).
pub fn iot_job(
    input: String,
    anomalies: String,
    status: String,
    rule: iot::IotRule,
    print: bool,
) -> impl Fn(&mut Job<'_>) -> freshet::Result<()> + Send + Sync + 'static {
    use timely::dataflow::operators::vec::Filter;
    move |job| {
        let s = KafkaSource::new(input.clone(), Json::<iot::Reading>::new())
            .event_time(|r: &iot::Reading| Some(r.ts))
            .build(job)?;
        let alerts = iot::detect(s.records, rule);
        if print {
            alerts.clone().print_stdout(job, "iot");
        }
        let key = |a: &iot::IotAlert| {
            let d = match a {
                iot::IotAlert::Anomaly { device, .. } | iot::IotAlert::Silent { device, .. } => {
                    device
                }
            };
            Some(d.to_string().into_bytes())
        };
        alerts.clone().filter(|a| a.is_anomaly()).write_kafka(
            job,
            KafkaSink::new(anomalies.clone(), Json::<iot::IotAlert>::new()).key(key),
        )?;
        alerts.filter(|a| !a.is_anomaly()).write_kafka(
            job,
            KafkaSink::new(status.clone(), Json::<iot::IotAlert>::new()).key(key),
        )?;
        report_malformed(job, s.errors);
        Ok(())
    }
}

/// The sessionization job: JSON [`sessions::Click`]s from `input`, one JSON
/// [`sessions::SessionSummary`] per session to `output`, keyed by user.
pub fn sessions_job(
    input: String,
    output: String,
    gap_ms: u64,
    print: bool,
) -> impl Fn(&mut Job<'_>) -> freshet::Result<()> + Send + Sync + 'static {
    move |job| {
        let s = KafkaSource::new(input.clone(), Json::<sessions::Click>::new())
            .event_time(|c: &sessions::Click| Some(c.ts))
            .build(job)?;
        let summaries = sessions::sessionize(s.records, gap_ms);
        if print {
            summaries.clone().print_stdout(job, "sessions");
        }
        summaries.write_kafka(
            job,
            KafkaSink::new(output.clone(), Json::<sessions::SessionSummary>::new())
                .key(|s: &sessions::SessionSummary| Some(s.user.to_string().into_bytes())),
        )?;
        report_malformed(job, s.errors);
        Ok(())
    }
}

/// The enrichment job: JSON [`enrich::Order`]s from `orders`, joined with the table of
/// JSON [`enrich::Customer`]s in `customers` (read from its start, never committed),
/// JSON [`enrich::EnrichedOrder`]s to `output`, keyed by order id.
pub fn enrich_job(
    orders: String,
    customers: String,
    output: String,
    print: bool,
) -> impl Fn(&mut Job<'_>) -> freshet::Result<()> + Send + Sync + 'static {
    move |job| {
        let o = KafkaSource::new(orders.clone(), Json::<enrich::Order>::new())
            .event_time(|o: &enrich::Order| Some(o.ts))
            .build(job)?;
        let c = KafkaSource::new(customers.clone(), Json::<enrich::Customer>::new())
            .event_time(|c: &enrich::Customer| Some(c.updated))
            .table(job.source_config())
            .build(job)?;
        let enriched = enrich::enrich(o.records, c.records);
        if print {
            enriched.clone().print_stdout(job, "enriched");
        }
        enriched.write_kafka(
            job,
            KafkaSink::new(output.clone(), Json::<enrich::EnrichedOrder>::new())
                .key(|e: &enrich::EnrichedOrder| Some(e.order.id.to_string().into_bytes())),
        )?;
        report_malformed(job, o.errors);
        report_malformed(job, c.errors);
        Ok(())
    }
}
