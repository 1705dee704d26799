//! Risk scoring: a decision for every payment, from features over the minute that ends
//! at it, in a few milliseconds.
//!
//! Per payment (a [`Payment`], as in [`crate::risk`]):
//!
//! 1. per source IP, over its payments in `(ts − range, ts]` (a rolling window keyed by
//!    IP): the count, the sum, and the distinct users (counted up to
//!    [`DISTINCT_CAP`]);
//! 2. per user, over theirs (a second rolling window, keyed by user, chained after the
//!    first): the count, the sum, and this amount against their mean;
//! 3. a logistic regression over those features, with weights read from a JSON file
//!    ([`Model`], `examples/data/risk-weights.json`), gives a score in `[0, 1]` and a
//!    [`Verdict`]: approve, review or block.
//!
//! A [`Decision`] (the payment, its features, score and verdict) goes to the decisions
//! topic keyed by payment id. Malformed messages and payments too late to score go to
//! an errors topic as [`RiskError`]s: nothing is dropped silently.
//!
//! Both rolling modes are offered ([`RollingMode`]): *on arrival* decides as soon as
//! the job's consumer hands a payment over; *exact* waits for the watermark (the
//! source's out-of-orderness) so every earlier payment is counted.

use std::sync::{Arc, Mutex};

use freshet::operators::aggregate::{Aggregator, Mean, MeanValue};
use freshet::operators::{Rolled, Rolling, RollingMode, RollingPolicy};
use freshet::time::Time;
use freshet::{
    Decoder, Encoder, Job, Json, KafkaSink, KafkaSource, Late, PrintStdout, ProducerSettings,
    SourceError, WriteKafka,
};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::{Filter, Map};
use timely::dataflow::operators::Concat;
use timely::dataflow::StreamVec;

pub use crate::risk::Payment;

/// Distinct users per IP are counted up to this many: past it the feature is
/// saturated, and the accumulator stays small for the hottest IPs.
pub const DISTINCT_CAP: usize = 64;

/// Wall-clock microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A payment as the job's consumer handed it over, with the wall-clock time it did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incoming {
    /// The payment.
    pub payment: Payment,
    /// When the source decoded it, µs since the Unix epoch (see [`now_us`]).
    pub handed_us: u64,
}

/// Decodes JSON payments and stamps each with the time it was handed over.
#[derive(Clone, Default)]
pub struct StampedPayments(Json<Payment>);

impl Decoder for StampedPayments {
    type Output = Incoming;
    fn decode(&self, msg: &freshet::codec::RawMessage<'_>) -> Result<Incoming, String> {
        let payment = self.0.decode(msg)?;
        Ok(Incoming {
            payment,
            handed_us: now_us(),
        })
    }
}

/// Per IP, over the minute up to a payment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IpFeatures {
    /// Payments.
    pub count: u64,
    /// Their total, cents.
    pub sum_cents: i64,
    /// Distinct paying users, up to [`DISTINCT_CAP`].
    pub distinct_users: u64,
}

/// The accumulator behind [`IpFeatures`].
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct IpAcc {
    count: u64,
    sum_cents: i64,
    /// Sorted, at most [`DISTINCT_CAP`] long.
    users: Vec<u64>,
}

impl IpAcc {
    fn insert(&mut self, user: u64) {
        if self.users.len() < DISTINCT_CAP {
            if let Err(at) = self.users.binary_search(&user) {
                self.users.insert(at, user);
            }
        }
    }
}

/// Count, sum and capped distinct users of an IP's payments.
#[derive(Clone, Copy, Debug, Default)]
pub struct IpAgg;

impl Aggregator<Incoming> for IpAgg {
    type Acc = IpAcc;
    type Out = IpFeatures;
    fn create(&self) -> IpAcc {
        IpAcc::default()
    }
    fn add(&self, acc: &mut IpAcc, r: &Incoming) {
        acc.count += 1;
        acc.sum_cents += r.payment.amount_cents;
        acc.insert(r.payment.user);
    }
    fn merge(&self, acc: &mut IpAcc, other: IpAcc) {
        self.merge_from(acc, &other);
    }
    // A capped union: exact up to the cap (if any part reaches it, so does the union).
    fn merge_from(&self, acc: &mut IpAcc, other: &IpAcc) {
        acc.count += other.count;
        acc.sum_cents += other.sum_cents;
        for &u in &other.users {
            if acc.users.len() >= DISTINCT_CAP {
                break;
            }
            acc.insert(u);
        }
    }
    fn finish(&self, acc: &IpAcc) -> IpFeatures {
        IpFeatures {
            count: acc.count,
            sum_cents: acc.sum_cents,
            distinct_users: acc.users.len() as u64,
        }
    }
}

/// The features a payment is scored on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// The IP's payments in the range, this one included.
    pub ip_count: u64,
    /// Their total, cents.
    pub ip_sum_cents: i64,
    /// Distinct users paying from the IP, up to [`DISTINCT_CAP`].
    pub ip_distinct_users: u64,
    /// The user's payments in the range, this one included.
    pub user_count: u64,
    /// Their total, cents.
    pub user_sum_cents: i64,
    /// This amount divided by the user's mean amount in the range.
    pub amount_vs_user_mean: f64,
}

impl Features {
    /// The features of `payment` from its IP's and its user's aggregates.
    pub fn new(payment: &Payment, ip: IpFeatures, user: MeanValue) -> Self {
        let mean = user.mean();
        Features {
            ip_count: ip.count,
            ip_sum_cents: ip.sum_cents,
            ip_distinct_users: ip.distinct_users,
            user_count: user.count,
            user_sum_cents: user.sum as i64,
            amount_vs_user_mean: if mean > 0.0 {
                payment.amount_cents as f64 / mean
            } else {
                1.0
            },
        }
    }
}

/// The weights of a logistic regression over [`Features`], and the decision thresholds.
///
/// `score = 1 / (1 + e^−z)`, `z = bias + Σ weight · x`, with `x` the natural log of
/// `1 +` each count and each sum in currency units (cents / 100), and the amount
/// against the user's mean as is.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// The intercept.
    pub bias: f64,
    /// Weight of `ln(1 + ip_count)`.
    pub ip_count: f64,
    /// Weight of `ln(1 + ip_sum)`.
    pub ip_sum: f64,
    /// Weight of `ln(1 + ip_distinct_users)`.
    pub ip_distinct_users: f64,
    /// Weight of `ln(1 + user_count)`.
    pub user_count: f64,
    /// Weight of `ln(1 + user_sum)`.
    pub user_sum: f64,
    /// Weight of `amount_vs_user_mean`.
    pub amount_vs_user_mean: f64,
    /// Review at this score or above.
    pub review_at: f64,
    /// Block at this score or above.
    pub block_at: f64,
}

/// What to do with a payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Let it through.
    Approve,
    /// Hold it for a person to look at.
    Review,
    /// Refuse it.
    Block,
}

impl Model {
    /// Reads a model from a JSON file.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the model weights {}", path.display()))?;
        let model: Model = serde_json::from_str(&text)
            .with_context(|| format!("parsing the model weights {}", path.display()))?;
        anyhow::ensure!(
            0.0 <= model.review_at && model.review_at <= model.block_at && model.block_at <= 1.0,
            "thresholds must satisfy 0 <= review_at <= block_at <= 1"
        );
        Ok(model)
    }

    /// The weights shipped in `examples/data/risk-weights.json`.
    pub fn shipped() -> Self {
        serde_json::from_str(include_str!("../data/risk-weights.json"))
            .expect("the shipped weights parse")
    }

    /// The score of `f`, in `[0, 1]`.
    pub fn score(&self, f: &Features) -> f64 {
        let ln = |x: f64| x.max(0.0).ln_1p();
        let z = self.bias
            + self.ip_count * ln(f.ip_count as f64)
            + self.ip_sum * ln(f.ip_sum_cents as f64 / 100.0)
            + self.ip_distinct_users * ln(f.ip_distinct_users as f64)
            + self.user_count * ln(f.user_count as f64)
            + self.user_sum * ln(f.user_sum_cents as f64 / 100.0)
            + self.amount_vs_user_mean * f.amount_vs_user_mean;
        1.0 / (1.0 + (-z).exp())
    }

    /// The verdict for a score.
    pub fn verdict(&self, score: f64) -> Verdict {
        if score >= self.block_at {
            Verdict::Block
        } else if score >= self.review_at {
            Verdict::Review
        } else {
            Verdict::Approve
        }
    }
}

/// The decision on one payment, as written to the decisions topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The payment's id (also the message key).
    pub payment_id: u64,
    /// The payment.
    pub payment: Payment,
    /// What it was scored on.
    pub features: Features,
    /// The model's score.
    pub score: f64,
    /// The verdict.
    pub verdict: Verdict,
    /// Whether the payment arrived behind the watermark (scored on the late path).
    pub late: bool,
}

impl Decision {
    /// The decision `model` takes on `payment` with `features`.
    pub fn new(model: &Model, payment: Payment, features: Features, late: bool) -> Self {
        let score = model.score(&features);
        Decision {
            payment_id: payment.id,
            verdict: model.verdict(score),
            payment,
            features,
            score,
            late,
        }
    }
}

/// A decision with the time its payment was handed over (for latency).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// The decision.
    pub decision: Decision,
    /// When the job's consumer handed the payment over, µs since the Unix epoch.
    pub handed_us: u64,
}

/// Something that did not become a decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RiskError {
    /// A message that is not a payment.
    Malformed {
        /// Where it was read.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
        /// Why it was rejected.
        reason: String,
    },
    /// A payment more than the lateness behind the watermark when it arrived.
    TooLate {
        /// The payment.
        payment: Payment,
        /// The watermark it was behind when it was read.
        watermark: u64,
    },
}

impl From<SourceError> for RiskError {
    fn from(e: SourceError) -> Self {
        RiskError::Malformed {
            topic: e.topic,
            partition: e.partition,
            offset: e.offset,
            reason: e.reason,
        }
    }
}

/// Handed-over → handed-to-producer latencies in µs, shared by a process's workers.
pub type HandOver = Arc<Mutex<hdrhistogram::Histogram<u64>>>;

/// An empty latency histogram (1 µs to 60 s, 3 significant digits).
pub fn hand_over() -> HandOver {
    Arc::new(Mutex::new(
        hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
    ))
}

/// Writes a [`Scored`] as the JSON of its [`Decision`], recording the time since its
/// payment was handed over: the sink calls it right before handing the record to the
/// producer.
#[derive(Clone, Default)]
pub struct DecisionEncoder {
    latency: Option<HandOver>,
}

impl DecisionEncoder {
    /// An encoder recording into `latency`, if given.
    pub fn new(latency: Option<HandOver>) -> Self {
        DecisionEncoder { latency }
    }
}

impl Encoder<Scored> for DecisionEncoder {
    fn encode(&self, item: &Scored, buf: &mut Vec<u8>) -> Result<(), String> {
        serde_json::to_writer(&mut *buf, &item.decision).map_err(|e| e.to_string())?;
        if let Some(h) = &self.latency {
            let us = now_us().saturating_sub(item.handed_us).max(1);
            h.lock()
                .unwrap_or_else(|e| e.into_inner())
                .saturating_record(us);
        }
        Ok(())
    }
}

/// How the risk-score job scores.
#[derive(Clone, Copy, Debug)]
pub struct ScoreRule {
    /// The feature range, ms (one minute).
    pub range_ms: u64,
    /// Exact or on arrival.
    pub mode: RollingMode,
    /// Late payments up to this far behind the watermark are still scored, ms.
    pub lateness_ms: u64,
    /// The model.
    pub model: Model,
}

impl ScoreRule {
    /// One minute, on arrival, 5 s of lateness, the shipped weights.
    pub fn new(model: Model) -> Self {
        ScoreRule {
            range_ms: 60_000,
            mode: RollingMode::OnArrival,
            lateness_ms: 5_000,
            model,
        }
    }
}

/// The outputs of [`score`].
pub struct ScoreStreams<'s> {
    /// One per payment not too late.
    pub decisions: StreamVec<'s, Time, Scored>,
    /// Payments too late to score.
    pub too_late: StreamVec<'s, Time, RiskError>,
}

/// Late records again, at the time they arrive at (for the next rolling window).
fn relate<'s>(
    late: StreamVec<'s, Time, Rolled<Incoming, IpFeatures>>,
) -> StreamVec<'s, Time, Late<Rolled<Incoming, IpFeatures>>> {
    late.unary(Pipeline, "RiskScore(late again)", |_, _| {
        move |input, output| {
            input.for_each(|cap, data| {
                let Some(at) = cap.stamp().iter().next().map(|t| t.event) else {
                    return;
                };
                output
                    .session(&cap)
                    .give_iterator(data.drain(..).map(|r| Late {
                        event_time: r.record.payment.ts,
                        watermark: at,
                        record: r,
                    }));
            })
        }
    })
}

/// The job's logic: payments (and late payments) in, one scored decision per payment
/// out, payments too late to score on the side.
pub fn score<'s>(
    payments: StreamVec<'s, Time, Incoming>,
    late: StreamVec<'s, Time, Late<Incoming>>,
    rule: ScoreRule,
) -> ScoreStreams<'s> {
    let policy = RollingPolicy {
        mode: rule.mode,
        lateness: rule.lateness_ms,
    };
    let by_ip = payments.rolling(
        "ip",
        rule.range_ms,
        policy,
        Some(late),
        |r: &Incoming| r.payment.ip.clone(),
        IpAgg,
    );
    // Late results of the first window are late records of the second: they must not
    // count as on-time payments of the user at the time they arrived.
    let on_time = by_ip.results.clone().filter(|r| !r.late);
    let late_again = relate(by_ip.results.filter(|r| r.late));
    let by_user = on_time.rolling(
        "user",
        rule.range_ms,
        policy,
        Some(late_again),
        |r: &Rolled<Incoming, IpFeatures>| r.record.payment.user,
        Mean::new(|r: &Rolled<Incoming, IpFeatures>| r.record.payment.amount_cents),
    );
    let model = rule.model;
    let decisions = by_user.results.map(move |r| {
        let Rolled {
            record: by_ip,
            value: user,
            late,
        } = r;
        let features = Features::new(&by_ip.record.payment, by_ip.value, user);
        Scored {
            decision: Decision::new(&model, by_ip.record.payment, features, late),
            handed_us: by_ip.record.handed_us,
        }
    });
    let too_late = by_ip
        .too_late
        .map(|l| RiskError::TooLate {
            payment: l.record.payment,
            watermark: l.watermark,
        })
        .concat(by_user.too_late.map(|l| RiskError::TooLate {
            payment: l.record.record.payment,
            watermark: l.watermark,
        }));
    ScoreStreams {
        decisions,
        too_late,
    }
}

/// The features a sequential loop computes for `p` over `payments` (the on-time ones):
/// the payments of its IP and of its user in `(ts − range, ts]`, and `p` itself if it
/// is `late` (not among them).
pub fn reference_features(
    p: &Payment,
    payments: &[Payment],
    range_ms: u64,
    late: bool,
) -> Features {
    let in_range = |q: &&Payment| q.ts <= p.ts && q.ts + range_ms > p.ts;
    let extra = late.then_some(p);
    let of_ip: Vec<&Payment> = payments
        .iter()
        .filter(|q| in_range(q) && q.ip == p.ip)
        .chain(extra)
        .collect();
    let of_user: Vec<&Payment> = payments
        .iter()
        .filter(|q| in_range(q) && q.user == p.user)
        .chain(extra)
        .collect();
    let mut users: Vec<u64> = of_ip.iter().map(|q| q.user).collect();
    users.sort();
    users.dedup();
    let ip = IpFeatures {
        count: of_ip.len() as u64,
        sum_cents: of_ip.iter().map(|q| q.amount_cents).sum(),
        distinct_users: (users.len() as u64).min(DISTINCT_CAP as u64),
    };
    let user = MeanValue {
        sum: of_user.iter().map(|q| q.amount_cents as i128).sum(),
        count: of_user.len() as u64,
    };
    Features::new(p, ip, user)
}

/// Settings of the risk-score job binary.
#[derive(Clone, Debug)]
pub struct ScoreJob {
    /// Payments topic.
    pub input: String,
    /// Decisions topic (keyed by payment id).
    pub decisions: String,
    /// Errors topic: malformed messages and payments too late to score.
    pub errors: String,
    /// How to score.
    pub rule: ScoreRule,
    /// The decisions' producer settings (linger, batch).
    pub producer: ProducerSettings,
    /// Print decisions that are not approvals, and every error.
    pub print: bool,
    /// Record handed-over → handed-to-producer latency here.
    pub latency: Option<HandOver>,
}

/// The risk-score job as a build function for [`freshet::run`].
pub fn risk_score_job(
    job: ScoreJob,
) -> impl Fn(&mut Job<'_>) -> freshet::Result<()> + Send + Sync + 'static {
    move |j| {
        let s = KafkaSource::new(job.input.clone(), StampedPayments::default())
            .event_time(|r: &Incoming| Some(r.payment.ts))
            .build(j)?;
        let out = score(s.records, s.late, job.rule);
        let errors = s.errors.map(RiskError::from).concat(out.too_late);
        if job.print {
            out.decisions
                .clone()
                .filter(|s| s.decision.verdict != Verdict::Approve)
                .print_with(j, "decisions", |s: &Scored| {
                    let d = &s.decision;
                    format!(
                        "{:?} payment={} ip={} user={} amount={:.2} score={:.3} ip_count={} ip_users={} user_count={} vs_mean={:.2}{}",
                        d.verdict,
                        d.payment_id,
                        d.payment.ip,
                        d.payment.user,
                        d.payment.amount_cents as f64 / 100.0,
                        d.score,
                        d.features.ip_count,
                        d.features.ip_distinct_users,
                        d.features.user_count,
                        d.features.amount_vs_user_mean,
                        if d.late { " (late)" } else { "" },
                    )
                });
            errors
                .clone()
                .print_with(j, "errors", |e: &RiskError| format!("ERROR {e:?}"));
        }
        out.decisions.write_kafka(
            j,
            KafkaSink::new(
                job.decisions.clone(),
                DecisionEncoder::new(job.latency.clone()),
            )
            .key(|s: &Scored| Some(s.decision.payment_id.to_string().into_bytes()))
            .settings(job.producer.clone()),
        )?;
        errors.write_kafka(
            j,
            KafkaSink::new(job.errors.clone(), Json::<RiskError>::new()).key(|_: &RiskError| None),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pay(id: u64, ip: &str, user: u64, amount_cents: i64, ts: u64) -> Payment {
        Payment {
            id,
            ip: ip.into(),
            user,
            amount_cents,
            ts,
        }
    }

    #[test]
    fn shipped_model_separates_quiet_and_busy_ips() {
        let m = Model::shipped();
        let quiet = Features::new(
            &pay(1, "a", 1, 5_000, 0),
            IpFeatures {
                count: 1,
                sum_cents: 5_000,
                distinct_users: 1,
            },
            MeanValue {
                sum: 5_000,
                count: 1,
            },
        );
        let busy = Features {
            ip_count: 400,
            ip_sum_cents: 4_000_000,
            ip_distinct_users: 64,
            ..quiet
        };
        assert_eq!(m.verdict(m.score(&quiet)), Verdict::Approve);
        assert_eq!(m.verdict(m.score(&busy)), Verdict::Block);
    }

    #[test]
    fn distinct_users_are_capped_exactly() {
        let mut a = IpAcc::default();
        let mut b = IpAcc::default();
        for u in 0..50 {
            a.insert(u);
            b.insert(u + 40);
        }
        IpAgg.merge_from(&mut a, &b);
        assert_eq!(IpAgg.finish(&a).distinct_users, DISTINCT_CAP as u64);
        let ps: Vec<Payment> = (0..100).map(|u| pay(u, "x", u % 30, 100, u)).collect();
        let f = reference_features(&ps[99], &ps, 1_000, false);
        assert_eq!((f.ip_count, f.ip_distinct_users), (100, 30));
    }

    #[test]
    fn model_file_errors_are_reported() {
        let path = std::env::temp_dir().join(format!("risk-weights-{}.json", now_us()));
        std::fs::write(&path, "{\"bias\": 1}").unwrap();
        let err = Model::load(&path).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(format!("{err:#}").contains("missing field"), "{err:#}");
    }
}
