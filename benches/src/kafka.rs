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
/// seconds taken. With `pace`, sends at most that many records per second (open
/// loop: record `i` is not sent before `i / pace` s).
pub fn produce_paced<F>(
    brokers: &str,
    topic: &str,
    n: u64,
    pace: Option<u64>,
    mut make: F,
) -> anyhow::Result<f64>
where
    F: FnMut(u64, &mut Vec<u8>, &mut Vec<u8>) -> (i32, i64),
{
    let producer = producer(brokers)?;
    let (mut key, mut payload) = (Vec::new(), Vec::new());
    let start = Instant::now();
    for i in 0..n {
        if let Some(rate) = pace.filter(|r| *r > 0) {
            if i % 1000 == 0 {
                let due = Duration::from_secs_f64(i as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
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

/// [`produce_paced`] as fast as the broker takes it.
pub fn produce<F>(brokers: &str, topic: &str, n: u64, make: F) -> anyhow::Result<f64>
where
    F: FnMut(u64, &mut Vec<u8>, &mut Vec<u8>) -> (i32, i64),
{
    produce_paced(brokers, topic, n, None, make)
}

/// Reads partitions `0..partitions` of `topic` from the start to their ends with
/// `threads` `BaseConsumer`s (thread `i` reads the partitions `p` with
/// `p % threads == i`), configured as a Freshet source's consumer is
/// ([`freshet::KafkaConfig::consumer_config`]), handing each payload to `each`.
/// Returns (records, seconds), timed from creating the consumers (as a job's time
/// includes its start).
pub fn raw_consume<F>(
    brokers: &str,
    topic: &str,
    partitions: i32,
    threads: usize,
    each: F,
) -> anyhow::Result<(u64, f64)>
where
    F: Fn(&[u8]) + Sync,
{
    let start = Instant::now();
    let threads = threads.max(1);
    let counts = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let each = &each;
                s.spawn(move || {
                    let mine: Vec<i32> = (0..partitions)
                        .filter(|p| *p as usize % threads == i)
                        .collect();
                    consume_partitions(brokers, topic, &mine, each)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("raw consumer panicked"))?
            })
            .collect::<anyhow::Result<Vec<u64>>>()
    })?;
    Ok((counts.iter().sum(), start.elapsed().as_secs_f64()))
}

fn consume_partitions(
    brokers: &str,
    topic: &str,
    partitions: &[i32],
    each: &(impl Fn(&[u8]) + Sync),
) -> anyhow::Result<u64> {
    if partitions.is_empty() {
        return Ok(0);
    }
    let consumer: BaseConsumer = freshet::KafkaConfig::new(brokers, format!("raw-{topic}"))
        .consumer_config()
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut at_end: std::collections::HashMap<i32, bool> =
        partitions.iter().map(|p| (*p, false)).collect();
    let mut n = 0u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    while at_end.values().any(|e| !e) {
        anyhow::ensure!(Instant::now() < deadline, "raw consume did not finish");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                at_end.insert(m.partition(), false);
                each(m.payload().unwrap_or_default());
                n += 1;
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p, true);
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    Ok(n)
}
