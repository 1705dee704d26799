//! Flow control on the real broker: a live job whose windows hold epochs longer than the
//! flow-control bound (state in memory, `--no-checkpoints`) must not wait forever for its
//! own windows to close.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use freshet::{JobConfig, KafkaConfig, StartFrom};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use support::*;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn windows_longer_than_the_flow_control_bound_still_close() {
    let topic = create_topic("flow", 1);
    let counts = Arc::new(Mutex::new(Vec::new()));
    let mut config = JobConfig::new(KafkaConfig::new(brokers(), unique("flow-group")));
    config.source.start = StartFrom::Earliest;
    config.source.epoch_interval = Duration::from_millis(20);
    config.source.max_epochs_ahead = 5; // 100 ms, far shorter than the 1 s windows
    config.source.out_of_orderness = Duration::ZERO;
    config.source.idle_timeout = Duration::from_secs(600);
    // State in memory: windows hold their epochs until they close, which is what makes
    // the flow-control bound wait on them (with checkpoints they release epochs at
    // every checkpoint, and the source has no reason to pause here).
    config.checkpoint.enabled = false;
    let stop = config.stop.clone();
    let job = spawn_window_count(config, &topic, counts.clone());

    // Live input for 4 s: event time is the wall clock.
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let mut sent = Vec::new();
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let e = Event {
            key: sent.len() as u64 % 3,
            ts: now_ms(),
            amount: 1,
        };
        let payload = serde_json::to_vec(&e).unwrap();
        producer
            .send(
                BaseRecord::<(), _>::to(&topic)
                    .payload(&payload)
                    .timestamp(e.ts as i64),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        producer.poll(Duration::ZERO);
        sent.push(e);
        std::thread::sleep(Duration::from_millis(5));
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let last = sent.iter().map(|e| e.ts).max().unwrap();
    let expected: BTreeMap<(u64, u64), u64> = reference_counts(&sent, 1000)
        .into_iter()
        .filter(|((_, start), _)| start + 1000 <= last)
        .collect();
    assert!(!expected.is_empty());

    // Every window that ends by the last event time must close, with its exact count.
    let closed = || -> BTreeMap<(u64, u64), u64> {
        counts
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, w)| w.end <= last)
            .map(|(_, w)| ((w.key, w.start), w.value))
            .collect()
    };
    wait_for(
        Duration::from_secs(30),
        "windows to close despite flow control",
        || closed().len() >= expected.len(),
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let summary = job.join().unwrap().expect("job");
    assert_eq!(closed(), expected);
    assert!(
        summary.pauses > 0,
        "the source never paused, so the bound was not exercised: {summary}"
    );
}
