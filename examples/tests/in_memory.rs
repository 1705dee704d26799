//! The examples' dataflow logic under `freshet::testing::Harness`: no broker, explicit
//! event times, offsets, watermarks and epochs; outputs and would-be commits checked.

use std::collections::BTreeSet;

use freshet::testing::Harness;
use freshet_examples::enrich::{self, Customer, Order};
use freshet_examples::iot::{self, IotAlert, IotRule, Reading};
use freshet_examples::risk::{self, Payment, RiskRule};
use freshet_examples::sessions::{self, Click};

const T0: u64 = 1_700_000_000_000;

fn topic(t: &str, p: i32) -> (String, i32) {
    (t.to_string(), p)
}

#[test]
fn risk_alerts_early_once_per_window_and_commits_wait_for_open_windows() {
    let rule = RiskRule {
        max_count: 3,
        max_sum_cents: i64::MAX,
        ..RiskRule::default()
    };
    let (mut h, (payments, alerts)) = Harness::new(|t| {
        let (src, s) = t.source::<Payment>("payments");
        (src, t.collect("alerts", risk::risk_alerts(s.records, rule)))
    });
    let pay = |id: u64, ip: &str, ts: u64| Payment {
        id,
        ip: ip.into(),
        user: 1,
        amount_cents: 100,
        ts,
    };
    h.advance_watermark(T0);
    for i in 0..4 {
        payments.send(0, i as i64, T0 + 100 * i, pay(i, "10.0.0.1", T0 + 100 * i));
    }
    payments.send(1, 0, T0 + 50, pay(9, "10.0.0.2", T0 + 50));
    h.next_epoch();
    // One early period later (at the latest), every window holding the 4 payments of
    // 10.0.0.1 has reported crossing.
    h.advance_watermark(T0 + 1_000);
    let got = alerts.records();
    assert!(!got.is_empty());
    assert!(got
        .iter()
        .all(|a| a.ip == "10.0.0.1" && a.early && a.stats.count >= 3));
    let windows: BTreeSet<u64> = got.iter().map(|a| a.start).collect();
    assert_eq!(windows.len(), got.len(), "one alert per window");
    // Windows are open (1 minute long): nothing may be committed yet.
    assert!(h.committed().is_empty());
    // Close every window: no second alert for the same windows; the epoch completes.
    h.advance(T0 + 120_000);
    assert_eq!(alerts.records().len(), got.len());
    let c = h.committed();
    assert_eq!(c[&topic("payments", 0)], 4);
    assert_eq!(c[&topic("payments", 1)], 1);
    let expected = risk::reference_alerts(
        (0..4)
            .map(|i| pay(i, "10.0.0.1", T0 + 100 * i))
            .collect::<Vec<_>>()
            .iter(),
        &rule,
    );
    let got: BTreeSet<(String, u64)> = alerts
        .records()
        .into_iter()
        .map(|a| (a.ip, a.start))
        .collect();
    assert_eq!(got, expected.keys().cloned().collect());
}

#[test]
fn risk_alerts_match_the_reference_on_generated_payments() {
    let rule = RiskRule::default();
    let payments = risk::generate_payments(4, 6_000, 200, 3, 2, T0, 180_000);
    let (mut h, (src, alerts)) = Harness::new(|t| {
        let (src, s) = t.source::<Payment>("payments");
        (src, t.collect("alerts", risk::risk_alerts(s.records, rule)))
    });
    h.advance_watermark(T0);
    for chunk in payments.chunks(500) {
        for (p, pay) in chunk {
            src.push(*p, pay.ts, pay.clone());
        }
        let max = chunk.iter().map(|(_, p)| p.ts).max().unwrap();
        h.advance(max.saturating_sub(100));
    }
    h.finish();
    let expected = risk::reference_alerts(payments.iter().map(|(_, p)| p), &rule);
    assert!(!expected.is_empty());
    let got: BTreeSet<(String, u64)> = alerts
        .records()
        .into_iter()
        .map(|a| (a.ip, a.start))
        .collect();
    assert_eq!(got, expected.keys().cloned().collect::<BTreeSet<_>>());
    assert_eq!(
        alerts.records().len(),
        got.len(),
        "one alert per (ip, window)"
    );
    let c = h.committed();
    for p in 0..2 {
        assert_eq!(c[&topic("payments", p)], src.next_offset(p));
    }
}

#[test]
fn iot_reports_anomalies_and_silence_like_the_reference() {
    let rule = IotRule::default();
    let readings = iot::generate_readings(8, 5, T0, 20_000, 300, 3_000, 150);
    let (mut h, (src, out)) = Harness::new(|t| {
        let (src, s) = t.source::<Reading>("readings");
        (src, t.collect("alerts", iot::detect(s.records, rule)))
    });
    h.advance_watermark(T0);
    let mut max = T0;
    for (i, r) in readings.iter().enumerate() {
        src.push((r.device % 3) as i32, r.ts, r.clone());
        max = max.max(r.ts);
        if i % 200 == 199 {
            // Out-of-orderness 200 ms > the generator's 150 ms of delivery jitter.
            h.advance(max.saturating_sub(200));
        }
    }
    // Device 0's silence was reported while the run went on, before the end.
    assert!(out
        .records()
        .iter()
        .any(|a| matches!(a, IotAlert::Silent { device: 0, .. })));
    h.finish();
    let expected = iot::reference(&readings, &rule);
    let key = |a: &IotAlert| format!("{a:?}");
    let mut got: Vec<String> = out.records().iter().map(key).collect();
    let mut want: Vec<String> = expected.iter().map(key).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert!(expected.iter().filter(|a| a.is_anomaly()).count() > 5);
    assert_eq!(h.committed().len(), 3);
}

#[test]
fn sessions_are_summarised_when_they_end() {
    let gap = 1_000;
    let (mut h, (src, out)) = Harness::new(|t| {
        let (src, s) = t.source::<Click>("clicks");
        (
            src,
            t.collect("sessions", sessions::sessionize(s.records, gap)),
        )
    });
    let click = |user, page: &str, ts| Click {
        user,
        page: page.into(),
        ts,
    };
    h.advance_watermark(T0);
    src.push(0, T0, click(1, "/", T0));
    src.push(0, T0 + 500, click(1, "/item", T0 + 500));
    src.push(0, T0 + 900, click(1, "/cart", T0 + 900));
    h.advance(T0 + 1_899); // ends epoch 0: offsets 0..3
    assert!(out.records().is_empty(), "the session may still grow");
    src.push(0, T0 + 5_000, click(1, "/", T0 + 5_000)); // epoch 1
    h.advance(T0 + 1_900);
    let got = out.records();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (
            got[0].clicks,
            got[0].duration_ms(),
            got[0].entry_page.as_str(),
            got[0].exit_page.as_str()
        ),
        (3, 900, "/", "/cart")
    );
    // The second session (one click at T0 + 5000) holds its epoch: offset 3 committed, not 4.
    assert_eq!(h.committed()[&topic("clicks", 0)], 3);
    h.finish();
    assert_eq!(out.records().len(), 2);
    assert_eq!(h.committed()[&topic("clicks", 0)], 4);

    // Generated clicks against the sequential reference.
    let clicks = sessions::generate_clicks(3, 20, T0, 60_000, gap, 100);
    let (mut h, (src, out)) = Harness::new(|t| {
        let (src, s) = t.source::<Click>("clicks");
        (
            src,
            t.collect("sessions", sessions::sessionize(s.records, gap)),
        )
    });
    h.advance_watermark(T0);
    let mut max = T0;
    for (i, c) in clicks.iter().enumerate() {
        src.push((c.user % 2) as i32, c.ts, c.clone());
        max = max.max(c.ts);
        if i % 50 == 49 {
            h.advance(max.saturating_sub(150));
        }
    }
    h.finish();
    let mut got = out.records();
    got.sort();
    assert_eq!(got, sessions::reference(&clicks, gap));
}

#[test]
fn enrichment_uses_the_table_as_of_each_order_and_never_commits_the_table() {
    let customers = enrich::generate_customers(20, T0 - 60_000, 70_000);
    let orders = enrich::generate_orders(5, 400, 20, 3, T0, 20_000);
    let (mut h, (o_src, c_src, out)) = Harness::new(|t| {
        let (o_src, o) = t.source::<Order>("orders");
        let (c_src, c) = t.table_source::<Customer>("customers");
        (
            o_src,
            c_src,
            t.collect("enriched", enrich::enrich(o.records, c.records)),
        )
    });
    h.advance_watermark(T0 - 60_000);
    for c in &customers {
        c_src.push(0, c.updated, c.clone());
    }
    for o in &orders {
        o_src.push((o.id % 2) as i32, o.ts, o.clone());
    }
    h.advance(T0 + 5_000);
    // Orders up to the watermark are out already (the table's watermark passed them).
    let early = out.records();
    assert!(!early.is_empty() && early.iter().all(|e| e.order.ts < T0 + 5_000));
    h.finish();
    let mut got = out.records();
    got.sort();
    let want = enrich::reference(&orders, &customers);
    assert_eq!(got, want);
    assert!(
        got.iter().any(|e| e.customer.is_none()),
        "unknown customers"
    );
    assert!(got
        .iter()
        .any(|e| e.customer.as_ref().is_some_and(|c| c.tier == "gold")));
    assert!(got
        .iter()
        .any(|e| e.order.customer == 0 && e.customer.as_ref().is_some_and(|c| c.tier != "gold")));
    let c = h.committed();
    assert!(
        c.keys().all(|(t, _)| t == "orders"),
        "table offsets committed: {c:?}"
    );
    assert_eq!(c[&topic("orders", 0)], o_src.next_offset(0));
}
