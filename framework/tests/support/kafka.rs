//! Kafka helpers every real-broker test uses: the broker address, fresh topics, reading
//! topics back, committed offsets, waiting for a condition. The framework's tests and the
//! examples' tests include this one file.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::Rng;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The broker the tests use: `FRESHET_BROKERS`, default 127.0.0.1:9092 (started by
/// `scripts/kafka-broker start`, which `.ci/run` calls).
pub fn brokers() -> String {
    std::env::var("FRESHET_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A name no other test or run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::thread_rng().gen::<u64>())
}

/// Creates a fresh topic with `partitions` partitions and returns its name.
pub fn create_topic(prefix: &str, partitions: i32) -> String {
    create_topic_with(&plain(), prefix, partitions)
}

/// Client settings for the shared test broker: just its bootstrap address.
pub fn plain() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers());
    c
}

/// Creates a fresh topic through a client with settings `base` (bootstrap, TLS, ...).
pub fn create_topic_with(base: &ClientConfig, prefix: &str, partitions: i32) -> String {
    let name = unique(prefix);
    let admin: AdminClient<DefaultClientContext> = base.create().expect("admin client");
    let topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
    let res = futures_executor::block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .unwrap_or_else(|e| panic!("creating topic {name} on {:?}: {e} (is the broker running? scripts/kafka-broker start)", base.get("bootstrap.servers")));
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
    name
}

/// A message read back: partition, offset, payload.
pub type Read = (i32, i64, Option<Vec<u8>>);

/// Reads every partition of `topic` from the start to its end (end-of-partition events).
pub fn read_topic(topic: &str, partitions: i32) -> Vec<Read> {
    read_topic_with(&plain(), topic, partitions)
}

/// [`read_topic`] through a client with settings `base` (bootstrap, TLS, ...).
pub fn read_topic_with(base: &ClientConfig, topic: &str, partitions: i32) -> Vec<Read> {
    let consumer: BaseConsumer = base
        .clone()
        .set("group.id", unique("reader"))
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut at_end = vec![false; partitions as usize];
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while at_end.iter().any(|e| !e) {
        assert!(
            Instant::now() < deadline,
            "reading {topic} did not reach the end of every partition"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                at_end[m.partition() as usize] = false;
                out.push((m.partition(), m.offset(), m.payload().map(<[u8]>::to_vec)));
            }
            Some(Err(KafkaError::PartitionEOF(p))) => at_end[p as usize] = true,
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// Reads `topic` as [`read_topic`] does, again until it holds at least `min` records
/// (what a finished run must have written), at most 60 s: a read right after a bounded
/// run once found one partition's records of one worker missing. Fewer after 60 s fails
/// the test: output lost, not late.
pub fn read_topic_min(topic: &str, partitions: i32, min: u64) -> Vec<Read> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let read = read_topic(topic, partitions);
        if read.len() as u64 >= min {
            return read;
        }
        assert!(
            Instant::now() < deadline,
            "{topic} holds {} records after 60 s, fewer than {min}",
            read.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Decodes JSON payloads read back from a topic.
pub fn decode<T: serde::de::DeserializeOwned>(read: &[Read]) -> Vec<T> {
    read.iter()
        .map(|(p, o, b)| {
            serde_json::from_slice(b.as_deref().unwrap_or_default())
                .unwrap_or_else(|e| panic!("{p}@{o}: {e}"))
        })
        .collect()
}

/// Per partition, the offset after the last message: its end.
pub fn ends(read: &[Read]) -> BTreeMap<i32, i64> {
    let mut ends = BTreeMap::new();
    for (p, o, _) in read {
        let e = ends.entry(*p).or_insert(0);
        *e = (*e).max(o + 1);
    }
    ends
}

/// The offsets `group` has committed for `topic` (partitions without a commit are left out).
pub fn committed(group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    committed_by(&group_client(group), topic, partitions)
}

/// A client of `group` for reading its committed offsets repeatedly.
pub fn group_client(group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer")
}

/// The offsets committed for `topic` by the group of `consumer`.
pub fn committed_by(consumer: &BaseConsumer, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    try_committed_by(consumer, topic, partitions).expect("committed offsets")
}

/// [`committed_by`], or the client's error (a broker too busy to answer within 10 s): for
/// polling loops, which ask again.
pub fn try_committed_by(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
) -> Result<BTreeMap<i32, i64>, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(got
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A record read back with its headers (values as strings): how tests read dead letters.
pub struct Headed {
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its headers, in order.
    pub headers: Vec<(String, String)>,
}

impl Headed {
    /// The value of header `name` (empty if it has none).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

/// Every record of partition 0 of `topic` with its headers, read as a consumer would,
/// to the end of the partition once it holds at least `min` (30 s at most).
pub fn read_headed(topic: &str, min: usize) -> Vec<Headed> {
    let consumer: BaseConsumer = plain()
        .set("group.id", unique("headed-reader"))
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "reading {topic} to its end");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| {
                                let v = x.value.map(String::from_utf8_lossy);
                                (x.key.to_string(), v.unwrap_or_default().to_string())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Headed {
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
            Some(Err(KafkaError::PartitionEOF(_))) if out.len() >= min => return out,
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => panic!("reading {topic}: {e}"),
        }
    }
}

/// The test broker's log (`scripts/kafka-broker` writes it to `$FRESHET_BROKER_DIR`,
/// default `.broker/` at the repository's root), if it is on this machine.
fn broker_log() -> std::path::PathBuf {
    std::env::var_os("FRESHET_BROKER_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.broker"))
        .join("broker.log")
}

/// Where the broker's log ends now: [`broker_errors_since`] reads what it logs after.
pub fn broker_log_mark() -> u64 {
    std::fs::metadata(broker_log()).map_or(0, |m| m.len())
}

/// The error and warning lines the broker logged since `mark` (other than connections
/// its clients closed): what a test prints to tell a broker fault from its own. Empty if
/// the log is not on this machine.
pub fn broker_errors_since(mark: u64) -> Vec<String> {
    use std::io::{Read, Seek};
    let Ok(mut file) = std::fs::File::open(broker_log()) else {
        return Vec::new();
    };
    let mut text = String::new();
    if file.seek(std::io::SeekFrom::Start(mark)).is_err() || file.read_to_string(&mut text).is_err()
    {
        return Vec::new();
    }
    let closed = ["BrokenPipe", "ConnectionReset", "UnexpectedEof"];
    text.lines()
        .filter(|l| {
            (l.contains("ERROR") || l.contains("WARN")) && !closed.iter().any(|c| l.contains(c))
        })
        .map(without_colours)
        .collect()
}

/// `line` without its terminal colour codes (`ESC [ ... m`).
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
