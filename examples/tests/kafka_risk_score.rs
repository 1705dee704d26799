//! The risk-score job against the real broker: bounded runs over generated payments,
//! one late payment, one too late and one malformed message. Every payment gets exactly
//! one decision whose features are those a sequential loop computes, in exact mode at 2
//! workers and on arrival at 1 worker (the input is in event-time order, so on arrival
//! sees every earlier payment too); the too-late payment and the malformed message are
//! on the errors topic.

mod utils;

use std::collections::BTreeMap;

use freshet::operators::RollingMode;
use freshet::{run, Cluster, JobConfig, KafkaConfig, ProducerSettings};
use freshet_examples::risk::{self, Payment};
use freshet_examples::risk_score::{
    hand_over, reference_features, risk_score_job, Decision, Model, RiskError, ScoreJob, ScoreRule,
};
use freshet_examples::{produce_json, Outgoing};
use utils::*;

const START: u64 = 1_700_000_000_000;
const RANGE: u64 = 60_000;
const LATENESS: u64 = 300_000;

fn run_job(input: &str, mode: RollingMode, workers: usize) -> (Vec<Decision>, Vec<RiskError>) {
    let decisions = create_topic("risk-decisions", 2);
    let errors = create_topic("risk-errors", 1);
    let mut config = JobConfig::new(KafkaConfig::new(brokers(), unique("risk-score-group")));
    config.source.bounded = true;
    config.source.max_epochs_ahead = 10_000;
    config.cluster = Cluster {
        workers,
        ..Cluster::default()
    };
    let latency = hand_over();
    let rule = ScoreRule {
        range_ms: RANGE,
        mode,
        lateness_ms: LATENESS,
        model: Model::shipped(),
    };
    let summary = run(
        config,
        risk_score_job(ScoreJob {
            input: input.to_string(),
            decisions: decisions.clone(),
            errors: errors.clone(),
            rule,
            producer: ProducerSettings::default(),
            print: false,
            latency: Some(latency.clone()),
        }),
    )
    .expect("risk-score job");
    assert_eq!((summary.errors, summary.late), (1, 2));
    let decided: Vec<Decision> = decode(&read_topic(&decisions, 2));
    assert_eq!(latency.lock().unwrap().len(), decided.len() as u64);
    (decided, decode(&read_topic(&errors, 1)))
}

#[test]
fn risk_score_decisions_match_the_reference() {
    // One partition, so the source's watermark, and which payments are late, are fixed.
    let input = create_topic("payments", 1);
    let on_time: Vec<Payment> = risk::generate_payments(21, 6_000, 200, 5, 1, START, 180_000)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let pay = |id, ts| Payment {
        id,
        ip: "10.66.0.1".into(),
        user: 7,
        amount_cents: 50_000,
        ts,
    };
    // Read after ~3 minutes of payments: behind the watermark, within the lateness...
    let late = pay(900_001, START + 20_000);
    // ...and beyond it.
    let too_late = pay(900_002, START - 400_000);
    let mut all = on_time.clone();
    all.push(late.clone());
    all.push(too_late.clone());
    produce_json(
        &brokers(),
        &input,
        all.iter().map(|p| Outgoing {
            partition: Some(0),
            key: p.ip.clone(),
            ts: p.ts,
            value: p,
        }),
    )
    .unwrap();
    let junk = serde_json::json!("not a payment");
    produce_json(
        &brokers(),
        &input,
        [Outgoing {
            partition: Some(0),
            key: "junk".into(),
            ts: START + 200_000,
            value: &junk,
        }],
    )
    .unwrap();

    let model = Model::shipped();
    let mut want: BTreeMap<u64, (Payment, bool)> =
        on_time.iter().map(|p| (p.id, (p.clone(), false))).collect();
    want.insert(late.id, (late.clone(), true));

    for (mode, workers) in [(RollingMode::Exact, 2), (RollingMode::OnArrival, 1)] {
        let (decisions, errors) = run_job(&input, mode, workers);
        let got: BTreeMap<u64, &Decision> = decisions.iter().map(|d| (d.payment_id, d)).collect();
        assert_eq!(
            got.len(),
            decisions.len(),
            "{mode:?}: one decision per payment"
        );
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{mode:?}: every payment decided but the too-late one"
        );
        let mut verdicts = BTreeMap::new();
        for (id, (p, is_late)) in &want {
            let d = got[id];
            let f = reference_features(p, &on_time, RANGE, *is_late);
            let g = d.features;
            assert_eq!(
                (g.ip_count, g.ip_sum_cents, g.ip_distinct_users),
                (f.ip_count, f.ip_sum_cents, f.ip_distinct_users),
                "{mode:?}: IP features of payment {id}"
            );
            assert_eq!(
                (g.user_count, g.user_sum_cents),
                (f.user_count, f.user_sum_cents),
                "{mode:?}: user features of payment {id}"
            );
            assert!((g.amount_vs_user_mean - f.amount_vs_user_mean).abs() < 1e-9);
            assert_eq!(d.verdict, model.verdict(model.score(&f)), "payment {id}");
            assert_eq!(d.late, *is_late, "payment {id}");
            assert_eq!(&d.payment, p);
            *verdicts.entry(format!("{:?}", d.verdict)).or_insert(0) += 1;
        }
        assert!(
            verdicts.get("Block").is_some_and(|n| *n > 10)
                && verdicts.get("Approve").is_some_and(|n| *n > 1_000),
            "{mode:?}: the shipped model should block attackers and approve most: {verdicts:?}"
        );
        assert!(
            got[&late.id].features.ip_count > 1,
            "the late payment counts its IP"
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors
            .iter()
            .any(|e| matches!(e, RiskError::TooLate { payment, .. } if payment.id == too_late.id)));
        assert!(errors
            .iter()
            .any(|e| matches!(e, RiskError::Malformed { reason, .. } if !reason.is_empty())));
    }
}
