//! The Kafka source: partitions in, event-timed records out.
//!
//! Each worker reads the partitions statically assigned to it ([`assign::owner`]) and
//! holds one capability per output at `(W, E)`: `W` its event-time watermark (least
//! partition watermark, see [`partition::worker_watermark`]), `E` its epoch. A record
//! with event time `t >= W` is emitted at `(t, E)`, grouped by time; a record with
//! `t < W` goes to the late stream; a message that cannot be decoded, or whose
//! timestamp is unusable, goes to the error stream with its coordinates.

pub mod assign;
mod by_time;
pub use by_time::ByTime;
mod consumer;
pub mod flow;
mod metrics;

pub use consumer::{SourceConsumer, SourceContext};
mod operator;
pub mod partition;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;

use crate::codec::Decoder;
use crate::config::SourceConfig;
use crate::error::Result;
use crate::job::Job;
use crate::time::{Late, Time};

/// A message that could not become a record, with where it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceError {
    /// Topic it was read from.
    pub topic: String,
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Why it was rejected.
    pub reason: String,
    /// The message key, if any.
    pub key: Option<Vec<u8>>,
    /// The raw payload (cut to 64 KiB), if any.
    pub payload: Option<Vec<u8>>,
}

/// The three streams a source produces.
pub struct SourceStreams<'scope, D> {
    /// Decoded records at `(event time, epoch)`.
    pub records: StreamVec<'scope, Time, D>,
    /// Messages that failed to decode or had an unusable timestamp.
    pub errors: StreamVec<'scope, Time, SourceError>,
    /// Records behind the watermark, at the source's current time.
    pub late: StreamVec<'scope, Time, Late<D>>,
}

/// Declares a source's error and late streams (the job has no dead-letter topic), so a
/// job that leaves one unconnected is told so at start ([`freshet_operators::unconnected`]).
pub(crate) fn declare_side_streams<D>(streams: &SourceStreams<'_, D>, operator: &str) {
    use freshet_operators::unconnected::declare;
    let errors = "malformed records; the job has no --dead-letter-topic";
    declare(&streams.errors, operator, "errors", errors);
    let late = "records behind the watermark; the job has no --dead-letter-topic";
    declare(&streams.late, operator, "late", late);
}

type EventTimeFn<D> = Arc<dyn Fn(&D) -> Option<u64> + Send + Sync>;

/// Builder for a Kafka source over one topic.
///
/// ```no_run
/// # use freshet::{Job, KafkaSource, codec::Json};
/// # fn build(job: &mut Job<'_>) -> freshet::Result<()> {
/// #[derive(serde::Deserialize, Clone)]
/// struct Click { user: String, ts: u64 }
/// let clicks = KafkaSource::new("clicks", Json::<Click>::new())
///     .event_time(|c: &Click| Some(c.ts))
///     .build(job)?;
/// # Ok(()) }
/// ```
pub struct KafkaSource<C: Decoder> {
    topic: String,
    decoder: C,
    event_time: Option<EventTimeFn<C::Output>>,
    config: Option<SourceConfig>,
    commit: bool,
}

impl<C: Decoder> KafkaSource<C> {
    /// A source over `topic`, decoding with `decoder`, event time from the message timestamp.
    pub fn new(topic: impl Into<String>, decoder: C) -> Self {
        KafkaSource {
            topic: topic.into(),
            decoder,
            event_time: None,
            config: None,
            commit: true,
        }
    }

    /// Takes event time (ms) from the decoded record instead of the message timestamp;
    /// `None` sends the record to the error stream.
    pub fn event_time<F>(mut self, f: F) -> Self
    where
        F: Fn(&C::Output) -> Option<u64> + Send + Sync + 'static,
    {
        self.event_time = Some(Arc::new(f));
        self
    }

    /// Overrides the job's source settings for this source.
    pub fn config(mut self, config: SourceConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// Never commits this source's offsets to the consumer group: for a table side
    /// (e.g. a compacted topic of reference data joined with
    /// [`crate::operators::Lookup`]), whose reader must see the whole table. Use it
    /// with [`crate::StartFrom::Earliest`] in the source's [`SourceConfig`] (see
    /// [`KafkaSource::table`]). Under checkpoints its positions are still in every
    /// checkpoint, and a restore resumes it there.
    pub fn no_commit(mut self) -> Self {
        self.commit = false;
        self
    }

    /// A table side: `start` forced to earliest and offsets never committed; other
    /// settings from `config` (the job's source settings, usually).
    ///
    /// Without a checkpoint to restore, the table is read from its start. A restored
    /// checkpoint holds the table as the lookup had it (its operator's part) and the
    /// table source's positions, so the source resumes there and reads only what was
    /// written since: a restart does not wait for the whole table again, and upserts
    /// the topic no longer holds (retention, compaction) are not lost.
    ///
    /// Decoded with [`crate::codec::Upserts`], a table's null payloads (tombstones of a
    /// compacted topic) come through as [`crate::codec::Upsert`]s with no value, at the
    /// message timestamp, rather than on the error stream; mapped to `(key,
    /// Option<value>)` they delete their key in
    /// [`crate::operators::Lookup::lookup_upserts_with`] (`framework/tests/table.rs`).
    pub fn table(self, config: &SourceConfig) -> Self {
        let config = SourceConfig {
            start: crate::StartFrom::Earliest,
            ..config.clone()
        };
        self.config(config).no_commit()
    }

    /// Adds the source to the job's dataflow.
    pub fn build<'scope>(self, job: &Job<'scope>) -> Result<SourceStreams<'scope, C::Output>>
    where
        C::Output: Clone + 'static,
    {
        let config = self.config.unwrap_or_else(|| job.source_config().clone());
        config.validate()?;
        let reader = consumer::open(job, &self.topic, &config, self.commit)?;
        let table = !self.commit;
        let (streams, dead) =
            operator::render(job, reader, self.decoder, self.event_time, config, table);
        match job.shared().dead_letter_topic() {
            Some(topic) => {
                use crate::sink::dead_letter::WriteDeadLetters;
                dead.write_dead_letters(job, &topic, &format!("KafkaSource({})", self.topic))?;
            }
            // Without a dead-letter topic they go only where the job connects them: a
            // stream it leaves unconnected is named when the job starts.
            None => declare_side_streams(&streams, &format!("KafkaSource({})", self.topic)),
        }
        Ok(streams)
    }
}
