//! Bounded runs against the real broker: exact window counts with 1 worker, 2 workers
//! and 2 processes; committed offsets at each partition's end; malformed payloads on
//! the error stream.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use freshet::codec::{Json, RawMessage, WithMeta};
use freshet::{
    run, Cluster, Collect, Decoder, JobConfig, KafkaConfig, KafkaSource, StartFrom, Tumble,
};
use support::*;

fn config(group: &str, workers: usize) -> JobConfig {
    let mut c = JobConfig::new(KafkaConfig::new(brokers(), group));
    c.source.bounded = true;
    c.source.start = StartFrom::Committed;
    c.cluster = Cluster {
        workers,
        ..Cluster::default()
    };
    c
}

fn as_map(out: &[WindowCount]) -> BTreeMap<(u64, u64), u64> {
    let mut map = BTreeMap::new();
    for w in out {
        assert_eq!(w.end - w.start, 1000);
        let prev = map.insert((w.key, w.start), w.value);
        assert!(
            prev.is_none(),
            "window {:?} emitted twice in a clean bounded run",
            (w.key, w.start)
        );
    }
    map
}

#[test]
fn bounded_counts_are_exact_with_one_and_two_workers_and_two_processes() {
    let (input, events) = preload("bounded-in", 4, 11, 20_000, 20_000);
    let expected = reference_counts(events.iter().map(|(_, e)| e), 1000);
    let input_ends = ends(&read_topic(&input, 4));

    let mut outputs = Vec::new();
    for workers in [1, 2] {
        let output = create_topic("bounded-out", 2);
        let group = unique("bounded-group");
        let summary = run(
            config(&group, workers),
            window_count::job(input.clone(), output.clone(), 1000, Default::default()),
        )
        .expect("job");
        assert_eq!(summary.records_in, events.len() as u64);
        let read = read_topic_min(&output, 2, expected.len() as u64);
        let got = as_map(&decode::<WindowCount>(&read));
        assert_eq!(got, expected, "{workers} worker(s)");
        assert_eq!(
            committed(&group, &input, 4),
            input_ends,
            "committed offsets after a bounded run with {workers} worker(s)"
        );
        outputs.push(got);
    }

    // Two processes on loopback, one worker each, through the job binary.
    let output = create_topic("bounded-out", 2);
    let group = unique("bounded-group");
    let hosts = hostfile(2);
    let children: Vec<_> = (0..2)
        .map(|p| {
            job_binary(&input, &output, &group)
                .args(["--bounded", "-n", "2", "-p", &p.to_string(), "-h"])
                .arg(&hosts.0)
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("spawning window-count")
        })
        .collect();
    for mut c in children {
        assert!(
            c.wait().expect("waiting for window-count").success(),
            "a process of the -n 2 run failed"
        );
    }
    let read = read_topic_min(&output, 2, expected.len() as u64);
    let got = as_map(&decode::<WindowCount>(&read));
    assert_eq!(got, expected, "2 processes");
    assert_eq!(
        committed(&group, &input, 4),
        input_ends,
        "committed offsets after the 2-process run"
    );
    outputs.push(got);
    assert!(
        outputs.windows(2).all(|w| w[0] == w[1]),
        "1 worker, 2 workers and 2 processes disagree"
    );
}

/// Decodes events, failing on an amount of exactly 13 (an application-level check).
#[derive(Clone)]
struct Strict;

impl Decoder for Strict {
    type Output = Event;
    fn decode(&self, msg: &RawMessage<'_>) -> Result<Event, String> {
        let e: Event = Json::<Event>::new().decode(msg)?;
        if e.amount == 13 {
            return Err("amount 13 is not allowed".into());
        }
        Ok(e)
    }
}

#[test]
fn malformed_payloads_go_to_the_error_stream_and_the_job_goes_on() {
    let topic = create_topic("malformed", 2);
    let good = generate(3, 2_000, 4, 2, 1_700_000_000_000, 5_000, 100);
    produce(&brokers(), &topic, &good[..1000]).unwrap();
    // Bad messages between good ones: broken JSON, wrong shape, a rejected value.
    let producer: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let bad: [&[u8]; 3] = [
        b"{not json",
        br#"{"key":"x"}"#,
        br#"{"key":1,"ts":1700000002000,"amount":13}"#,
    ];
    for (i, payload) in bad.iter().enumerate() {
        producer
            .send(
                rdkafka::producer::BaseRecord::<(), [u8]>::to(&topic)
                    .partition(i as i32 % 2)
                    .payload(payload)
                    .timestamp(1_700_000_002_000),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    rdkafka::producer::Producer::flush(&producer, std::time::Duration::from_secs(10)).unwrap();
    produce(&brokers(), &topic, &good[1000..]).unwrap();
    let all = read_topic(&topic, 2);
    let bad_offsets: Vec<(i32, i64)> = all
        .iter()
        .filter(|(_, _, p)| bad.iter().any(|b| Some(b.to_vec()) == *p))
        .map(|(p, o, _)| (*p, *o))
        .collect();
    assert_eq!(bad_offsets.len(), 3);

    let good_events: Vec<Event> = good
        .iter()
        .map(|(_, e)| e.clone())
        .filter(|e| e.amount != 13)
        .collect();
    let expected = reference_counts(&good_events, 1000);
    let errors = Arc::new(Mutex::new(Vec::new()));
    let counts = Arc::new(Mutex::new(Vec::new()));
    let group = unique("malformed-group");
    let (t, e, c) = (topic.clone(), errors.clone(), counts.clone());
    run(config(&group, 2), move |job| {
        let s = KafkaSource::new(t.clone(), WithMeta(Strict)).build(job)?;
        s.errors.collect_into(job, "errors", e.clone());
        s.records
            .tumble_count("count", 1000, |m| m.value.key)
            .collect_into(job, "counts", c.clone());
        Ok(())
    })
    .expect("the job must survive malformed input");

    let mut errs: Vec<_> = errors
        .lock()
        .unwrap()
        .iter()
        .map(|(_, e)| (e.partition, e.offset, e.reason.clone()))
        .collect();
    errs.sort();
    let mut expected_bad = bad_offsets.clone();
    // Good events with amount 13 are rejected too: find them among the read-back messages.
    for (p, o, payload) in &all {
        if let Ok(ev) = serde_json::from_slice::<Event>(payload.as_deref().unwrap_or_default()) {
            if ev.amount == 13 && !expected_bad.contains(&(*p, *o)) {
                expected_bad.push((*p, *o));
            }
        }
    }
    expected_bad.sort();
    assert_eq!(
        errs.iter().map(|(p, o, _)| (*p, *o)).collect::<Vec<_>>(),
        expected_bad
    );
    assert!(
        errs.iter().any(|(_, _, r)| r.starts_with("json:")),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|(_, _, r)| r.contains("amount 13")),
        "{errs:?}"
    );
    let got: BTreeMap<(u64, u64), u64> = counts
        .lock()
        .unwrap()
        .iter()
        .map(|(_, w)| ((w.key, w.start), w.value))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(committed(&group, &topic, 2), ends(&all));
}
