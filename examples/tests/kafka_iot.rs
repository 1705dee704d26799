//! The IoT job against the real broker: bursty, out-of-order readings; anomalies and
//! silent devices on their two topics, equal to a sequential reference.

mod utils;

use freshet::{run, Cluster, JobConfig, KafkaConfig};
use freshet_examples::iot::{self, IotAlert, IotRule, Reading};
use freshet_examples::{produce_json, Outgoing};
use utils::*;

/// A value as the job sees it: through JSON and back.
fn through_json<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> T {
    serde_json::from_slice(&serde_json::to_vec(v).unwrap()).unwrap()
}

#[test]
fn iot_anomalies_and_silent_devices_match_the_reference() {
    let input = create_topic("readings", 3);
    let anomalies = create_topic("anomalies", 2);
    let status = create_topic("device-status", 2);
    let readings: Vec<Reading> =
        iot::generate_readings(21, 8, 1_700_000_000_000, 20_000, 400, 3_000, 200)
            .iter()
            .map(through_json)
            .collect();
    produce_json(
        &brokers(),
        &input,
        readings.iter().map(|r| Outgoing {
            partition: Some((r.device % 3) as i32),
            key: r.device.to_string(),
            ts: r.ts,
            value: r,
        }),
    )
    .unwrap();
    let rule = IotRule::default();
    let expected: Vec<IotAlert> = iot::reference(&readings, &rule)
        .iter()
        .map(through_json)
        .collect();

    let group = unique("iot-group");
    let mut config = JobConfig::new(KafkaConfig::new(brokers(), group.clone()));
    config.source.bounded = true;
    config.cluster = Cluster {
        workers: 2,
        ..Cluster::default()
    };
    run(
        config,
        iot::job(
            input.clone(),
            anomalies.clone(),
            status.clone(),
            rule,
            false,
        ),
    )
    .expect("iot job");

    let key = |a: &IotAlert| format!("{a:?}");
    let mut got: Vec<String> = decode::<IotAlert>(&read_topic(&anomalies, 2))
        .iter()
        .chain(decode::<IotAlert>(&read_topic(&status, 2)).iter())
        .map(key)
        .collect();
    let mut want: Vec<String> = expected.iter().map(key).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert!(expected.iter().filter(|a| a.is_anomaly()).count() > 3);
    // Device 0 went silent in the middle of the run, not only at its end.
    assert!(
        expected
            .iter()
            .filter(|a| matches!(a, IotAlert::Silent { device: 0, .. }))
            .count()
            >= 2
    );
    assert_eq!(committed(&group, &input, 3), ends(&read_topic(&input, 3)));
}
