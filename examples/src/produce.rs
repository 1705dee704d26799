//! Preloading topics: JSON messages produced and waited for.

use std::time::Duration;

use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use serde::Serialize;

use crate::window_count::Event;

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

/// Produces `events` to `topic` (JSON payloads keyed by the event key, the event time as
/// message timestamp), waiting until all are delivered.
pub fn produce(brokers: &str, topic: &str, events: &[(i32, Event)]) -> anyhow::Result<()> {
    let items = events.iter().map(|(partition, e)| Outgoing {
        partition: Some(*partition),
        key: e.key.to_string(),
        ts: e.ts,
        value: e,
    });
    produce_json(brokers, topic, items)?;
    Ok(())
}
