//! Faults injected with librdkafka's in-process mock cluster: a broker outage in the
//! middle of a run, and output the producer refuses. (The other tests in this
//! folder use the real broker; the mock cluster is used here only to inject faults.)

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use freshet::codec::Json;
use freshet::{
    run, Collect, Collected, JobConfig, KafkaConfig, KafkaSink, KafkaSource, ProducerSettings,
    StartFrom, WriteKafka,
};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

const BASE_TS: i64 = 1_700_000_000_000;

fn produce(brokers: &str, topic: &str, values: std::ops::Range<u64>) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for v in values {
        let payload = v.to_string();
        let record = BaseRecord::<(), _>::to(topic)
            .partition((v % 2) as i32)
            .payload(&payload)
            .timestamp(BASE_TS + v as i64);
        producer.send(record).map_err(|(e, _)| e).unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn wait_for_len(c: &Collected<u64>, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.lock().unwrap().len() < n {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_broker_outage_mid_run_loses_and_duplicates_nothing() {
    let mock = MockCluster::new(1).unwrap();
    let brokers = mock.bootstrap_servers();
    mock.create_topic("in", 2, 1).unwrap();
    mock.create_topic("out", 1, 1).unwrap();
    produce(&brokers, "in", 0..1000);

    let seen: Collected<u64> = Arc::new(Mutex::new(Vec::new()));
    let mut config = JobConfig::new(KafkaConfig::new(brokers.clone(), "outage"));
    config.source.start = StartFrom::Earliest;
    let stop = config.stop.clone();
    let s = seen.clone();
    let job = std::thread::spawn(move || {
        run(config, move |job| {
            let streams = KafkaSource::new("in", Json::<u64>::new()).build(job)?;
            streams.records.clone().collect_into(job, "seen", s.clone());
            streams
                .records
                .write_kafka(job, KafkaSink::new("out", Json::<u64>::new()))
        })
    });
    wait_for_len(&seen, 1000, "the first 1000 records");

    // Every broker goes away for a while, then comes back; then more input arrives.
    mock.broker_down(-1).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    mock.broker_up(-1).unwrap();
    produce(&brokers, "in", 1000..2000);
    wait_for_len(&seen, 2000, "the records produced after the outage");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let summary = job
        .join()
        .unwrap()
        .expect("the job must survive a broker outage");

    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for (_, v) in seen.lock().unwrap().iter() {
        *counts.entry(*v).or_default() += 1;
    }
    assert_eq!(counts.len(), 2000, "missing records");
    assert!(counts.values().all(|&c| c == 1), "duplicated records");
    assert_eq!(summary.records_in, 2000);
}

#[test]
fn output_the_producer_refuses_fails_the_job_with_a_clear_error() {
    let mock = MockCluster::new(1).unwrap();
    let brokers = mock.bootstrap_servers();
    mock.create_topic("in", 2, 1).unwrap();
    mock.create_topic("out", 1, 1).unwrap();
    produce(&brokers, "in", 0..100);

    // The producer refuses messages over 2000 bytes; the job writes 10 kB per record.
    let kafka = KafkaConfig::new(brokers.clone(), "refused")
        .set("message.max.bytes", "2000")
        .unwrap();
    let mut config = JobConfig::new(kafka);
    config.source.start = StartFrom::Earliest;
    config.source.bounded = true;
    let started = Instant::now();
    let result = run(config, move |job| {
        let streams = KafkaSource::new("in", Json::<u64>::new()).build(job)?;
        let settings = ProducerSettings {
            delivery_timeout: Duration::from_secs(5),
            ..ProducerSettings::default()
        };
        let big =
            timely::dataflow::operators::core::Map::map(streams.records, |v: u64| vec![v; 1250]);
        big.write_kafka(
            job,
            KafkaSink::new("out", Json::<Vec<u64>>::new()).settings(settings),
        )
    });
    let err = result.expect_err("a refused record must fail the job");
    let text = err.to_string();
    eprintln!("error as the user sees it: {text}");
    assert!(
        text.contains("KafkaSink(out)"),
        "the error should name the sink: {text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "failing took too long"
    );
}
