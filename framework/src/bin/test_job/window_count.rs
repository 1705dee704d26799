//! The test job's logic, shared with the integration tests that check its output: JSON
//! [`Event`]s counted per key in tumbling event-time windows, written as JSON.

use freshet::operators::Session;
use freshet::{Job, Json, KafkaSink, KafkaSource, PrintStdout, Tumble, Windowed, WriteKafka};
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

/// A window result as the job writes it.
pub type WindowCount = Windowed<u64, u64>;

/// The job as a build function for [`freshet::run`]: [`Event`]s from `input`, per-key
/// counts in tumbling windows of `window_ms` to `output` (keyed by the event key);
/// malformed messages printed on stdout with their coordinates.
///
/// With `sessions = Some((topic, gap_ms))` it also counts per key in session windows of
/// that gap, written to that topic (keyed by the event key).
pub fn job(
    input: String,
    output: String,
    window_ms: u64,
    sessions: Option<(String, u64)>,
) -> impl Fn(&mut Job<'_>) -> freshet::Result<()> + Send + Sync + 'static {
    move |job| {
        let streams = KafkaSource::new(input.clone(), Json::<Event>::new())
            .event_time(|e: &Event| Some(e.ts))
            .build(job)?;
        if let Some((topic, gap)) = &sessions {
            streams
                .records
                .clone()
                .session_count("sessions", *gap, |e: &Event| e.key)
                .write_kafka(
                    job,
                    KafkaSink::new(topic.clone(), Json::<WindowCount>::new())
                        .key(|w: &WindowCount| Some(w.key.to_string().into_bytes())),
                )?;
        }
        let counts = streams
            .records
            .tumble_count("count", window_ms, |e: &Event| e.key);
        counts.write_kafka(
            job,
            KafkaSink::new(output.clone(), Json::<WindowCount>::new())
                .key(|w: &WindowCount| Some(w.key.to_string().into_bytes())),
        )?;
        streams.errors.print_with(job, "malformed", |e| {
            let (topic, partition, offset) = (&e.topic, e.partition, e.offset);
            format!("malformed {topic}[{partition}]@{offset}: {}", e.reason)
        });
        Ok(())
    }
}
