//! The commit protocol against the real broker: committed offsets never pass durable
//! output, and a job killed with SIGKILL and restarted loses no window result.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use freshet::codec::{Json, WithMeta};
use freshet::{run, Cluster, Collect, JobConfig, KafkaConfig, KafkaSource, StartFrom};
use support::*;

#[test]
fn committed_offsets_never_pass_durable_output() {
    let (topic, events) = preload("held", 2, 5, 12_000, 12_000);
    let end = ends(&read_topic(&topic, 2));
    let durable = Arc::new(Mutex::new(Vec::new()));
    let group = unique("held-group");
    let mut config = JobConfig::new(KafkaConfig::new(brokers(), group.clone()));
    config.source.bounded = true;
    config.source.start = StartFrom::Earliest;
    config.source.epoch_interval = Duration::from_millis(20);
    config.source.batch_size = 64; // many small epochs
    config.source.max_epochs_ahead = 1; // the slow sink makes the source pause
    config.checkpoint.interval = Duration::from_millis(20); // a checkpoint every epoch
    config.cluster = Cluster {
        workers: 2,
        ..Cluster::default()
    };
    let (t, d) = (topic.clone(), durable.clone());
    let done = Arc::new(AtomicBool::new(false));
    let finished = done.clone();
    let job = std::thread::spawn(move || {
        let r = run(config, move |job| {
            let s = KafkaSource::new(t.clone(), WithMeta(Json::<Event>::new())).build(job)?;
            // Acknowledge one batch every 15 ms: a slow sink.
            s.records
                .collect_delayed(job, "slow", d.clone(), Duration::from_millis(15));
            Ok(())
        });
        finished.store(true, Ordering::SeqCst);
        r
    });

    // While it runs: every offset below a committed offset must already be durable.
    let client = group_client(&group);
    let mut checks = 0;
    let mut saw_partial_commit = false;
    while !done.load(Ordering::SeqCst) {
        let committed = committed_by(&client, &topic, 2);
        let written: BTreeSet<(i32, i64)> = durable
            .lock()
            .unwrap()
            .iter()
            .map(|(_, m)| (m.partition, m.offset))
            .collect();
        for (&p, &c) in &committed {
            for o in 0..c {
                assert!(
                    written.contains(&(p, o)),
                    "offset {o} of partition {p} committed (at {c}) before its output was durable"
                );
            }
            if c > 0 && c < end[&p] {
                saw_partial_commit = true;
            }
        }
        checks += 1;
    }
    let summary = job.join().unwrap().expect("job");
    assert!(
        summary.pauses > 0,
        "the source never paused for the slow sink: {summary}"
    );
    assert!(
        checks > 3,
        "the job ended before the committed offsets were polled"
    );
    assert!(
        saw_partial_commit,
        "no commit was seen while the job ran: the check above tested nothing"
    );
    assert_eq!(durable.lock().unwrap().len(), events.len());
    assert_eq!(committed(&group, &topic, 2), end);
}

#[test]
fn sigkill_and_restart_lose_no_window() {
    let partitions = 4;
    let input = create_topic("crash-in", partitions);
    let output = create_topic("crash-out", 2);
    let group = unique("crash-group");
    let all = generate(21, 30_000, 16, partitions, 1_700_000_000_000, 30_000, 200);
    let (first, second) = all.split_at(all.len() / 2);

    // First run: unbounded, fed in chunks so that epochs complete and commits happen;
    // killed once it has committed some offsets and written results.
    let mut child = job_binary(&input, &output, &group)
        .args(["--idle-timeout-ms", "600000", "--epoch-ms", "50", "-w", "2"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for chunk in first.chunks(first.len() / 10) {
        produce(&brokers(), &input, chunk).unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }
    wait_for(
        Duration::from_secs(60),
        "a commit and some output from the first run",
        || !committed(&group, &input, partitions).is_empty() && !read_topic(&output, 2).is_empty(),
    );
    child.kill().expect("SIGKILL the first run"); // Child::kill sends SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(!status.success(), "the first run should have been killed");
    let committed_at_kill = committed(&group, &input, partitions);

    // More input arrives while it is down; the restart reads from the committed offsets.
    produce(&brokers(), &input, second).unwrap();
    let status = job_binary(&input, &output, &group)
        .args(["--bounded", "-w", "2"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the restarted run failed");

    let expected = reference_counts(all.iter().map(|(_, e)| e), 1000);
    let got = decode::<WindowCount>(&read_topic(&output, 2));
    let mut seen: BTreeMap<(u64, u64), Vec<u64>> = BTreeMap::new();
    for w in &got {
        seen.entry((w.key, w.start)).or_default().push(w.value);
    }
    let lost: Vec<_> = expected
        .iter()
        .filter(|(k, v)| !seen.get(k).is_some_and(|vs| vs.contains(v)))
        .collect();
    let duplicates: usize = seen
        .iter()
        .map(|(k, vs)| {
            vs.iter()
                .filter(|v| Some(*v) == expected.get(k))
                .count()
                .saturating_sub(1)
        })
        .sum();
    let partial: usize = seen
        .iter()
        .map(|(k, vs)| vs.iter().filter(|v| Some(*v) != expected.get(k)).count())
        .sum();
    println!(
        "crash test: {} windows expected, {} results written; lost {}, exact duplicates {}, partial re-emissions {}; committed at kill {:?}",
        expected.len(),
        got.len(),
        lost.len(),
        duplicates,
        partial,
        committed_at_kill
    );
    assert!(lost.is_empty(), "lost window results: {lost:?}");
    assert_eq!(
        committed(&group, &input, partitions),
        ends(&read_topic(&input, partitions))
    );
}
