//! A table side with tombstones against the real broker: a table topic decoded with
//! `Upserts` feeds null payloads through as tombstones (not to the error stream), and
//! a lookup finds no value for a key deleted before the stream record's time.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use freshet::codec::{Json, Upserts};
use freshet::operators::{JoinKind, Lookup};
use freshet::{run, Collect, JobConfig, KafkaConfig, KafkaSource, StartFrom};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
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
