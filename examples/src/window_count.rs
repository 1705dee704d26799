//! The window-count example: JSON events counted per key in tumbling windows.

use std::collections::BTreeMap;

use freshet::{Job, Json, KafkaSink, KafkaSource, PrintStdout, Tumble, Windowed, WriteKafka};
use rand::{Rng, SeedableRng};
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
pub fn job(
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
