//! The Prometheus endpoint against the real broker: a running job serves per-partition
//! consumer and watermark lag, per-operator records, malformed and late counts, the
//! committed epoch and offsets, and the end-to-end latency histogram, scraped over
//! 127.0.0.1.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use freshet::{run, JobConfig, KafkaConfig, StartFrom};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use support::*;

fn scrape(addr: SocketAddr) -> String {
    try_scrape(addr).expect("connecting to the metrics endpoint")
}

fn try_scrape(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    Some(body)
}

/// `name{labels} value` lines of a scrape, by `name{labels}`.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| l.starts_with("freshet_"))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn sum(s: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    s.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn metrics_endpoint_serves_lag_records_late_malformed_commits_and_latency() {
    let (input, events) = preload("metrics-in", 2, 31, 3_000, 5_000);
    let output = create_topic("metrics-out", 2);
    let addr: SocketAddr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut config = JobConfig::new(KafkaConfig::new(brokers(), unique("metrics-group")));
    config.source.start = StartFrom::Earliest;
    config.source.idle_timeout = Duration::from_millis(300);
    config.source.idle_advance = true;
    config.metrics_addr = Some(addr);
    let stop = config.stop.clone();
    let (i, o) = (input.clone(), output.clone());
    let job =
        std::thread::spawn(move || run(config, window_count::job(i, o, 1000, Default::default())));

    // Everything read, and the high watermarks known: lag 0 on both partitions.
    wait_for(Duration::from_secs(60), "all records read", || {
        let Some(text) = try_scrape(addr) else {
            return false; // not listening yet
        };
        let s = samples(&text);
        sum(
            &s,
            &format!("freshet_source_records_total{{topic=\"{input}\"}}"),
        ) == events.len() as f64
            && s.keys()
                .filter(|k| k.starts_with("freshet_consumer_lag{"))
                .count()
                == 2
            && sum(&s, "freshet_consumer_lag{") == 0.0
    });
    // One malformed message and one late record (far behind the watermark).
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let late = serde_json::to_vec(&Event {
        key: 1,
        ts: 1_700_000_000_000,
        amount: 0,
    })
    .unwrap();
    for payload in [&b"{not json"[..], &late[..]] {
        producer
            .send(
                BaseRecord::<(), [u8]>::to(&input)
                    .partition(0)
                    .payload(payload)
                    .timestamp(1_700_000_000_000),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let mut last = String::new();
    let ready = |text: &str| {
        let s = samples(text);
        sum(&s, "freshet_malformed_records_total{") == 1.0
            && sum(&s, "freshet_late_records_total{") == 1.0
            && sum(&s, "freshet_committed_epoch") > 0.0
            && sum(
                &s,
                &format!("freshet_committed_offset{{partition=\"0\",topic=\"{input}\"}}"),
            ) > 0.0
            && sum(
                &s,
                &format!("freshet_sink_records_total{{sink=\"KafkaSink({output})\"}}"),
            ) > 0.0
            && sum(&s, "freshet_end_to_end_latency_seconds_count") > 0.0
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ready(&last) {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for late and malformed counts, commits and output; last scrape:\n{}",
            last.lines()
                .filter(|l| !l.starts_with('#') && !l.contains("_bucket"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
        last = scrape(addr);
    }
    assert!(last.contains("# TYPE freshet_end_to_end_latency_seconds histogram"));
    assert!(last.contains(&format!(
        "freshet_watermark_lag_ms{{partition=\"1\",topic=\"{input}\"}}"
    )));
    // Unknown paths are 404.
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 404"), "{body}");

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let summary = job.join().unwrap().expect("job");
    assert_eq!(summary.records_in, events.len() as u64); // the late one is counted as late
    assert_eq!(summary.late, 1);
}

#[test]
fn each_process_of_a_two_process_job_serves_its_own_metrics() {
    let (input, events) = preload("metrics2-in", 4, 32, 2_000, 5_000);
    let output = create_topic("metrics2-out", 2);
    let group = unique("metrics2-group");
    // Two free consecutive loopback ports: process p serves on base + p.
    let base = (0..50)
        .find_map(|_| {
            let a = TcpListener::bind("127.0.0.1:0").ok()?;
            let port = a.local_addr().ok()?.port();
            let b = TcpListener::bind(("127.0.0.1", port.checked_add(1)?)).ok()?;
            drop((a, b));
            Some(port)
        })
        .expect("two free consecutive ports");
    let hosts = hostfile(2);
    let mut children: Vec<_> = (0..2)
        .map(|p| {
            job_binary(&input, &output, &group)
                .args([
                    "--metrics-addr",
                    &format!("127.0.0.1:{base}"),
                    "--idle-timeout-ms",
                    "300",
                    "--idle-advance",
                    "-n",
                    "2",
                    "-p",
                    &p.to_string(),
                    "-h",
                ])
                .arg(&hosts.0)
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("spawning window-count")
        })
        .collect();
    let addrs: Vec<SocketAddr> = (0..2)
        .map(|p| format!("127.0.0.1:{}", base + p).parse().unwrap())
        .collect();
    let metric = format!("freshet_source_records_total{{topic=\"{input}\"}}");
    wait_for(
        Duration::from_secs(60),
        "both processes serving, every record read once, epochs committed in each",
        || {
            let per: Option<Vec<(f64, f64)>> = addrs
                .iter()
                .map(|a| {
                    try_scrape(*a).map(|t| {
                        let s = samples(&t);
                        (sum(&s, &metric), sum(&s, "freshet_committed_epoch"))
                    })
                })
                .collect();
            per.is_some_and(|v| {
                v.iter().all(|&(n, e)| n > 0.0 && e > 0.0)
                    && v.iter().map(|(n, _)| n).sum::<f64>() == events.len() as f64
            })
        },
    );
    for c in &children {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
    for c in children.iter_mut() {
        assert!(
            c.wait().unwrap().success(),
            "a process did not stop cleanly"
        );
    }
}
