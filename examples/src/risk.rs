//! Risk control: per source IP, count and sum of payments over a sliding 1-minute
//! window (10 s slide); an alert when a threshold is crossed.
//!
//! The windows emit early results every `early_ms` of event time, so an IP that crosses
//! a threshold is reported within about `early_ms` plus the out-of-orderness, not only
//! when its window closes. Each `(ip, window)` is alerted at most once.

use std::collections::{BTreeMap, HashSet};

use freshet::operators::aggregate::Aggregator;
use freshet::operators::{Slide, WindowPolicy, Windowed};
use freshet::time::Time;
use freshet::{Job, Json, KafkaSink, KafkaSource, PrintStdout, WriteKafka};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

use crate::latency::Latencies;
use crate::malformed::report_malformed;

/// A payment event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// Payment id.
    pub id: u64,
    /// Source IP, as text.
    pub ip: String,
    /// Paying user.
    pub user: u64,
    /// Amount in cents.
    pub amount_cents: i64,
    /// Event time, ms since the Unix epoch.
    pub ts: u64,
}

/// When an IP is suspicious, per window.
#[derive(Clone, Copy, Debug)]
pub struct RiskRule {
    /// Window length, ms (1 minute).
    pub window_ms: u64,
    /// Slide, ms (10 s).
    pub slide_ms: u64,
    /// Alert at this many payments in a window.
    pub max_count: u64,
    /// Alert at this total amount in a window, cents.
    pub max_sum_cents: i64,
    /// Early results every this many ms of event time (0: only when a window closes).
    pub early_ms: u64,
}

impl Default for RiskRule {
    fn default() -> Self {
        RiskRule {
            window_ms: 60_000,
            slide_ms: 10_000,
            max_count: 30,
            max_sum_cents: 500_000,
            early_ms: 1_000,
        }
    }
}

/// Count, sum and latest event time of one IP's payments in one window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskStats {
    /// Payments.
    pub count: u64,
    /// Total amount, cents.
    pub sum_cents: i64,
    /// The latest event time among them: the payment that tipped the window.
    pub last_ts: u64,
}

/// The aggregator behind [`RiskStats`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RiskAgg;

impl Aggregator<Payment> for RiskAgg {
    type Acc = RiskStats;
    type Out = RiskStats;
    fn create(&self) -> RiskStats {
        RiskStats::default()
    }
    fn add(&self, acc: &mut RiskStats, p: &Payment) {
        acc.count += 1;
        acc.sum_cents += p.amount_cents;
        acc.last_ts = acc.last_ts.max(p.ts);
    }
    fn merge(&self, acc: &mut RiskStats, other: RiskStats) {
        acc.count += other.count;
        acc.sum_cents += other.sum_cents;
        acc.last_ts = acc.last_ts.max(other.last_ts);
    }
    fn finish(&self, acc: &RiskStats) -> RiskStats {
        *acc
    }
}

/// An alert: `ip` crossed a threshold in `[start, end)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskAlert {
    /// The IP.
    pub ip: String,
    /// Window start, ms.
    pub start: u64,
    /// Window end, ms.
    pub end: u64,
    /// The window's payments when the alert was raised.
    pub stats: RiskStats,
    /// Whether it was raised from an early (partial) result.
    pub early: bool,
    /// Wall-clock time the alert left the dataflow, ms (for latency).
    pub alerted_at_ms: u64,
}

impl RiskAlert {
    /// Time from the payment that tipped the window to the alert, ms.
    pub fn latency_ms(&self) -> i64 {
        self.alerted_at_ms as i64 - self.stats.last_ts as i64
    }
}

fn crossed(rule: &RiskRule, s: &RiskStats) -> bool {
    s.count >= rule.max_count || s.sum_cents >= rule.max_sum_cents
}

/// The job's logic: payments in, alerts out (at most one per IP and window).
pub fn risk_alerts<'s>(
    payments: StreamVec<'s, Time, Payment>,
    rule: RiskRule,
) -> StreamVec<'s, Time, RiskAlert> {
    let policy = if rule.early_ms > 0 {
        WindowPolicy::new().early(rule.early_ms)
    } else {
        WindowPolicy::new()
    };
    let windows = payments
        .slide(
            "risk",
            rule.window_ms,
            rule.slide_ms,
            policy,
            None,
            |p: &Payment| p.ip.clone(),
            RiskAgg,
        )
        .results;
    windows.unary_frontier(
        Exchange::new(|w: &Windowed<String, RiskStats>| freshet::operators::hash::hash(&w.key)),
        "RiskAlerts",
        move |_cap, _info| {
            // (ip, start) already alerted, by window end, dropped once the frontier passes it.
            let mut alerted: BTreeMap<u64, HashSet<(String, u64)>> = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let mut session = output.session(&cap);
                    for w in data.drain(..) {
                        if !crossed(&rule, &w.value) {
                            continue;
                        }
                        if alerted
                            .entry(w.end)
                            .or_default()
                            .insert((w.key.clone(), w.start))
                        {
                            session.give(RiskAlert {
                                ip: w.key,
                                start: w.start,
                                end: w.end,
                                stats: w.value,
                                early: w.kind == freshet::operators::Emit::Early,
                                alerted_at_ms: crate::now_ms(),
                            });
                        }
                    }
                });
                let wm = freshet::operators::event_frontier(&frontier.frontier());
                while alerted.first_key_value().is_some_and(|(end, _)| *end <= wm) {
                    alerted.pop_first();
                }
            }
        },
    )
}

/// The `(ip, window start)` pairs a sequential loop would alert on.
pub fn reference_alerts<'a>(
    payments: impl IntoIterator<Item = &'a Payment>,
    rule: &RiskRule,
) -> BTreeMap<(String, u64), RiskStats> {
    let mut windows: BTreeMap<(String, u64), RiskStats> = BTreeMap::new();
    for p in payments {
        let (first, last) =
            freshet::operators::window::sliding_starts(p.ts, rule.window_ms, rule.slide_ms);
        let mut start = first;
        while start <= last {
            RiskAgg.add(windows.entry((p.ip.clone(), start)).or_default(), p);
            start += rule.slide_ms;
        }
    }
    windows.retain(|_, s| crossed(rule, s));
    windows
}

/// A payment generator: `normal_ips` IPs paying rarely, `attackers` IPs taking a fifth
/// of all payments. Deterministic in `seed`.
pub struct PaymentGen {
    rng: rand::rngs::StdRng,
    normal_ips: u32,
    attackers: u32,
    next_id: u64,
}

impl PaymentGen {
    /// A generator.
    pub fn new(seed: u64, normal_ips: u32, attackers: u32) -> Self {
        PaymentGen {
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            normal_ips,
            attackers,
            next_id: 0,
        }
    }

    /// The next payment, at event time `ts`.
    pub fn next(&mut self, ts: u64) -> Payment {
        let rng = &mut self.rng;
        let attacker = self.attackers > 0 && rng.gen_bool(0.2);
        let ip = if attacker {
            format!("10.66.0.{}", rng.gen_range(0..self.attackers))
        } else {
            let n = rng.gen_range(0..self.normal_ips.max(1));
            format!("192.168.{}.{}", n / 256, n % 256)
        };
        self.next_id += 1;
        Payment {
            id: self.next_id,
            ip,
            user: rng.gen_range(0..10_000),
            amount_cents: rng.gen_range(100..20_000),
            ts,
        }
    }

    /// A partition in `0..partitions`.
    pub fn partition(&mut self, partitions: i32) -> i32 {
        self.rng.gen_range(0..partitions)
    }
}

/// Generates `n` payments (see [`PaymentGen`]) evenly over `span_ms` from `start_ms`,
/// as `(partition, payment)` pairs spread over `partitions`.
pub fn generate_payments(
    seed: u64,
    n: usize,
    normal_ips: u32,
    attackers: u32,
    partitions: i32,
    start_ms: u64,
    span_ms: u64,
) -> Vec<(i32, Payment)> {
    let mut g = PaymentGen::new(seed, normal_ips, attackers);
    (0..n)
        .map(|i| {
            let ts = start_ms + span_ms * i as u64 / n.max(1) as u64;
            let p = g.next(ts);
            (g.partition(partitions), p)
        })
        .collect()
}

/// The risk-control job: JSON [`Payment`]s from `input`, [`RiskAlert`]s as
/// JSON to `output` keyed by IP, optionally printed; each alert's latency (from the
/// payment that tipped its window to the alert) is recorded in `latency` if given.
pub fn job(
    input: String,
    output: String,
    rule: RiskRule,
    print: bool,
    latency: Option<Latencies>,
) -> impl Fn(&mut Job<'_>) -> freshet::Result<()> + Send + Sync + 'static {
    use timely::dataflow::operators::Inspect;
    move |job| {
        let s = KafkaSource::new(input.clone(), Json::<Payment>::new())
            .event_time(|p: &Payment| Some(p.ts))
            .build(job)?;
        let mut alerts = risk_alerts(s.records, rule);
        if let Some(h) = latency.clone() {
            alerts = alerts.inspect(move |a: &RiskAlert| {
                let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
                h.saturating_record(a.latency_ms().max(1) as u64);
            });
        }
        if print {
            alerts.clone().print_with(job, "alerts", |a: &RiskAlert| {
                format!(
                    "ALERT ip={} window=[{}, {}) count={} sum={:.2} early={} latency={} ms",
                    a.ip,
                    a.start,
                    a.end,
                    a.stats.count,
                    a.stats.sum_cents as f64 / 100.0,
                    a.early,
                    a.latency_ms()
                )
            });
        }
        alerts.write_kafka(
            job,
            KafkaSink::new(output.clone(), Json::<RiskAlert>::new())
                .key(|a: &RiskAlert| Some(a.ip.clone().into_bytes())),
        )?;
        report_malformed(job, s.errors);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_counts_each_payment_in_six_windows() {
        let p = Payment {
            id: 0,
            ip: "a".into(),
            user: 0,
            amount_cents: 1,
            ts: 65_000,
        };
        let rule = RiskRule {
            max_count: 1,
            ..RiskRule::default()
        };
        let got = reference_alerts([&p], &rule);
        let starts: Vec<u64> = got.keys().map(|(_, s)| *s).collect();
        assert_eq!(starts, vec![10_000, 20_000, 30_000, 40_000, 50_000, 60_000]);
    }
}
