//! Helpers shared by the real-broker integration tests: the broker address, fresh
//! topics, test events and their reference counts, reading topics back, committed
//! offsets, running the test job (as a process or on a thread), the S3 checkpoint store.
#![allow(dead_code)]

#[path = "../../src/bin/test_job/window_count.rs"]
pub mod window_count;

use std::collections::BTreeMap;
use std::time::Duration;

use rand::SeedableRng;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use rand::Rng;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
#[allow(unused_imports)]
pub use window_count::KeyCount;
pub use window_count::{Event, WindowCount};

mod kafka;
pub use kafka::*;
mod s3;
#[allow(unused_imports)]
pub use s3::*;

/// A test knob: the environment variable `name` read as a `T`; `None` when it is unset
/// or does not parse.
pub fn knob<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
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
/// `output`, committing to `group`; its log without colour codes, for tests to read.
pub fn job_binary(input: &str, output: &str, group: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_freshet-test-job"));
    cmd.env("FRESHET_BROKERS", brokers())
        .env("NO_COLOR", "1")
        // `FRESHET_TEST_JOB_LOG` (e.g. `info,freshet=debug`) to see what a job does.
        .env(
            "RUST_LOG",
            std::env::var("FRESHET_TEST_JOB_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .args(["--input", input, "--output", output, "--group", group]);
    cmd
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

/// A job process killed when dropped, so a failing test leaves no job running (a
/// left-over job keeps the test's output pipes open).
pub struct Running(pub std::process::Child);

impl std::ops::Deref for Running {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Produces `records` (partition, key, timestamp, payload) to `topic`, waiting until
/// the broker has them all.
pub fn produce_payloads(
    topic: &str,
    records: &[(i32, String, i64, Vec<u8>)],
) -> anyhow::Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    for (partition, key, ts, payload) in records {
        let mut record = BaseRecord::to(topic)
            .partition(*partition)
            .key(key)
            .payload(payload)
            .timestamp(*ts);
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

/// A job process's resident memory from `/proc/<pid>/status`, KiB: `VmRSS` (now) and
/// `VmHWM` (its peak so far).
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("reading the job's /proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}
