//! The fault suite against the real broker (docs/reliability.md lists each case and
//! what it asserts): a producer pause longer than the idle timeout with lagging event
//! time, a future-dated record, malformed / null / oversized / absurd-timestamp records
//! on the dead-letter topic, a panicking closure at 2 workers, a lost peer process,
//! committed offsets out of range, durability-breaking settings.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use freshet::codec::Json;
use freshet::timely::dataflow::operators::core::Map;
use freshet::{
    run, Collect, Collected, JobConfig, KafkaConfig, KafkaSink, KafkaSource, OutOfRange,
    PoisonOutput, StartFrom, Tumble, WriteKafka,
};
use rdkafka::consumer::Consumer;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use support::*;

fn now_ms() -> u64 {
    freshet::clock::now_ms()
}

/// A raw message: key, payload, timestamp.
type Raw<'a> = (Option<&'a str>, Option<Vec<u8>>, i64);

/// Produces raw messages to partition 0 of `topic`.
fn produce_raw(topic: &str, messages: &[Raw<'_>]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("message.max.bytes", "10000000")
        .create()
        .unwrap();
    for (key, payload, ts) in messages {
        let mut r = BaseRecord::<str, [u8]>::to(topic)
            .partition(0)
            .timestamp(*ts);
        if let Some(k) = key {
            r = r.key(*k);
        }
        if let Some(p) = payload {
            r = r.payload(p.as_slice());
        }
        producer.send(r).map_err(|(e, _)| e).unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn event(key: u64, ts: u64) -> Vec<u8> {
    serde_json::to_vec(&Event { key, ts, amount: 1 }).unwrap()
}

fn job_config(group: &str) -> JobConfig {
    let mut c = JobConfig::new(KafkaConfig::new(brokers(), group));
    c.source.start = StartFrom::Earliest;
    c.status_every = Duration::ZERO;
    c
}

#[test]
fn a_producer_pause_longer_than_the_idle_timeout_makes_nothing_late() {
    // Event times an hour behind the wall clock (a backfill, or devices uploading
    // buffered readings); the producer pauses for 4 idle timeouts between two bursts.
    let topic = create_topic("pause", 1);
    let base = now_ms() - 3_600_000;
    let burst = |from: u64| -> Vec<Raw<'static>> {
        (0..500u64)
            .map(|i| {
                (
                    None,
                    Some(event(i % 5, from + i * 4)),
                    (from + i * 4) as i64,
                )
            })
            .collect()
    };
    produce_raw(&topic, &burst(base));

    let counts: Collected<WindowCount> = Arc::new(Mutex::new(Vec::new()));
    let late: Collected<u64> = Arc::new(Mutex::new(Vec::new()));
    let mut config = job_config(&unique("pause-group"));
    config.source.idle_timeout = Duration::from_millis(300);
    config.source.out_of_orderness = Duration::from_millis(100);
    let stop = config.stop.clone();
    let metrics: Arc<Mutex<Option<Arc<freshet::Metrics>>>> = Arc::default();
    let (c, l, t, m) = (counts.clone(), late.clone(), topic.clone(), metrics.clone());
    let job = std::thread::spawn(move || {
        run(config, move |job| {
            *m.lock().unwrap() = Some(job.metrics().clone());
            let s = KafkaSource::new(t.clone(), Json::<Event>::new())
                .event_time(|e: &Event| Some(e.ts))
                .build(job)?;
            s.late
                .map(|l| l.event_time)
                .collect_into(job, "late", l.clone());
            s.records
                .tumble_count("count", 1000, |e: &Event| e.key)
                .collect_into(job, "counts", c.clone());
            Ok(())
        })
    });
    let read = |n: u64| {
        let m = metrics.clone();
        move || {
            m.lock()
                .unwrap()
                .as_ref()
                .is_some_and(|m| m.records_in.load(std::sync::atomic::Ordering::Relaxed) >= n)
        }
    };
    wait_for(Duration::from_secs(60), "the first burst read", read(500));
    // The pause under test: several idle timeouts with nothing to read.
    std::thread::sleep(Duration::from_millis(1_200));
    produce_raw(&topic, &burst(base + 2_000));
    wait_for(
        Duration::from_secs(60),
        "the second burst read",
        read(1_000),
    );
    // The first burst's windows close once the second burst moves the watermark.
    wait_for(Duration::from_secs(30), "the first windows", || {
        counts
            .lock()
            .unwrap()
            .iter()
            .any(|(_, w)| w.start == base - base % 1000)
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let summary = job.join().unwrap().expect("job");
    assert_eq!(summary.late, 0, "records after the pause were late");
    assert!(late.lock().unwrap().is_empty());
    assert_eq!(summary.records_in, 1_000);
}

#[test]
fn bad_records_reach_the_dead_letter_topic_with_their_provenance() {
    let topic = create_topic("dlq-in", 1);
    let dead = create_topic("dlq-dead", 1);
    let now = now_ms() as i64;
    let big = vec![b'x'; 20_000];
    let far = now_ms() + 3_600_000; // an hour ahead: past the 5-minute default bound
    produce_raw(
        &topic,
        &[
            (Some("a"), Some(event(1, now_ms() - 10_000)), now), // good: offset 0
            (Some("b"), Some(b"{not json".to_vec()), now),       // malformed: 1
            (Some("c"), None, now),                              // null payload: 2
            (Some("d"), Some(big), now),                         // oversized: 3
            (Some("e"), Some(event(1, far)), now),               // absurd time: 4
            (Some("f"), Some(event(1, now_ms() - 5_000)), now),  // good: 5
            (Some("g"), Some(event(1, now_ms() - 60_000)), now), // late: 6
        ],
    );
    let mut config = job_config(&unique("dlq-group"));
    config.source.bounded = true;
    config.source.max_record_bytes = 10_000;
    // One message per activation, so the watermark moves between messages.
    config.source.batch_size = 1;
    config.dead_letter_topic = Some(dead.clone());
    let seen: Collected<u64> = Arc::new(Mutex::new(Vec::new()));
    let (s2, t) = (seen.clone(), topic.clone());
    let summary = run(config, move |job| {
        let s = KafkaSource::new(t.clone(), Json::<Event>::new())
            .event_time(|e: &Event| Some(e.ts))
            .build(job)?;
        s.records
            .map(|e| e.ts)
            .collect_into(job, "seen", s2.clone());
        Ok(())
    })
    .expect("job");
    assert_eq!(summary.errors, 4);
    assert_eq!(summary.late, 1);
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "the future-dated record moved no watermark"
    );

    let mut letters = Vec::new();
    for h in read_headed(&dead, 5) {
        assert_eq!(h.header("freshet.topic"), topic);
        assert_eq!(h.header("freshet.partition"), "0");
        letters.push((
            h.header("freshet.offset"),
            h.header("freshet.reason"),
            h.key.clone(),
        ));
    }
    letters.sort();
    let offsets: Vec<&str> = letters.iter().map(|(o, _, _)| o.as_str()).collect();
    assert_eq!(offsets, ["1", "2", "3", "4", "6"], "{letters:?}");
    let reason = |o: &str| letters.iter().find(|l| l.0 == o).unwrap().1.clone();
    assert!(reason("1").contains("json"), "{}", reason("1"));
    assert!(reason("2").contains("null payload"), "{}", reason("2"));
    assert!(reason("3").contains("exceeds the limit"), "{}", reason("3"));
    assert!(
        reason("4").contains("past the wall clock"),
        "{}",
        reason("4")
    );
    assert!(reason("6").starts_with("late"), "{}", reason("6"));
    assert_eq!(letters[0].2.as_deref(), Some(&b"b"[..]), "the original key");
}

#[test]
fn a_panicking_closure_at_two_workers_fails_the_job_within_seconds() {
    let (topic, _) = preload("panic", 2, 3, 2_000, 2_000);
    let mut config = job_config(&unique("panic-group"));
    config.cluster.workers = 2;
    let started = Instant::now();
    let result = run(config, move |job| {
        let s = KafkaSource::new(topic.clone(), Json::<Event>::new())
            .event_time(|e: &Event| Some(e.ts))
            .build(job)?;
        s.records
            .map(|e: Event| {
                assert!(e.amount != 42, "user closure refused amount 42");
                e.key
            })
            .collect_into(job, "keys", Arc::new(Mutex::new(Vec::new())));
        Ok(())
    });
    let err = result.expect_err("a panic must fail the job").to_string();
    assert!(err.contains("user closure refused amount 42"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn committed_offsets_out_of_range_fail_by_default_and_fall_back_when_asked() {
    let (topic, events) = preload("range", 1, 4, 400, 4_000);
    let group = unique("range-group");
    // Commit offset 1000 on a 400-record partition.
    let c = group_client(&group);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(1_000))
        .unwrap();
    c.commit(&tpl, rdkafka::consumer::CommitMode::Sync).unwrap();

    let job = |on_out_of_range| {
        let mut config = job_config(&group);
        config.source.start = StartFrom::Committed;
        config.source.bounded = true;
        config.source.on_out_of_range = on_out_of_range;
        let t = topic.clone();
        run(config, move |job| {
            let s = KafkaSource::new(t.clone(), Json::<Event>::new()).build(job)?;
            s.records
                .collect_into(job, "all", Arc::new(Mutex::new(Vec::new())));
            Ok(())
        })
    };
    let started = Instant::now();
    let err = job(OutOfRange::Error).expect_err("out of range must fail by default");
    assert!(err.to_string().contains("out of range"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let summary = job(OutOfRange::Fallback).expect("fallback to earliest");
    assert_eq!(summary.records_in, events.len() as u64);
    assert_eq!(committed(&group, &topic, 1).get(&0), Some(&400));
}

#[test]
fn a_lost_peer_process_fails_the_survivor_with_one_clear_line() {
    let (input, _) = preload("peer-in", 2, 6, 1_000, 600_000);
    let output = create_topic("peer-out", 2);
    let group = unique("peer-group");
    let hosts = hostfile(2);
    let mut children: Vec<_> = (0..2)
        .map(|p| {
            job_binary(&input, &output, &group)
                .args(["--idle-advance", "-n", "2", "-p", &p.to_string(), "-h"])
                .arg(&hosts.0)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    wait_for(Duration::from_secs(60), "a first commit", || {
        !committed(&group, &input, 2).is_empty()
    });
    children[1].kill().unwrap();
    children[1].wait().unwrap();
    let killed = Instant::now();
    let survivor = children.remove(0);
    let out = survivor.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{:?}", out.status);
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "{:?}",
        killed.elapsed()
    );
    assert!(
        stderr.contains("lost the connection to peer process 1"),
        "{stderr}"
    );
    assert!(!stderr.contains("MergeQueue poisoned"), "{stderr}");
    assert!(!stderr.contains("stack backtrace"), "{stderr}");
}

#[test]
fn settings_that_break_durability_are_refused() {
    for (k, v) in [
        ("acks", "0"),
        ("acks", "1"),
        ("enable.idempotence", "false"),
    ] {
        let err = KafkaConfig::new(brokers(), "g").set(k, v).unwrap_err();
        assert!(err.to_string().contains("not durable"), "{err}");
        let out = job_binary("in", "out", "g")
            .args(["-X", &format!("{k}={v}")])
            .output()
            .unwrap();
        assert!(!out.status.success(), "-X {k}={v} was accepted");
        assert!(String::from_utf8_lossy(&out.stderr).contains("not durable"));
    }
}

/// A message read back: its payload and its headers (as strings).
type WithHeaders = (Vec<u8>, Vec<(String, String)>);

/// Reads every message of partition 0 of `topic` as a consumer would: payload and
/// headers, to the end of the partition.
fn read_with_headers(topic: &str) -> Vec<WithHeaders> {
    read_headed(topic, 0)
        .into_iter()
        .map(|h| (h.payload, h.headers))
        .collect()
}

#[test]
fn output_the_producer_refuses_goes_to_the_dead_letter_topic_and_the_job_goes_on() {
    let input = create_topic("poison-in", 1);
    let output = create_topic("poison-out", 1);
    let dead = create_topic("poison-dead", 1);
    let now = now_ms();
    // 100 events; every tenth (amount 1) becomes a 4 kB result the producer refuses.
    let events: Vec<Raw<'static>> = (0..100u64)
        .map(|i| {
            let e = Event {
                key: i,
                ts: now - 10_000 + i,
                amount: i64::from(i % 10 == 0),
            };
            (None, Some(serde_json::to_vec(&e).unwrap()), e.ts as i64)
        })
        .collect();
    produce_raw(&input, &events);

    // The producer refuses messages over 2000 bytes (-X message.max.bytes=2000).
    let group = unique("poison-group");
    let kafka = KafkaConfig::new(brokers(), group.clone())
        .set("message.max.bytes", "2000")
        .unwrap();
    let mut config = JobConfig::new(kafka);
    config.source.start = StartFrom::Earliest;
    config.source.bounded = true;
    config.status_every = Duration::ZERO;
    config.dead_letter_topic = Some(dead.clone());
    config.poison_output = PoisonOutput::DeadLetter;
    let (i, o) = (input.clone(), output.clone());
    let summary = run(config, move |job| {
        let s = KafkaSource::new(i.clone(), Json::<Event>::new()).build(job)?;
        // A result: the key, padded to 4 kB when the amount is 1.
        s.records
            .map(|e: Event| format!("{:0>width$}", e.key, width = 1 + 4_000 * e.amount as usize))
            .write_kafka(job, KafkaSink::new(o.clone(), Json::<String>::new()))
    })
    .expect("a refused result must not fail the job with --poison-output dead-letter");
    assert_eq!(summary.records_in, 100);
    // Dead letters count as written: the input is committed to its end.
    assert_eq!(committed(&group, &input, 1).get(&0), Some(&100));

    let written: Vec<u64> = read_with_headers(&output)
        .iter()
        .map(|(p, _)| {
            serde_json::from_slice::<String>(p)
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    let mut want: Vec<u64> = (0..100).filter(|k| k % 10 != 0).collect();
    let mut got = written.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want, "every other result is in the output topic, once");

    let letters = read_with_headers(&dead);
    assert_eq!(letters.len(), 10, "one dead letter per refused result");
    for (payload, headers) in &letters {
        let get = |k: &str| {
            headers
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no header {k}: {headers:?}"))
        };
        assert_eq!(get("freshet.topic"), output, "the sink's topic");
        assert_eq!(get("freshet.partition"), "-1");
        assert_eq!(get("freshet.offset"), "-1");
        let reason = get("freshet.reason");
        assert!(reason.contains(&format!("KafkaSink({output})")), "{reason}");
        assert!(reason.to_lowercase().contains("too large"), "{reason}");
        // The payload is the start of the refused result (cut to fit the producer's limit).
        assert!(payload.len() < 2_000, "{}", payload.len());
        assert!(payload.len() > 1_000, "{}", payload.len());
        assert!(payload.starts_with(b"\"0000"), "{:?}", &payload[..8]);
    }
}

/// Waits up to `limit` for `child` to exit; kills it and fails the test if it does not.
fn exit_within(
    mut child: std::process::Child,
    limit: Duration,
    what: &str,
) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return (out.status, String::from_utf8_lossy(&out.stderr).to_string());
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what}: still running after {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_output_topic_missing_at_start_fails_the_job_naming_it() {
    // A broker that does not create topics on demand (Tansu does when asked, so the
    // job asks it not to); the producer gives up after
    // topic.metadata.propagation.max.ms (30 s by default, 3 s here).
    let (input, _) = preload("missing-in", 1, 8, 200, 5_000);
    let output = unique("never-created");
    let started = Instant::now();
    let child = job_binary(&input, &output, &unique("missing-group"))
        .args(["--idle-advance"])
        .args(["-X", "allow.auto.create.topics=false"])
        .args(["-X", "topic.metadata.propagation.max.ms=3000"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (status, stderr) = exit_within(child, Duration::from_secs(30), "a job without its topic");
    let took = started.elapsed();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(stderr.contains(&format!("KafkaSink({output})")), "{stderr}");
    assert!(stderr.contains("Unknown topic"), "{stderr}");
}

#[test]
fn an_output_topic_deleted_mid_run_fails_the_job_naming_it() {
    let (input, _) = preload("deleted-in", 1, 8, 200, 5_000);
    let output = create_topic("deleted-out", 1);
    let group = unique("deleted-group");
    let child = job_binary(&input, &output, &group)
        .args(["--idle-advance"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(60), "a first commit", || {
        !committed(&group, &input, 1).is_empty()
    });
    assert!(!read_topic(&output, 1).is_empty(), "the first results");
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        plain().create().unwrap();
    let deleted = futures_executor::block_on(
        admin.delete_topics(&[&output], &rdkafka::admin::AdminOptions::new()),
    )
    .unwrap();
    assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");
    let at = Instant::now();
    // More input: results the job can no longer deliver where the user reads them.
    let more = generate(9, 200, 16, 1, 1_700_000_010_000, 5_000, 200);
    produce(&brokers(), &input, &more).unwrap();
    let (status, stderr) = exit_within(child, Duration::from_secs(30), "a job whose topic went");
    let took = at.elapsed();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        stderr.contains(&format!("KafkaSink({output})"))
            && stderr.contains(&format!("output topic {output} no longer exists")),
        "{stderr}"
    );
}
