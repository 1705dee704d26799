//! One idle partition does not stop windows from closing (unbounded run, real broker).

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use freshet::{JobConfig, KafkaConfig, StartFrom};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use support::*;

#[test]
fn an_idle_partition_does_not_stall_windows() {
    // Three partitions; data only ever goes to 0 and 1, partition 2 stays empty.
    let topic = create_topic("idle", 3);
    let start = 1_700_000_000_000u64;
    let first: Vec<(i32, Event)> = generate(9, 3_000, 4, 2, start, 5_000, 100);
    produce(&brokers(), &topic, &first).unwrap();
    let expected = reference_counts(first.iter().map(|(_, e)| e), 1000);

    let counts = Arc::new(Mutex::new(Vec::new()));
    let mut config = JobConfig::new(KafkaConfig::new(brokers(), unique("idle-group")));
    config.source.start = StartFrom::Earliest;
    config.source.idle_timeout = Duration::from_millis(400);
    config.source.out_of_orderness = Duration::from_millis(200);
    config.cluster.workers = 2;
    let stop = config.stop.clone();
    let job = spawn_window_count(config, &topic, counts.clone());

    // Keep partitions 0 and 1 busy (never idle for 400 ms) with events past the first
    // five seconds, until the first five windows are out.
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next_ts = start + 5_000;
    let closed = |c: &Mutex<Vec<(freshet::Time, freshet::Windowed<u64, u64>)>>| {
        c.lock()
            .unwrap()
            .iter()
            .filter(|(_, w)| w.end <= start + 5_000)
            .count()
    };
    while closed(&counts) < expected.len() {
        assert!(
            Instant::now() < deadline,
            "windows did not close while partition 2 was idle"
        );
        for p in 0..2 {
            let payload = serde_json::to_vec(&Event {
                key: 99,
                ts: next_ts,
                amount: 0,
            })
            .unwrap();
            let record = BaseRecord::<(), _>::to(&topic)
                .partition(p)
                .payload(&payload)
                .timestamp(next_ts as i64);
            producer.send(record).map_err(|(e, _)| e).unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        next_ts += 100;
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    job.join().unwrap().expect("job");

    let got: BTreeMap<(u64, u64), u64> = counts
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, w)| w.end <= start + 5_000)
        .map(|(_, w)| ((w.key, w.start), w.value))
        .collect();
    assert_eq!(got, expected);
}
