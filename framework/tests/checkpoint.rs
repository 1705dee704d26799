//! Checkpoints against the real broker, read the way a consumer reads the output: the
//! last record per `(key, window)` wins.
//!
//! A live job at 2 workers — tumbling windows, session windows, a window join and keyed
//! state — is killed with SIGKILL at random moments while input arrives (steadily, or in
//! bursts), restarted each time from its newest checkpoint, and finally drained with a
//! bounded run. The output topic must then hold, for every
//! window, exactly the count a sequential loop gives: 0 wrong, 0 missing. Duplicates are
//! exact copies of results written after the restored checkpoint (counted, reported).
//! No record of this input is late, so a run that logs records dropped as behind its
//! restored state fails too. Each run draws its input and its kill moments from a fresh
//! seed, printed at its start (`FRESHET_TEST_SEED=N` replays one), so repeated runs
//! kill other input at other moments. `FRESHET_TEST_KILLS=N` raises the kill count of
//! the steady and bursty tests for a longer soak.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use support::*;

/// How input arrives while the job is killed and restarted.
#[derive(Clone, Copy, Debug)]
enum Arrival {
    /// 400 events every 100 ms.
    Steady,
    /// 3,000 events at once, then 1.2 s of nothing.
    Bursty,
}

/// The flags every run of the crash tests passes: 2 workers, short epochs and
/// checkpoints; no idle advance of the watermark (event times are in 2023).
const LIVE: [&str; 8] = [
    "-w",
    "2",
    "--epoch-ms",
    "50",
    "--checkpoint-interval-ms",
    "200",
    "--idle-timeout-ms",
    "600000",
];

/// How the crashed job runs.
#[derive(Clone, Copy, Debug, Default)]
struct Mode<'a> {
    /// An `s3://` checkpoint location on the shared S3 server instead of the default
    /// directory.
    store: Option<&'a str>,
    /// `--exactly-once`: the output must then hold no duplicate at all.
    exactly_once: bool,
    /// Two processes of one worker each instead of one process of two workers.
    two_processes: bool,
    /// The draining run at one worker: the newest checkpoint restored at another scale.
    drain_at_one: bool,
}

/// Kills a live job `kills` times while input arrives, drains it, and reads the output
/// as a consumer.
fn crash_and_restore(arrival: Arrival, kills: usize, mode: Mode<'_>) {
    let seed = seed();
    let partitions = 4;
    let input = create_topic("ckpt-in", partitions);
    let output = create_topic("ckpt-out", 2);
    let sessions_out = create_topic("ckpt-sessions", 2);
    let join_out = create_topic("ckpt-join", 2);
    let keyed_out = create_topic("ckpt-keyed", 2);
    let group = unique("ckpt-group");
    // With --exactly-once also sessions with late data (their own copy of the input,
    // read with a short out-of-orderness): corrections and retractions are output too.
    let late_in = create_topic("ckpt-late-in", partitions);
    let late_out = create_topic("ckpt-late-sessions", 2);
    let all = generate(seed, 24_000, 16, partitions, 1_700_000_000_000, 24_000, 200);
    // What the broker logs while the test runs is printed with the jobs' (a broker fault
    // is told from a job's by it).
    let broker_mark = broker_log_mark();
    // Sessions of each key: events closer than the gap (the keys are busy, so gaps are
    // made by the generator's spacing and disorder alone).
    let sessions = [
        "--session-output",
        sessions_out.as_str(),
        "--session-gap-ms",
        "40",
    ];
    let hosts = hostfile(2);
    // Every run's log, kept to look for what the jobs report (see the end).
    let log = std::env::temp_dir().join(format!("{}.log", unique("ckpt-jobs")));
    // The commands of one run: one per process.
    let job = |draining: bool| -> Vec<std::process::Command> {
        let processes: Vec<Option<usize>> = match mode.two_processes {
            true if !(draining && mode.drain_at_one) => vec![Some(0), Some(1)],
            _ => vec![None],
        };
        let workers = if draining && mode.drain_at_one {
            "1"
        } else {
            "2"
        };
        processes
            .into_iter()
            .map(|process| {
                let mut cmd = job_binary(&input, &output, &group);
                match process {
                    Some(p) => cmd.args(&LIVE[2..]).args([
                        "-n",
                        "2",
                        "-p",
                        &p.to_string(),
                        "-h",
                        hosts.0.to_str().unwrap(),
                    ]),
                    None => cmd.args(["-w", workers]).args(&LIVE[2..]),
                };
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .expect("the jobs' log file");
                // Info lines (which checkpoint each run restored, where its sources
                // resumed) are printed with a failure: a few dozen per test.
                if std::env::var_os("FRESHET_TEST_JOB_LOG").is_none() {
                    cmd.env("RUST_LOG", "info");
                }
                cmd.args(sessions)
                    .args(["--join-output", &join_out, "--keyed-output", &keyed_out])
                    .stdout(std::process::Stdio::null())
                    .stderr(log);
                if mode.exactly_once {
                    cmd.arg("--exactly-once").args([
                        "--late-sessions-input",
                        &late_in,
                        "--late-sessions-output",
                        &late_out,
                    ]);
                }
                if let Some(url) = mode.store {
                    with_s3(cmd.args(["--checkpoint-dir", url]), s3_port());
                }
                cmd
            })
            .collect()
    };
    let (chunk, pause) = match arrival {
        Arrival::Steady => (400, Duration::from_millis(100)),
        Arrival::Bursty => (3_000, Duration::from_millis(1_200)),
    };
    let produced = Arc::new(AtomicUsize::new(0));
    let feed = {
        let (input, all, produced) = (input.clone(), all.clone(), produced.clone());
        let late_in = mode.exactly_once.then(|| late_in.clone());
        std::thread::spawn(move || {
            for part in all.chunks(chunk) {
                if let Some(late_in) = &late_in {
                    produce(&brokers(), late_in, part).expect("produce");
                }
                produce(&brokers(), &input, part).expect("produce");
                produced.fetch_add(part.len(), Ordering::SeqCst);
                std::thread::sleep(pause);
            }
        })
    };
    // Per kill: records on the topic but not covered by the newest checkpoint's commit,
    // an upper bound on what the restart reads again.
    let mut behind = Vec::new();

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut commits_seen = 0;
    for kill in 0..kills {
        let before: i64 = committed(&group, &input, partitions).values().sum();
        let mut children: Vec<Running> = job(false)
            .iter_mut()
            .map(|cmd| Running(cmd.spawn().expect("start the job")))
            .collect();
        // The kill comes at a random moment: during reading, a checkpoint write, a
        // commit or start-up. Every other run first completes a checkpoint of its own
        // (its commit moves), so the job makes progress however slow the machine.
        if kill % 2 == 1 {
            // One client of the group for the whole wait, not one per poll.
            let client = group_client(&group);
            wait_for(Duration::from_secs(60), "a checkpoint of this run", || {
                for child in children.iter_mut() {
                    if let Some(status) = child.try_wait().unwrap() {
                        panic!("the job exited before it was killed: {status}");
                    }
                }
                // A broker too busy to answer is asked again.
                let Ok(now) = try_committed_by(&client, &input, partitions) else {
                    return false;
                };
                let now: i64 = now.values().sum();
                now > before || now >= produced.load(Ordering::SeqCst) as i64
            });
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..600)));
        } else {
            std::thread::sleep(Duration::from_millis(rng.gen_range(200..1_800)));
        }
        for child in children.iter_mut() {
            child.kill().expect("SIGKILL");
            assert!(!child.wait().unwrap().success());
        }
        let at_kill = produced.load(Ordering::SeqCst) as i64;
        let commits = committed(&group, &input, partitions);
        if !commits.is_empty() {
            commits_seen += 1;
        }
        behind.push(at_kill - commits.values().sum::<i64>());
    }
    feed.join().expect("feeder");
    let drains: Vec<_> = job(true)
        .iter_mut()
        .map(|cmd| cmd.arg("--bounded").spawn().unwrap())
        .collect();
    for drain in drains {
        let status = finish(drain, "the draining run");
        assert!(
            status.success(),
            "the draining run failed; its log: {log:?}"
        );
    }
    // What the runs reported: an exactly-once sink that found records of checkpoints
    // newer than the one restored would write results again.
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let errors: Vec<&str> = logged.lines().filter(|l| l.contains("ERROR")).collect();
    println!(
        "{} lines logged by the runs ({log:?}), {} errors",
        logged.lines().count(),
        errors.len()
    );
    for line in errors.iter().take(20) {
        println!("  {line}");
    }
    // Every record here is on time (the generator's disorder is below the sources'
    // out-of-orderness), so a record dropped as behind restored state is a lost one.
    let warnings: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("WARN") && !l.contains("unconnected stream"))
        .collect();
    for line in warnings.iter().take(20) {
        println!("  {line}");
    }
    let broker_errors = broker_errors_since(broker_mark);
    println!(
        "{} errors and warnings logged by the broker meanwhile",
        broker_errors.len()
    );
    for line in broker_errors.iter().take(20) {
        println!("  broker: {line}");
    }
    // What each run started from (shown if the test fails).
    for line in logged
        .lines()
        .filter(|l| l.contains("restoring checkpoint") || l.contains("assigned"))
    {
        println!("  {line}");
    }
    assert!(
        !logged.contains("records read behind the restored state dropped"),
        "on-time records were dropped as behind restored state: {log:?}"
    );
    assert!(
        !logged.contains("newer than the one restored"),
        "a restarted sink found output of a newer checkpoint than the one restored: {log:?}"
    );

    // A consumer of the output topic: the last record per (key, window) wins.
    let written = decode::<WindowCount>(&read_topic(&output, 2));
    let mut table: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    let mut emitted: BTreeMap<(u64, u64), Vec<u64>> = BTreeMap::new();
    for w in &written {
        table.insert((w.key, w.start), w.value);
        emitted.entry((w.key, w.start)).or_default().push(w.value);
    }
    let expected = reference_counts(all.iter().map(|(_, e)| e), 1000);
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(k, v)| table.get(k).is_some_and(|got| got != *v))
        .collect();
    let missing: Vec<_> = expected.keys().filter(|k| !table.contains_key(k)).collect();
    let extra: Vec<_> = table.keys().filter(|k| !expected.contains_key(k)).collect();
    // Every earlier record of a window is an exact copy of the final one.
    let partial: usize = emitted
        .iter()
        .map(|(k, vs)| vs.iter().filter(|v| Some(*v) != expected.get(k)).count())
        .sum();
    let duplicates = written.len() - table.len();
    println!(
        "{arrival:?} input, {kills} SIGKILLs: {} windows, {} results written, {duplicates} \
         exact duplicates, {} wrong, {} missing, {} partial; commits seen after {commits_seen} kills; \
         records produced but not committed at each kill: {behind:?}",
        expected.len(),
        written.len(),
        wrong.len(),
        missing.len(),
        partial
    );
    assert!(wrong.is_empty(), "wrong final values: {wrong:?}");
    assert!(missing.is_empty(), "missing windows: {missing:?}");
    assert!(extra.is_empty(), "windows that should not exist: {extra:?}");
    assert_eq!(partial, 0, "a partial result was written");
    assert!(commits_seen > 0, "no run committed before it was killed");
    // Sessions, read the same way: the last record per (key, start, end).
    let mut got_sessions: BTreeMap<(u64, u64, u64), u64> = BTreeMap::new();
    for w in decode::<WindowCount>(&read_topic(&sessions_out, 2)) {
        got_sessions.insert((w.key, w.start, w.end), w.value);
    }
    let want_sessions = reference_sessions(all.iter().map(|(_, e)| e), 40);
    let wrong_sessions = got_sessions
        .iter()
        .filter(|(k, v)| want_sessions.get(k) != Some(v))
        .count();
    let missing_sessions = want_sessions
        .keys()
        .filter(|k| !got_sessions.contains_key(k))
        .count();
    println!(
        "{arrival:?} input: {} sessions, {wrong_sessions} wrong or extra, {missing_sessions} missing",
        want_sessions.len()
    );
    assert_eq!(got_sessions, want_sessions, "session windows");
    // The join's rows per (key, window), and the keyed state's running counts: the last
    // record per key wins.
    let mut got_join: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    let mut join_history: BTreeMap<(u64, u64), Vec<u64>> = BTreeMap::new();
    // Each key's partition, shown for the windows that differ (all in one partition and
    // written together would point at a lost produce).
    let mut key_partition: BTreeMap<u64, i32> = BTreeMap::new();
    let join_read = read_topic(&join_out, 2);
    for (w, (partition, _, _)) in decode::<WindowCount>(&join_read)
        .into_iter()
        .zip(&join_read)
    {
        key_partition.insert(w.key, *partition);
        got_join.insert((w.key, w.start), w.value);
        join_history
            .entry((w.key, w.start))
            .or_default()
            .push(w.value);
    }
    let want_join = reference_join_rows(all.iter().map(|(_, e)| e), 1000);
    let mut got_keyed: BTreeMap<u64, u64> = BTreeMap::new();
    for c in decode::<KeyCount>(&read_topic(&keyed_out, 2)) {
        got_keyed.insert(c.key, c.count);
    }
    let mut want_keyed: BTreeMap<u64, u64> = BTreeMap::new();
    for (_, e) in &all {
        *want_keyed.entry(e.key).or_default() += 1;
    }
    println!(
        "{arrival:?} input: {} join windows ({} differ), {} keys of keyed state ({} differ)",
        want_join.len(),
        want_join
            .iter()
            .filter(|(k, v)| got_join.get(k) != Some(v))
            .count(),
        want_keyed.len(),
        want_keyed
            .iter()
            .filter(|(k, v)| got_keyed.get(k) != Some(v))
            .count(),
    );
    let join_differ: Vec<_> = want_join
        .iter()
        .filter(|(k, v)| got_join.get(k) != Some(v))
        .map(|(k, v)| (k, key_partition.get(&k.0), *v, join_history.get(k)))
        .take(10)
        .collect();
    if !join_differ.is_empty() {
        // Read again: a broker that had not yet made every write visible shows more.
        std::thread::sleep(Duration::from_secs(2));
        println!(
            "the join topic read again 2 s later: {} records, first read {}",
            read_topic(&join_out, 2).len(),
            join_read.len()
        );
    }
    assert!(
        join_differ.is_empty(),
        "window join rows per key and window, (key, start), partition, want, every value written: \
         {join_differ:?}"
    );
    assert_eq!(got_join, want_join, "window join rows per key and window");
    assert_eq!(got_keyed, want_keyed, "keyed state: running counts per key");
    assert_eq!(
        committed(&group, &input, partitions),
        ends(&read_topic(&input, partitions))
    );
    // Copies: records of a topic identical to an earlier one (every result of this job
    // differs from every other: a window's count, a session, a key's running count).
    let mut topics = vec![&output, &sessions_out, &join_out, &keyed_out];
    if mode.exactly_once {
        topics.push(&late_out);
        check_late_sessions(
            &late_out,
            reference_sessions(all.iter().map(|(_, e)| e), 40),
        );
    }
    let copies: Vec<(&str, usize)> = topics
        .into_iter()
        .map(|topic| (topic.as_str(), copies(&read_topic(topic, 2))))
        .collect();
    println!(
        "{arrival:?} input, exactly once {}: copies per output topic {copies:?}",
        mode.exactly_once
    );
    if mode.exactly_once {
        assert!(
            copies.iter().all(|(_, n)| *n == 0),
            "an exactly-once job wrote results twice: {copies:?}"
        );
    }
}

/// Reads the sessions with late data as a consumer of the topic in its order — per
/// `(key, start, end)` the last record wins, a retraction deletes — and compares them
/// with `want`; late records must have corrected or retracted some emitted session.
///
/// Topic order, not the highest revision: the session operator can retract bounds and
/// later emit the same bounds again from revision 0 (a late record that re-opens an
/// emitted session without moving it, seen under live reading with restarts), so the
/// revision does not order those; a key's results come from one worker, and the
/// exactly-once sink writes them in the order they arrived.
fn check_late_sessions(topic: &str, want: BTreeMap<(u64, u64, u64), u64>) {
    let written = decode::<WindowCount>(&read_topic(topic, 2));
    let mut got: BTreeMap<(u64, u64, u64), u64> = BTreeMap::new();
    for w in &written {
        match w.kind {
            freshet::operators::Emit::Retract => got.remove(&(w.key, w.start, w.end)),
            _ => got.insert((w.key, w.start, w.end), w.value),
        };
    }
    let corrections = written
        .iter()
        .filter(|w| w.kind != freshet::operators::Emit::Final)
        .count();
    println!(
        "sessions with late data: {} sessions, {} records written, {corrections} corrections \
         and retractions, {} differ",
        want.len(),
        written.len(),
        want.iter().filter(|(k, v)| got.get(k) != Some(v)).count()
    );
    assert!(corrections > 0, "no late record corrected a session");
    let differ: Vec<_> = want.iter().filter(|(k, v)| got.get(k) != Some(v)).collect();
    for (k, v) in differ.iter().take(3) {
        let near: Vec<_> = written
            .iter()
            .filter(|w| w.key == k.0 && w.start < k.2 + 100 && w.end + 100 > k.1)
            .map(|w| (w.start, w.end, w.value, w.revision, w.kind))
            .collect();
        println!(
            "late sessions differ: want {k:?} = {v}, got {:?}; written: {near:?}",
            got.get(k)
        );
    }
    let extra = got.keys().filter(|k| !want.contains_key(k)).count();
    assert!(
        differ.is_empty() && extra == 0,
        "sessions with late data: {} wrong or missing, {extra} that should not exist",
        differ.len()
    );
}

/// How many records of `read` repeat an earlier record's payload.
fn copies(read: &[Read]) -> usize {
    let mut seen = std::collections::HashSet::new();
    read.iter()
        .filter(|(_, _, payload)| !seen.insert(payload.clone()))
        .count()
}

/// Waits for a bounded run to end, at most two minutes (a run that hangs fails the test
/// instead of stalling the suite).
fn finish(mut child: std::process::Child, what: &str) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().expect("waiting for the job") {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish within two minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The test job's left join of even-amount with odd-amount events per key and tumbling
/// window of `size` ms, sequentially: `(key, start) -> rows` (each left event once per
/// partner, or once alone).
fn reference_join_rows<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    size: u64,
) -> BTreeMap<(u64, u64), u64> {
    let mut sides: BTreeMap<(u64, u64), (u64, u64)> = BTreeMap::new();
    for e in events {
        let side = sides.entry((e.key, e.ts / size * size)).or_default();
        if e.amount % 2 == 0 {
            side.0 += 1;
        } else {
            side.1 += 1;
        }
    }
    sides
        .into_iter()
        .filter(|(_, (left, _))| *left > 0)
        .map(|(k, (left, right))| (k, left * right.max(1)))
        .collect()
}

/// Per-key sessions of `gap` ms, sequentially: `(key, start, end) -> count`.
fn reference_sessions<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    gap: u64,
) -> BTreeMap<(u64, u64, u64), u64> {
    let mut times: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for e in events {
        times.entry(e.key).or_default().push(e.ts);
    }
    let mut out = BTreeMap::new();
    for (key, mut ts) in times {
        ts.sort_unstable();
        let (mut start, mut last, mut n) = (ts[0], ts[0], 0);
        for t in ts {
            if t >= last + gap {
                out.insert((key, start, last + gap), n);
                (start, n) = (t, 0);
            }
            last = t;
            n += 1;
        }
        out.insert((key, start, last + gap), n);
    }
    out
}

/// The seed of a crash test's input and of its kill moments: `$FRESHET_TEST_SEED` to
/// replay a run, else drawn afresh, so that every run kills other input at other
/// moments. Printed either way (a failing test's output shows it).
fn seed() -> u64 {
    let seed = knob("FRESHET_TEST_SEED").unwrap_or_else(rand::random);
    println!("seed {seed} (FRESHET_TEST_SEED={seed} replays the input and the kill moments)");
    seed
}

/// `n` kills, or `$FRESHET_TEST_KILLS` for a longer soak of the crash tests.
fn kills(n: usize) -> usize {
    knob("FRESHET_TEST_KILLS").unwrap_or(n)
}

#[test]
fn steady_input_survives_sigkills_exactly() {
    crash_and_restore(Arrival::Steady, kills(5), Mode::default());
}

#[test]
fn bursty_input_survives_sigkills_exactly() {
    crash_and_restore(Arrival::Bursty, kills(5), Mode::default());
}

/// The steady crash test with the job as two processes of one worker each.
#[test]
fn steady_input_at_two_processes_survives_sigkills_exactly() {
    let mode = Mode {
        two_processes: true,
        ..Mode::default()
    };
    crash_and_restore(Arrival::Steady, kills(5), mode);
}

/// The same crash test with checkpoints in an object store over the S3 protocol.
#[test]
fn checkpoints_in_an_s3_store_survive_sigkills_exactly() {
    let store = s3_location("crash");
    crash_and_restore(
        Arrival::Steady,
        5,
        Mode {
            store: Some(&store),
            ..Mode::default()
        },
    );
}

/// `--exactly-once`: ten SIGKILLs of a live job at 2 workers, and the output topics hold
/// every result once — no copy at all — besides being right and complete.
#[test]
fn exactly_once_output_has_no_duplicates_after_sigkills() {
    crash_and_restore(
        Arrival::Steady,
        10,
        Mode {
            exactly_once: true,
            ..Mode::default()
        },
    );
}

/// The same under bursty input.
#[test]
fn exactly_once_output_under_bursty_input_has_no_duplicates_after_sigkills() {
    crash_and_restore(
        Arrival::Bursty,
        10,
        Mode {
            exactly_once: true,
            ..Mode::default()
        },
    );
}

/// The same at 2 processes of one worker each.
#[test]
fn exactly_once_output_at_two_processes_has_no_duplicates_after_sigkills() {
    crash_and_restore(
        Arrival::Steady,
        10,
        Mode {
            exactly_once: true,
            two_processes: true,
            ..Mode::default()
        },
    );
}

/// `--exactly-once` across a rescale: killed at 2 workers, drained at 1. The records a
/// sink held in the restored checkpoint are shared out by Kafka key to the new workers,
/// and each is still written once.
#[test]
fn exactly_once_output_survives_a_rescale() {
    crash_and_restore(
        Arrival::Steady,
        6,
        Mode {
            exactly_once: true,
            drain_at_one: true,
            ..Mode::default()
        },
    );
}

/// With 10-minute windows nothing is emitted for minutes, yet offsets are committed as
/// checkpoints complete: commits no longer wait for windows to close.
#[test]
fn commits_follow_checkpoints_not_windows() {
    let partitions = 2;
    let input = create_topic("ckpt-long-in", partitions);
    let output = create_topic("ckpt-long-out", 1);
    let group = unique("ckpt-long-group");
    let mut child = Running(
        job_binary(&input, &output, &group)
            .args(LIVE)
            .args(["--window-ms", "600000"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the job"),
    );
    // Event times a few seconds apart: every window stays open.
    let all = generate(3, 6_000, 8, partitions, 1_700_000_000_000, 6_000, 100);
    let mut produced = 0;
    for part in all.chunks(500) {
        produce(&brokers(), &input, part).expect("produce");
        produced += part.len() as i64;
        wait_for(
            Duration::from_secs(30),
            "every record produced so far committed",
            || committed(&group, &input, partitions).values().sum::<i64>() == produced,
        );
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert!(
        read_topic(&output, 1).is_empty(),
        "a 10-minute window was emitted: the test no longer shows commits running ahead of windows"
    );
}

/// A checkpoint taken at 2 workers restores at 1 worker, at 3 workers and as 2
/// processes: key groups move to the workers that own them now, partitions to theirs,
/// and the output a consumer reads is exactly the sequential count every time.
#[test]
fn a_checkpoint_taken_at_two_workers_restores_at_other_scales() {
    for scale in [&["-w", "1"][..], &["-w", "3"][..], &["-n", "2"][..]] {
        let partitions = 4;
        let input = create_topic("rescale-in", partitions);
        let output = create_topic("rescale-out", 2);
        let group = unique("rescale-group");
        let all = generate(5, 12_000, 16, partitions, 1_700_000_000_000, 12_000, 200);
        let (first, second) = all.split_at(all.len() / 2);
        produce(&brokers(), &input, first).expect("produce");
        // A live run at 2 workers reads the first half and is killed once a checkpoint
        // covering some of it is complete (offsets are committed only then).
        let mut child = Running(
            job_binary(&input, &output, &group)
                .args(LIVE)
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("start the job"),
        );
        wait_for(Duration::from_secs(60), "a complete checkpoint", || {
            committed(&group, &input, partitions).values().sum::<i64>() > 0
        });
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        produce(&brokers(), &input, second).expect("produce");
        // The drain at another scale restores it.
        let bounded = |process: Option<usize>, hosts: Option<&str>| {
            let mut cmd = job_binary(&input, &output, &group);
            cmd.args([
                "--bounded",
                "--epoch-ms",
                "50",
                "--idle-timeout-ms",
                "600000",
            ]);
            if let (Some(p), Some(h)) = (process, hosts) {
                cmd.args(["-n", "2", "-p", &p.to_string(), "-h", h]);
            } else {
                cmd.args(scale);
            }
            cmd.stdout(std::process::Stdio::null())
                .spawn()
                .expect("start")
        };
        if scale[0] == "-n" {
            let hosts = hostfile(2);
            let path = hosts.0.to_str().unwrap().to_string();
            let (a, b) = (bounded(Some(0), Some(&path)), bounded(Some(1), Some(&path)));
            let (a, b) = (finish(a, "process 0"), finish(b, "process 1"));
            assert!(a.success() && b.success());
        } else {
            assert!(
                finish(bounded(None, None), "the drain").success(),
                "drain at {scale:?}"
            );
        }
        let written = decode::<WindowCount>(&read_topic(&output, 2));
        let mut table: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        for w in &written {
            table.insert((w.key, w.start), w.value);
        }
        let expected = reference_counts(all.iter().map(|(_, e)| e), 1000);
        assert_eq!(table, expected, "restored at {scale:?}");
    }
}

/// With its checkpoint store down the job keeps running — reading, computing, writing
/// results — but commits stop and it says why; once the store answers again,
/// checkpoints and commits resume, and a restart restores from what was written since.
#[test]
fn a_checkpoint_store_that_goes_away_stops_commits_not_the_job() {
    let partitions = 2;
    let input = create_topic("s3-down-in", partitions);
    let output = create_topic("s3-down-out", 1);
    let group = unique("s3-down-group");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let s3 = PrivateS3::start(port);
    let location = format!("s3://{BUCKET}/down");
    let log = std::env::temp_dir().join(unique("s3-down-log"));
    let job = || {
        let mut cmd = job_binary(&input, &output, &group);
        cmd.args(LIVE)
            .args(["--checkpoint-dir", &location])
            .stdout(std::process::Stdio::null());
        with_s3(&mut cmd, port);
        cmd
    };
    let all = generate(17, 9_000, 8, partitions, 1_700_000_000_000, 9_000, 100);
    let thirds: Vec<_> = all.chunks(3_000).collect();
    let mut child = Running(
        job()
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the job"),
    );
    let committed_sum = || committed(&group, &input, partitions).values().sum::<i64>();

    produce(&brokers(), &input, thirds[0]).expect("produce");
    wait_for(Duration::from_secs(60), "the first third committed", || {
        committed_sum() == 3_000
    });
    s3.stop();
    produce(&brokers(), &input, thirds[1]).expect("produce");
    // The job goes on: windows of the second third are computed and written.
    let first_end = thirds[0].iter().map(|(_, e)| e.ts).max().unwrap();
    wait_for(
        Duration::from_secs(60),
        "results of the second third",
        || {
            decode::<WindowCount>(&read_topic(&output, 1))
                .iter()
                .any(|w| w.start > first_end + 1_000)
        },
    );
    assert_eq!(
        committed_sum(),
        3_000,
        "offsets committed past a checkpoint that could not be written"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("checkpoint part not written") && text.contains(&location),
        "no clear error naming the store: {text}"
    );
    assert!(child.try_wait().unwrap().is_none(), "the job exited");

    // The store is back (empty: moto keeps objects in memory); commits resume.
    s3.restart();
    wait_for(
        Duration::from_secs(60),
        "commits after the store is back",
        || committed_sum() == 6_000,
    );
    produce(&brokers(), &input, thirds[2]).expect("produce");
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let drain = job().arg("--bounded").spawn().unwrap();
    assert!(finish(drain, "the drain").success(), "the drain failed");
    let mut table: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for w in decode::<WindowCount>(&read_topic(&output, 1)) {
        table.insert((w.key, w.start), w.value);
    }
    assert_eq!(table, reference_counts(all.iter().map(|(_, e)| e), 1000));
    let _ = std::fs::remove_file(&log);
}

/// An exactly-once sink cannot account for its own records of a checkpoint newer than
/// the one it restores (a store that lost its newest manifests, here deleted by hand):
/// the restarted job says so as an error instead of writing them again silently.
#[test]
fn exactly_once_output_of_a_lost_checkpoint_is_reported() {
    let partitions = 2;
    let input = create_topic("eo-lost-in", partitions);
    let output = create_topic("eo-lost-out", 2);
    let keyed = create_topic("eo-lost-keyed", 1);
    let group = unique("eo-lost-group");
    let dir = std::env::temp_dir().join(unique("eo-lost-checkpoints"));
    let log = std::env::temp_dir().join(unique("eo-lost-log"));
    let job = || {
        let mut cmd = job_binary(&input, &output, &group);
        cmd.args(LIVE)
            .args(["--exactly-once", "--keyed-output", &keyed])
            .args(["--checkpoint-retain", "100", "--checkpoint-dir"])
            .arg(&dir)
            .stdout(std::process::Stdio::null());
        cmd
    };
    let all = generate(23, 8_000, 16, partitions, 1_700_000_000_000, 8_000, 100);
    let mut child = Running(job().spawn().expect("start the job"));
    // Input arrives in steps; the job writes every key's running count at each (once
    // the watermark passes it: a last event 5 s later in every partition moves it past
    // them all).
    for part in all.chunks(1_000) {
        produce(&brokers(), &input, part).expect("produce");
        std::thread::sleep(Duration::from_millis(300));
    }
    let last = all.iter().map(|(_, e)| e.ts).max().unwrap();
    let flush = Event {
        key: 99,
        ts: last + 5_000,
        amount: 0,
    };
    let flush: Vec<(i32, Event)> = (0..partitions).map(|p| (p, flush.clone())).collect();
    produce(&brokers(), &input, &flush).expect("produce");
    wait_for(
        Duration::from_secs(60),
        "every running count written",
        || read_headed(&keyed, 0).len() >= all.len(),
    );
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    // The checkpoint of the newest records in the topic, and every manifest from there.
    let newest: u64 = read_headed(&keyed, 0)
        .iter()
        .filter_map(|h| {
            h.header(freshet::sink::exactly_once::ID_HEADER)
                .split('.')
                .next()?
                .parse()
                .ok()
        })
        .max()
        .expect("records carry their identity");
    let manifests: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?.to_string();
            let epoch = name.strip_prefix("manifest-")?.strip_suffix(".json")?;
            Some((epoch.parse().ok()?, path))
        })
        .collect();
    assert!(
        manifests.iter().any(|(e, _)| *e < newest),
        "an older checkpoint to restore: {manifests:?}, newest records of {newest}"
    );
    for (epoch, path) in &manifests {
        if *epoch >= newest {
            std::fs::remove_file(path).unwrap();
        }
    }
    let mut child = Running(
        job()
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("restart the job"),
    );
    wait_for(Duration::from_secs(60), "the restart's read-back", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("newer than the one restored"))
    });
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("ERROR"), "logged as an error: {text}");
    assert!(text.contains("KafkaSink("), "names the sink: {text}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&log);
}
