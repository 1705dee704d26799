//! Pieces the example jobs and their tests share: the event type, a deterministic
//! generator, a producer that preloads a topic, and sequential reference results.

#![forbid(missing_docs)]

use std::collections::BTreeMap;
use std::time::Duration;

use freshet::{Job, Json, KafkaSink, KafkaSource, PrintStdout, Tumble, Windowed, WriteKafka};
use rand::{Rng, SeedableRng};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

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
