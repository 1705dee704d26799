//! The dead-letter sink: records that could not be processed, written durably with
//! where they came from.
//!
//! A dead letter is a [`SourceError`]: the original key and payload (cut to 64 KiB; a
//! record a sink's producer refused is cut to fit that producer's `message.max.bytes`),
//! and the headers `freshet.topic`, `freshet.partition`, `freshet.offset` and
//! `freshet.reason`. With `--dead-letter-topic` every Kafka source writes its malformed
//! and late messages there, and Kafka sinks with `--poison-output dead-letter` write the
//! records the producer refuses (topic = the sink's, partition and offset -1). It is a
//! Kafka sink like any other: a dead letter is acknowledged (and its input offsets may
//! be committed) once the broker has it.

use timely::dataflow::StreamVec;

use crate::codec::Encoder;
use crate::config::PoisonOutput;
use crate::error::Result;
use crate::job::Job;
use crate::sink::kafka::{KafkaSink, WriteKafka};
use crate::source::SourceError;
use crate::time::Time;

/// Encodes a dead letter as its original payload (empty for a null payload).
#[derive(Clone, Copy, Debug, Default)]
pub struct OriginalPayload;

impl Encoder<SourceError> for OriginalPayload {
    fn encode(&self, item: &SourceError, buf: &mut Vec<u8>) -> Result<(), String> {
        buf.extend_from_slice(item.payload.as_deref().unwrap_or_default());
        Ok(())
    }
}

/// Extension trait: write dead letters to a topic.
pub trait WriteDeadLetters {
    /// Writes each record of source `from` (its operator's name), with its provenance in
    /// headers, to `topic`; a dead letter the producer refuses fails the job. The sink is
    /// named `DeadLetters(<from>)`: every source of a job has its own.
    fn write_dead_letters(self, job: &Job<'_>, topic: &str, from: &str) -> Result<()>;
}

impl<'scope> WriteDeadLetters for StreamVec<'scope, Time, SourceError> {
    fn write_dead_letters(self, job: &Job<'_>, topic: &str, from: &str) -> Result<()> {
        let sink = KafkaSink::new(topic, OriginalPayload)
            .name(format!("DeadLetters({from})"))
            .key(|e: &SourceError| e.key.clone())
            .headers(|e: &SourceError| {
                vec![
                    ("freshet.topic", e.topic.clone()),
                    ("freshet.partition", e.partition.to_string()),
                    ("freshet.offset", e.offset.to_string()),
                    ("freshet.reason", e.reason.clone()),
                    ("freshet.null_payload", e.payload.is_none().to_string()),
                ]
            })
            .poison_output(PoisonOutput::Fail);
        self.write_kafka(job, sink)
    }
}
