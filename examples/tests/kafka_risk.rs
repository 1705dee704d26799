//! The risk-control job against the real broker: a bounded run over generated payments
//! alerts exactly the (IP, window) pairs a sequential loop finds, once each, and commits
//! the input's ends.

mod utils;

use std::collections::BTreeSet;

use freshet::{run, Cluster, JobConfig, KafkaConfig};
use freshet_examples::risk::{self, RiskAlert, RiskRule};
use freshet_examples::{latencies, produce_json, Outgoing};
use utils::*;

#[test]
fn risk_control_alerts_match_the_reference() {
    let input = create_topic("payments", 3);
    let output = create_topic("risk-alerts", 2);
    let payments = risk::generate_payments(12, 8_000, 300, 4, 3, 1_700_000_000_000, 240_000);
    produce_json(
        &brokers(),
        &input,
        payments.iter().map(|(p, pay)| Outgoing {
            partition: Some(*p),
            key: pay.ip.clone(),
            ts: pay.ts,
            value: pay,
        }),
    )
    .unwrap();
    let rule = RiskRule::default();
    let expected = risk::reference_alerts(payments.iter().map(|(_, p)| p), &rule);
    assert!(
        expected.len() > 10,
        "the generator should make attackers cross"
    );

    let group = unique("risk-group");
    let mut config = JobConfig::new(KafkaConfig::new(brokers(), group.clone()));
    config.source.bounded = true;
    config.cluster = Cluster {
        workers: 2,
        ..Cluster::default()
    };
    let lat = latencies();
    let summary = run(
        config,
        risk::job(
            input.clone(),
            output.clone(),
            rule,
            false,
            Some(lat.clone()),
        ),
    )
    .expect("risk job");
    assert_eq!(summary.records_in, payments.len() as u64);

    let alerts: Vec<RiskAlert> = decode(&read_topic(&output, 2));
    let got: BTreeSet<(String, u64)> = alerts.iter().map(|a| (a.ip.clone(), a.start)).collect();
    assert_eq!(got.len(), alerts.len(), "one alert per (ip, window)");
    assert_eq!(got, expected.keys().cloned().collect::<BTreeSet<_>>());
    assert!(alerts
        .iter()
        .all(|a| a.stats.count >= rule.max_count || a.stats.sum_cents >= rule.max_sum_cents));
    assert_eq!(lat.lock().unwrap().len(), alerts.len() as u64);
    assert_eq!(committed(&group, &input, 3), ends(&read_topic(&input, 3)));
}
