//! Memory stays bounded when records must wait: a stream–table lookup whose table
//! does not move holds the stream's records, and the stream's source must pause
//! (`--max-lookup-backlog`) rather than read the topic into memory. Measured on the
//! test job's process (`/proc/<pid>/status`), against the real broker.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::window_count::{LookedUp, Noted};
use support::*;

/// The stderr lines a job has written so far, read on a thread.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn follow(&self, child: &mut Child) {
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = self.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
    }

    fn any(&self, needle: &str) -> bool {
        self.0.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// `records_in` of every status line so far.
    fn records_in(&self) -> Vec<u64> {
        let lines = self.0.lock().unwrap();
        lines
            .iter()
            .filter_map(|l| l.split("records_in=").nth(1))
            .filter_map(|v| v.split_whitespace().next()?.parse().ok())
            .collect()
    }

    fn all(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

const N: usize = 60_000;
const NOTE: usize = 1_000;
const BACKLOG: usize = 2_000;

#[test]
fn a_lookup_waiting_for_its_table_pauses_the_stream_and_memory_stays_bounded() {
    let (input, output) = (create_topic("mem-in", 1), create_topic("mem-out", 1));
    let stream = create_topic("mem-stream", 1);
    let table = create_topic("mem-table", 1);
    let looked_up = create_topic("mem-looked-up", 1);
    let now = freshet::clock::now_ms();
    let base = now - 300_000;
    // The table: key 1 = 5 from before every stream record. Its watermark then stays
    // below the stream's times (it holds once caught up): every stream record waits.
    let first = Event {
        key: 1,
        ts: base - 10_000,
        amount: 5,
    };
    produce(&brokers(), &table, &[(0, first)]).unwrap();

    let mut cmd = job_binary(&input, &output, &unique("mem-group"));
    cmd.args(["--lookup-input", &stream, "--lookup-table", &table])
        .args(["--lookup-output", &looked_up, "--status-secs", "1"])
        .args(["--max-lookup-backlog", &BACKLOG.to_string()])
        .args(["--batch-size", "500"])
        // librdkafka's own prefetch is bounded by this (64 MiB by default).
        .args(["-X", "queued.max.messages.kbytes=2048"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut job = Running(cmd.spawn().expect("starting the test job"));
    let lines = Lines::default();
    lines.follow(&mut job.0);
    let pid = job.0.id();
    wait_for(
        Duration::from_secs(30),
        "the job's first status line",
        || !lines.records_in().is_empty(),
    );
    let (baseline, _) = rss_kib(pid);

    // 60 MB of stream records (1 kB notes): far more than the bound lets in.
    let note = "x".repeat(NOTE);
    let records: Vec<(i32, String, i64, Vec<u8>)> = (0..N)
        .map(|i| {
            let n = Noted {
                key: (i % 100) as u64,
                ts: base + i as u64,
                note: note.clone(),
            };
            let payload = serde_json::to_vec(&n).unwrap();
            (0, n.key.to_string(), n.ts as i64, payload)
        })
        .collect();
    produce_payloads(&stream, &records).unwrap();
    wait_for(Duration::from_secs(60), "the source to pause", || {
        lines.any("source paused while the lookup's stream records wait for its table")
    });
    // Paused: the records read stop growing (two status lines a second apart agree).
    // The source pauses only once the lookup holds more than the bound, so lines from
    // before it read that many (the table's one record, twice) do not count.
    let started = Instant::now();
    let read = loop {
        let seen = lines.records_in();
        if let [.., a, b] = seen[..] {
            if a == b && b > BACKLOG as u64 {
                break b;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            lines.all()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let (rss, peak) = rss_kib(pid);
    eprintln!(
        "read {read} of {N} records while paused; RSS {baseline} KiB at start, {rss} KiB now, \
         peak {peak} KiB"
    );
    assert!(
        read < 4 * BACKLOG as u64,
        "read {read} records: the source did not pause at the lookup's backlog"
    );
    // The records it did not read would take 60 MB and more once decoded.
    assert!(
        peak.saturating_sub(baseline) < 24 << 10,
        "peak RSS grew by {} KiB (from {baseline} KiB)",
        peak - baseline
    );

    // The table moves past every stream record: the lookup drains, the source resumes
    // and reads the rest; every record comes out once, with the table's value as of
    // its time (a sequential reference: key 1 has 5, every other key nothing).
    let last = Event {
        key: 2,
        ts: now,
        amount: 9,
    };
    produce(&brokers(), &table, &[(0, last)]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut got: Vec<LookedUp> = loop {
        // Reading the whole topic each time: once a second, not every 20 ms.
        let got: Vec<LookedUp> = decode(&read_topic(&looked_up, 1));
        if got.len() >= N {
            break got;
        }
        assert!(Instant::now() < deadline, "{} of {N} looked up", got.len());
        std::thread::sleep(Duration::from_secs(1));
    };
    got.sort_by_key(|l| (l.ts, l.key));
    let expected: Vec<LookedUp> = (0..N)
        .map(|i| LookedUp {
            key: (i % 100) as u64,
            ts: base + i as u64,
            amount: (i % 100 == 1).then_some(5),
        })
        .collect();
    assert_eq!(got.len(), N, "duplicates in the lookup's output");
    assert!(
        got == expected,
        "the lookup's output differs from the reference"
    );
    let (_, peak) = rss_kib(pid);
    eprintln!("peak RSS after draining: {peak} KiB");
}
