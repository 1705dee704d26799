//! Talking to the broker directly: creating topics, a tuned producer that preloads a
//! topic, and a raw consume loop (the ceiling a Freshet job is compared with).

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Creates `topic` with `partitions` partitions (an existing topic is an error).
pub fn create_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let res = futures_executor::block_on(admin.create_topics([&t], &AdminOptions::new()))?;
    for r in res {
        r.map_err(|(t, e)| anyhow::anyhow!("creating topic {t}: {e}"))?;
    }
    Ok(())
}

/// One record to produce.
pub struct Out<'a> {
    /// Partition.
    pub partition: i32,
    /// Key, if any.
    pub key: Option<&'a [u8]>,
    /// Payload.
    pub payload: &'a [u8],
    /// Message timestamp, ms.
    pub timestamp: i64,
}

/// A producer tuned for throughput: lz4, 5 ms linger, 1 MiB batches, a deep queue.
pub fn producer(brokers: &str) -> anyhow::Result<ThreadedProducer<DefaultProducerContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("batch.size", "1048576")
        .set("batch.num.messages", "100000")
        .set("queue.buffering.max.messages", "2000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()?)
}

/// Produces `n` records, record `i` written by `make(i, &mut key, &mut payload)` which
/// returns its partition and timestamp; waits for every delivery. Returns the
/// seconds taken.
pub fn produce<F>(brokers: &str, topic: &str, n: u64, mut make: F) -> anyhow::Result<f64>
where
    F: FnMut(u64, &mut Vec<u8>, &mut Vec<u8>) -> (i32, i64),
{
    let producer = producer(brokers)?;
    let (mut key, mut payload) = (Vec::new(), Vec::new());
    let start = Instant::now();
    for i in 0..n {
        key.clear();
        payload.clear();
        let (partition, ts) = make(i, &mut key, &mut payload);
        let mut record = BaseRecord::to(topic)
            .partition(partition)
            .payload(&payload)
            .timestamp(ts);
        if !key.is_empty() {
            record = record.key(&key);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(start.elapsed().as_secs_f64())
}

/// Reads partitions `0..partitions` of `topic` from the start to their ends with one
/// `BaseConsumer`, handing each payload to `each`. Returns (records, seconds), timed
/// from creating the consumer (as a job's time includes its start).
pub fn raw_consume<F>(
    brokers: &str,
    topic: &str,
    partitions: i32,
    mut each: F,
) -> anyhow::Result<(u64, f64)>
where
    F: FnMut(&[u8]),
{
    let start = Instant::now();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("raw-{topic}"))
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut at_end = vec![false; partitions as usize];
    let mut n = 0u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    while at_end.iter().any(|e| !e) {
        anyhow::ensure!(Instant::now() < deadline, "raw consume did not finish");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                at_end[m.partition() as usize] = false;
                each(m.payload().unwrap_or_default());
                n += 1;
            }
            Some(Err(KafkaError::PartitionEOF(p))) => at_end[p as usize] = true,
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    Ok((n, start.elapsed().as_secs_f64()))
}
