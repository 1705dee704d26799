//! An example job run with `--dead-letter-topic` against the real broker: its malformed
//! and late records are on the dead-letter topic with their provenance, its results on
//! the output topic; run without it, the job says at start where those records go.

mod utils;

use std::process::Command;
use std::time::Duration;

use freshet_examples::window_count::{Event, WindowCount};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use utils::*;

/// Produces `payloads` to partition 0 of `topic`, in order.
fn produce_raw(topic: &str, payloads: &[Vec<u8>]) {
    let producer: BaseProducer = plain().create().unwrap();
    for p in payloads {
        producer
            .send(
                BaseRecord::<str, [u8]>::to(topic)
                    .partition(0)
                    .key("k")
                    .payload(p),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn event(key: u64, ts: u64) -> Vec<u8> {
    serde_json::to_vec(&Event { key, ts, amount: 1 }).unwrap()
}

/// The window-count example over `input`, bounded, one message per activation (so the
/// watermark moves between messages), with `extra` flags; returns its stderr.
fn window_count(input: &str, output: &str, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_window-count"))
        .args([
            "--brokers",
            &brokers(),
            "--input",
            input,
            "--output",
            output,
        ])
        .args(["--group", &unique("dl-group"), "--bounded", "--no-progress"])
        .args(["--batch-size", "1", "--no-checkpoints"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "window-count failed:\n{stderr}");
    stderr
}

/// Every dead letter on partition 0 of `topic`: offset, reason and source topic headers.
fn dead_letters(topic: &str) -> Vec<(String, String, String)> {
    read_headed(topic, 0)
        .iter()
        .map(|h| {
            (
                h.header("freshet.offset"),
                h.header("freshet.reason"),
                h.header("freshet.topic"),
            )
        })
        .collect()
}

#[test]
fn an_example_job_puts_its_late_and_malformed_records_on_the_dead_letter_topic() {
    let input = create_topic("dl-events", 1);
    let output = create_topic("dl-counts", 1);
    let dead = create_topic("dl-dead", 1);
    let now = freshet::clock::now_ms();
    produce_raw(
        &input,
        &[
            event(1, now - 10_000), // 0: on time
            event(1, now - 5_000),  // 1: on time
            b"{oops".to_vec(),      // 2: malformed
            event(2, now - 60_000), // 3: late: a minute behind the watermark
            event(1, now - 4_000),  // 4: on time
        ],
    );
    window_count(&input, &output, &["--dead-letter-topic", &dead]);

    let mut letters = dead_letters(&dead);
    letters.sort();
    let offsets: Vec<&str> = letters.iter().map(|l| l.0.as_str()).collect();
    assert_eq!(offsets, ["2", "3"], "{letters:?}");
    assert!(letters[0].1.contains("json"), "{letters:?}");
    assert!(letters[1].1.starts_with("late"), "{letters:?}");
    assert!(letters.iter().all(|l| l.2 == input), "{letters:?}");
    // The on-time records are counted, the late one is not.
    let counts: Vec<WindowCount> = decode(&read_topic(&output, 1));
    assert_eq!(counts.iter().map(|w| w.value).sum::<u64>(), 3, "{counts:?}");
    assert!(counts.iter().all(|w| w.key == 1), "{counts:?}");
}

#[test]
fn an_example_job_without_a_dead_letter_topic_says_where_late_records_go() {
    let input = create_topic("dl-events", 1);
    let output = create_topic("dl-counts", 1);
    let now = freshet::clock::now_ms();
    produce_raw(&input, &[event(1, now - 5_000), event(2, now - 60_000)]);
    let stderr = window_count(&input, &output, &[]);
    // The job connects its source's error stream (it prints malformed records), not
    // its late stream: one warning, naming the source and that stream.
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("unconnected stream"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains(&format!("KafkaSource({input}): its `late` stream"))
            && warnings[0].contains("no --dead-letter-topic"),
        "{stderr}"
    );
}
