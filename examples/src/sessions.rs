//! Sessionization: a clickstream becomes per-user sessions (clicks less than `gap_ms`
//! apart) and one summary per session.

use std::collections::BTreeMap;

use freshet::operators::aggregate::Aggregator;
use freshet::operators::{Session, Windowed};
use freshet::time::Time;
use freshet::{Job, Json, KafkaSink, KafkaSource, PrintStdout, WriteKafka};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::StreamVec;

use crate::malformed::report_malformed;

/// A page view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Click {
    /// The user.
    pub user: u64,
    /// The page.
    pub page: String,
    /// Event time, ms since the Unix epoch.
    pub ts: u64,
}

/// One finished session.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionSummary {
    /// The user.
    pub user: u64,
    /// First click, ms.
    pub start: u64,
    /// Last click, ms.
    pub last: u64,
    /// Clicks in the session.
    pub clicks: u64,
    /// Page of the first click (the least page name among clicks at the same time).
    pub entry_page: String,
    /// Page of the last click (the greatest page name among clicks at the same time).
    pub exit_page: String,
}

impl SessionSummary {
    /// Time from the first to the last click, ms.
    pub fn duration_ms(&self) -> u64 {
        self.last - self.start
    }
}

/// Clicks, first and last click of a session; merges when a click bridges two sessions.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionAgg;

/// [`SessionAgg`]'s accumulator.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct SessionAcc {
    clicks: u64,
    first: Option<(u64, String)>,
    last: Option<(u64, String)>,
}

fn earlier(a: &mut Option<(u64, String)>, b: (u64, String)) {
    if a.as_ref().is_none_or(|x| b < *x) {
        *a = Some(b);
    }
}

fn later(a: &mut Option<(u64, String)>, b: (u64, String)) {
    if a.as_ref().is_none_or(|x| b > *x) {
        *a = Some(b);
    }
}

impl Aggregator<Click> for SessionAgg {
    type Acc = SessionAcc;
    type Out = SessionAcc;
    fn create(&self) -> SessionAcc {
        SessionAcc::default()
    }
    fn add(&self, acc: &mut SessionAcc, c: &Click) {
        acc.clicks += 1;
        earlier(&mut acc.first, (c.ts, c.page.clone()));
        later(&mut acc.last, (c.ts, c.page.clone()));
    }
    fn merge(&self, acc: &mut SessionAcc, other: SessionAcc) {
        acc.clicks += other.clicks;
        if let Some(f) = other.first {
            earlier(&mut acc.first, f);
        }
        if let Some(l) = other.last {
            later(&mut acc.last, l);
        }
    }
    fn finish(&self, acc: &SessionAcc) -> SessionAcc {
        acc.clone()
    }
}

fn summary(w: Windowed<u64, SessionAcc>) -> SessionSummary {
    let (start, entry_page) = w.value.first.unwrap_or_default();
    let (last, exit_page) = w.value.last.unwrap_or_default();
    SessionSummary {
        user: w.key,
        start,
        last,
        clicks: w.value.clicks,
        entry_page,
        exit_page,
    }
}

/// The job's logic: clicks in, one summary per session out (when the session ends: the
/// watermark passes its last click plus `gap_ms`).
pub fn sessionize<'s>(
    clicks: StreamVec<'s, Time, Click>,
    gap_ms: u64,
) -> StreamVec<'s, Time, SessionSummary> {
    clicks
        .session_aggregate("sessions", gap_ms, |c: &Click| c.user, SessionAgg)
        .map(summary)
}

/// The sessions a sequential loop finds in `clicks`, sorted.
pub fn reference<'a>(
    clicks: impl IntoIterator<Item = &'a Click>,
    gap_ms: u64,
) -> Vec<SessionSummary> {
    let mut by_user: BTreeMap<u64, Vec<&Click>> = BTreeMap::new();
    for c in clicks {
        by_user.entry(c.user).or_default().push(c);
    }
    let mut out = Vec::new();
    for (user, mut cs) in by_user {
        cs.sort_by(|a, b| (a.ts, &a.page).cmp(&(b.ts, &b.page)));
        let mut acc: Option<SessionAcc> = None;
        let mut last_ts = 0;
        for c in cs {
            if acc.is_some() && c.ts >= last_ts + gap_ms {
                let a = acc.take().expect("checked");
                out.push(summary(Windowed {
                    key: user,
                    start: 0,
                    end: 0,
                    value: a,
                    revision: 0,
                    kind: Default::default(),
                }));
            }
            SessionAgg.add(acc.get_or_insert_with(SessionAcc::default), c);
            last_ts = c.ts;
        }
        if let Some(a) = acc {
            out.push(summary(Windowed {
                key: user,
                start: 0,
                end: 0,
                value: a,
                revision: 0,
                kind: Default::default(),
            }));
        }
    }
    out.sort();
    out
}

/// Generates clicks of `users` users over `span_ms` from `start_ms`: each user clicks in
/// bursts (a few seconds apart) separated by pauses longer than `gap_ms`; in time order
/// with up to `disorder_ms` of jitter. Deterministic in `seed`.
pub fn generate_clicks(
    seed: u64,
    users: u64,
    start_ms: u64,
    span_ms: u64,
    gap_ms: u64,
    disorder_ms: u64,
) -> Vec<Click> {
    const PAGES: [&str; 6] = ["/", "/search", "/item", "/cart", "/checkout", "/help"];
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for user in 0..users {
        let mut ts = start_ms + rng.gen_range(0..gap_ms);
        while ts < start_ms + span_ms {
            let clicks = rng.gen_range(1..8);
            for _ in 0..clicks {
                out.push(Click {
                    user,
                    page: PAGES[rng.gen_range(0..PAGES.len())].to_string(),
                    ts,
                });
                ts += rng.gen_range(100..gap_ms / 2);
            }
            ts += gap_ms + rng.gen_range(0..gap_ms);
        }
    }
    out.sort_by_key(|c| (c.ts, c.user));
    // Jitter delivery order a little.
    let mut keyed: Vec<(u64, Click)> = out
        .into_iter()
        .map(|c| (c.ts + rng.gen_range(0..=disorder_ms), c))
        .collect();
    keyed.sort_by_key(|(a, c)| (*a, c.user));
    keyed.into_iter().map(|(_, c)| c).collect()
}

/// The sessionization job: JSON [`Click`]s from `input`, one JSON
/// [`SessionSummary`] per session to `output`, keyed by user.
pub fn job(
    input: String,
    output: String,
    gap_ms: u64,
    print: bool,
) -> impl Fn(&mut Job<'_>) -> freshet::Result<()> + Send + Sync + 'static {
    move |job| {
        let s = KafkaSource::new(input.clone(), Json::<Click>::new())
            .event_time(|c: &Click| Some(c.ts))
            .build(job)?;
        let summaries = sessionize(s.records, gap_ms);
        if print {
            summaries.clone().print_stdout(job, "sessions");
        }
        summaries.write_kafka(
            job,
            KafkaSink::new(output.clone(), Json::<SessionSummary>::new())
                .key(|s: &SessionSummary| Some(s.user.to_string().into_bytes())),
        )?;
        report_malformed(job, s.errors);
        Ok(())
    }
}
