//! The code samples of `docs/guide.md` that are not whole jobs, compiled and run: the
//! late-data wiring (compiled) and the several-worker test (run against a sequential
//! reference).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use freshet::operators::scripted::ScriptedInput;
use freshet::operators::Slide;
use freshet::timely::dataflow::operators::Inspect;
use freshet::timely::dataflow::StreamVec;
use freshet::{Job, Json, KafkaSink, KafkaSource, PrintStdout, Time, Windowed, WriteKafka};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
struct Payment {
    ip: String,
    amount_cents: i64,
    ts: u64,
}

/// The guide's logic: per IP, payments per sliding minute.
fn per_ip<'s>(
    payments: StreamVec<'s, Time, Payment>,
) -> StreamVec<'s, Time, Windowed<String, u64>> {
    payments.slide_count("per-ip", 60_000, 10_000, |p: &Payment| p.ip.clone())
}

/// The guide's late-data sample (section 2), compiled as written.
#[allow(dead_code)]
fn late_data_sample(job: &Job<'_>) -> freshet::Result<()> {
    use freshet::operators::aggregate::Sum;
    use freshet::operators::{Tumble, WindowPolicy};

    let s = KafkaSource::new("payments", Json::<Payment>::new())
        .event_time(|p: &Payment| Some(p.ts))
        .build(job)?;
    let spend = s.records.tumble(
        "spend",
        60_000,
        WindowPolicy::new().lateness(300_000).early(10_000),
        Some(s.late),
        |p: &Payment| p.ip.clone(),
        Sum::new(|p: &Payment| p.amount_cents),
    );
    spend.results.write_kafka(
        job,
        KafkaSink::new("spend", Json::new())
            .key(|w: &Windowed<String, i64>| Some(format!("{}@{}", w.key, w.start).into_bytes())),
    )?;
    spend.too_late.print_stdout(job, "too late");
    Ok(())
}

fn test_payments() -> Vec<Payment> {
    (0..500u64)
        .map(|i| Payment {
            ip: format!("10.0.0.{}", i % 7),
            amount_cents: (i % 13) as i64,
            ts: (i * 7_919) % 300_000,
        })
        .collect()
}

/// Per IP and sliding window `[n·10 s, n·10 s + 60 s)`, `n >= 0`: `(ip, start, count)`.
fn reference(payments: &[Payment]) -> Vec<(String, u64, u64)> {
    let mut counts: BTreeMap<(String, u64), u64> = BTreeMap::new();
    for p in payments {
        for start in (0..=p.ts).step_by(10_000).filter(|s| p.ts < s + 60_000) {
            *counts.entry((p.ip.clone(), start)).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|((ip, start), n)| (ip, start, n))
        .collect()
}

/// The guide's several-worker test (section 3), as written, at 2 workers.
#[test]
fn several_workers_sample_matches_the_reference() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shared = seen.clone();
    freshet::timely::execute(freshet::timely::Config::process(2), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let shared = shared.clone();
        let mut input = worker.dataflow::<Time, _, _>(|scope| {
            let (input, payments) = ScriptedInput::new(&scope);
            per_ip(payments).inspect(move |w| {
                shared
                    .lock()
                    .unwrap()
                    .push((w.key.clone(), w.start, w.value))
            });
            input
        });
        for (_, p) in test_payments()
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % peers == index)
        {
            input.send(Time::new(p.ts, 0), p);
        }
        input.close();
    })
    .unwrap();
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, reference(&test_payments()));
}
