//! Helpers shared by the real-broker integration tests: the broker address, fresh
//! topics, test events and their reference counts, reading topics back, committed
//! offsets, running the test job (as a process or on a thread).
#![allow(dead_code)]

#[path = "../../src/bin/test_job/window_count.rs"]
pub mod window_count;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use rand::Rng;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
pub use window_count::{Event, WindowCount};

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
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    got.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// Generates and produces events to a fresh topic; returns the topic and the events.
pub fn preload(
    prefix: &str,
    partitions: i32,
    seed: u64,
    n: usize,
    span_ms: u64,
) -> (String, Vec<(i32, Event)>) {
    let topic = create_topic(prefix, partitions);
    let events = generate(seed, n, 16, partitions, 1_700_000_000_000, span_ms, 200);
    produce(&brokers(), &topic, &events).expect("producing test events");
    (topic, events)
}

/// A hostfile with two free loopback ports, for `-n 2` runs.
pub fn hostfile(processes: usize) -> tempfile_path::Path {
    let listeners: Vec<_> = (0..processes)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let lines: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    drop(listeners);
    let path = std::env::temp_dir().join(unique("freshet-hosts"));
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    tempfile_path::Path(path)
}

/// A file path removed when dropped.
pub mod tempfile_path {
    /// The path.
    pub struct Path(pub std::path::PathBuf);
    impl Drop for Path {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// The test job (`freshet-test-job`: 1 s window counts) reading `input`, writing
/// `output`, committing to `group`.
pub fn job_binary(input: &str, output: &str, group: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_freshet-test-job"));
    cmd.env("FRESHET_BROKERS", brokers())
        .env("RUST_LOG", "warn")
        .args(["--input", input, "--output", output, "--group", group]);
    cmd
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs, on a thread, a live job counting `topic`'s JSON [`Event`]s per key in 1 s
/// tumbling windows (event time from the payload) into `counts`.
pub fn spawn_window_count(
    config: freshet::JobConfig,
    topic: &str,
    counts: freshet::Collected<WindowCount>,
) -> std::thread::JoinHandle<freshet::Result<freshet::Summary>> {
    use freshet::{Collect, Json, KafkaSource, Tumble};
    let topic = topic.to_string();
    std::thread::spawn(move || {
        freshet::run(config, move |job| {
            let s = KafkaSource::new(topic.clone(), Json::<Event>::new())
                .event_time(|e: &Event| Some(e.ts))
                .build(job)?;
            s.records
                .tumble_count("count", 1000, |e| e.key)
                .collect_into(job, "counts", counts.clone());
            Ok(())
        })
    })
}

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
            let amount = rng.gen_range(-100..100);
            (partition, Event { key, ts, amount })
        })
        .collect()
}

/// Produces `events` to `topic` (JSON payloads keyed by the event key, the event time as
/// message timestamp), waiting until all are delivered.
pub fn produce(brokers: &str, topic: &str, events: &[(i32, Event)]) -> anyhow::Result<()> {
    let mut base = ClientConfig::new();
    base.set("bootstrap.servers", brokers)
        .set("compression.type", "lz4");
    produce_with(&base, topic, events)
}

/// [`produce`] through a producer with settings `base` (bootstrap, TLS, compression, ...).
pub fn produce_with(
    base: &ClientConfig,
    topic: &str,
    events: &[(i32, Event)],
) -> anyhow::Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> = base
        .clone()
        .set("linger.ms", "5")
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
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
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
