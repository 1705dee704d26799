//! Table sides against the real broker: a table topic decoded with `Upserts` feeds
//! null payloads through as tombstones (not to the error stream), and a lookup finds no
//! value for a key deleted before the stream record's time; a restarted job restores
//! its lookup's table from the checkpoint and reads the table topic on from there.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use freshet::codec::{Json, Upserts};
use freshet::operators::{JoinKind, Lookup};
use freshet::{run, Collect, JobConfig, KafkaConfig, KafkaSource, StartFrom};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use support::window_count::{LookedUp, Noted};
use support::*;
use timely::dataflow::operators::vec::Map;

const T0: u64 = 1_700_000_000_000;

fn event(key: u64, ts: u64, amount: i64) -> Event {
    Event { key, ts, amount }
}

#[test]
fn a_tombstoned_key_finds_no_match() {
    // The table: key 1 written at T0 and deleted (a null payload) at T0 + 1000; key 2
    // written at T0.
    let table = create_topic("table-rows", 1);
    produce(
        &brokers(),
        &table,
        &[(0, event(1, T0, 10)), (0, event(2, T0, 20))],
    )
    .unwrap();
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    producer
        .send(
            BaseRecord::<str, [u8]>::to(&table)
                .partition(0)
                .key("1")
                .timestamp((T0 + 1000) as i64),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();

    // The stream: key 1 before and after the tombstone, key 2 after it.
    let stream = create_topic("table-stream", 1);
    let records = [
        (0, event(1, T0 + 500, 0)),
        (0, event(1, T0 + 2000, 0)),
        (0, event(2, T0 + 2000, 0)),
    ];
    produce(&brokers(), &stream, &records).unwrap();

    let mut config = JobConfig::new(KafkaConfig::new(brokers(), unique("table-group")));
    config.source.bounded = true;
    config.source.start = StartFrom::Earliest;
    let out = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let (o, e) = (out.clone(), errors.clone());
    run(config, move |job| {
        let rows = KafkaSource::new(table.clone(), Upserts(Json::<Event>::new()))
            .table(job.source_config())
            .build(job)?;
        rows.errors.collect_into(job, "table errors", e.clone());
        let rows = rows.records.map(|u| {
            let key = String::from_utf8_lossy(&u.key)
                .parse::<u64>()
                .unwrap_or(u64::MAX);
            (key, u.value.map(|v| v.amount))
        });
        KafkaSource::new(stream.clone(), Json::<Event>::new())
            .event_time(|e: &Event| Some(e.ts))
            .build(job)?
            .records
            .lookup_upserts_with(
                rows,
                "table",
                JoinKind::Left,
                |e: &Event| e.key,
                |e, v| (e.key, e.ts, v.copied()),
            )
            .collect_into(job, "joined", o.clone());
        Ok(())
    })
    .expect("job");

    assert!(
        errors.lock().unwrap().is_empty(),
        "a tombstone reached the error stream"
    );
    let mut got: Vec<_> = out.lock().unwrap().iter().map(|(_, r)| *r).collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (1, T0 + 500, Some(10)),
            (1, T0 + 2000, None),
            (2, T0 + 2000, Some(20))
        ]
    );
}

/// Stream records `(key, ts)` as the test job's lookup input.
fn notes(records: impl IntoIterator<Item = (u64, u64)>) -> Vec<(i32, String, i64, Vec<u8>)> {
    records
        .into_iter()
        .map(|(key, ts)| {
            let n = Noted {
                key,
                ts,
                note: String::new(),
            };
            (
                0,
                key.to_string(),
                ts as i64,
                serde_json::to_vec(&n).unwrap(),
            )
        })
        .collect()
}

/// A restarted job finds its lookup's table in the checkpoint: the table source resumes
/// at the checkpoint's offset, not at the topic's start, and stream records read after
/// the restart still find the values of rows before that offset (a consumer of the
/// output, last record per `(key, ts)` winning, sees the sequential reference).
#[test]
fn a_restarted_lookup_finds_its_table_in_the_checkpoint() {
    let (input, output) = (create_topic("tcp-in", 1), create_topic("tcp-out", 1));
    let (stream, table) = (create_topic("tcp-stream", 1), create_topic("tcp-table", 1));
    let looked_up = create_topic("tcp-looked-up", 1);
    let group = unique("tcp-group");
    let job = |extra: &[&str]| {
        let mut cmd = job_binary(&input, &output, &group);
        cmd.args(["--lookup-input", &stream, "--lookup-table", &table])
            .args(["--lookup-output", &looked_up])
            .args(["--epoch-ms", "50", "--checkpoint-interval-ms", "100"])
            .args(extra)
            .env("RUST_LOG", "info");
        cmd
    };
    let now = freshet::clock::now_ms();
    let base = now - 600_000;
    // Keys 0..20 cost `10 k + 1` from `base`; a row at `now` moves the table's
    // watermark past the first stream records.
    let mut rows: Vec<(i32, Event)> = (0..20)
        .map(|k| (0, event(k, base, 10 * k as i64 + 1)))
        .collect();
    rows.push((0, event(99, now, 0)));
    produce(&brokers(), &table, &rows).unwrap();
    produce_payloads(&stream, &notes((0..200).map(|i| (i % 20, base + 1000 + i)))).unwrap();

    // The first run, killed once a checkpoint after its table was read is complete: a
    // stream record produced after the first results were out is read after the table
    // rows, and its offset is committed only once a checkpoint covering it is.
    let log = std::env::temp_dir().join(format!("{group}-first.log"));
    let mut first = Running(
        job(&[])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting the test job"),
    );
    wait_for(Duration::from_secs(60), "the first run's lookups", || {
        read_topic(&looked_up, 1).len() >= 200
    });
    produce_payloads(&stream, &notes([(1, base + 1500)])).unwrap();
    let client = group_client(&group);
    wait_for(
        Duration::from_secs(60),
        "a checkpoint after the table was read",
        || committed_by(&client, &stream, 1).get(&0) == Some(&201),
    );
    first.0.kill().unwrap();
    first.0.wait().unwrap();

    // Key 0 changes; stream records before and after the change.
    let changed = freshet::clock::now_ms();
    produce(&brokers(), &table, &[(0, event(0, changed, 999))]).unwrap();
    let later: Vec<(u64, u64)> = (0..200).map(|i| (i % 20, changed + i - 100)).collect();
    produce_payloads(&stream, &notes(later.clone())).unwrap();
    let second = job(&["--bounded"]).output().expect("the second run");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "the second run failed:\n{stderr}");
    let assigned: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("assigned") && l.contains(&format!("topic=\"{table}\"")))
        .collect();
    assert!(
        assigned.len() == 1
            && assigned[0].contains("offset=Offset(")
            && !assigned[0].contains("Offset(0)"),
        "the table source did not resume at the checkpoint's offset: {assigned:?}"
    );

    let mut got = BTreeMap::new();
    for l in decode::<LookedUp>(&read_topic(&looked_up, 1)) {
        got.insert((l.key, l.ts), l.amount);
    }
    let first_records = (0..200).map(|i| (i % 20, base + 1000 + i));
    let want: BTreeMap<(u64, u64), Option<i64>> = first_records
        .chain([(1, base + 1500)])
        .chain(later)
        .map(|(k, ts)| {
            let amount = if k == 0 && ts >= changed {
                999
            } else {
                10 * k as i64 + 1
            };
            ((k, ts), Some(amount))
        })
        .collect();
    let wrong: Vec<_> = want
        .iter()
        .filter(|(id, v)| got.get(*id) != Some(*v))
        .map(|(id, v)| (id, v, got.get(id)))
        .collect();
    assert!(
        wrong.is_empty() && got.len() == want.len(),
        "{} of {} lookups wrong or missing ((key, ts), want, got): {:?}; {} extra",
        wrong.len(),
        want.len(),
        &wrong[..wrong.len().min(10)],
        got.len().saturating_sub(want.len() - wrong.len())
    );
}
