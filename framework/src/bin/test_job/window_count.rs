//! The test job's logic, shared with the integration tests that check its output: JSON
//! [`Event`]s counted per key in tumbling event-time windows, written as JSON.

use freshet::operators::aggregate::Count;
use freshet::operators::{JoinKind, Lookup, WindowJoin};
use freshet::operators::{KeyedState, Session, WindowPolicy};
use freshet::timely::dataflow::operators::vec::Filter;
use freshet::timely::dataflow::operators::vec::Map;
use freshet::{Job, Json, KafkaSink, KafkaSource, PrintStdout, Tumble, Windowed, WriteKafka};
use serde::{Deserialize, Serialize};

/// An input event: a key, an event time in ms, an amount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The key windows are counted by.
    pub key: u64,
    /// Event time, ms since the Unix epoch.
    pub ts: u64,
    /// A value carried along.
    pub amount: i64,
}

/// A window result as the job writes it.
pub type WindowCount = Windowed<u64, u64>;

/// A key's running count of events, as the keyed-state output writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCount {
    /// The event key.
    pub key: u64,
    /// Events of the key so far, in event-time order.
    pub count: u64,
}

/// A record of the lookup's stream: a key, an event time and a note (padding, to make
/// records that wait take memory).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Noted {
    /// The key looked up in the table.
    pub key: u64,
    /// Event time, ms since the Unix epoch.
    pub ts: u64,
    /// Carried along.
    #[serde(default)]
    pub note: String,
}

/// A lookup's output: the stream record's key and time, and the table's amount for the
/// key as of that time, if any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookedUp {
    /// The stream record's key.
    pub key: u64,
    /// Its event time.
    pub ts: u64,
    /// The key's table amount as of `ts`.
    pub amount: Option<i64>,
}

/// The topics of the test job's stream–table lookup.
#[derive(Clone, Debug)]
pub struct LookupTopics {
    /// [`Noted`] stream records.
    pub input: String,
    /// The table: [`Event`]s, `amount` by `key` (a table side).
    pub table: String,
    /// Where the [`LookedUp`] records go.
    pub output: String,
}

/// Optional outputs of the test job beyond the tumbling-window counts.
/// Sessions of events read from `input` with a short out-of-orderness, so that some
/// arrive late, and a lateness long enough for every late one to count: emitted sessions
/// are corrected and retracted.
#[derive(Clone, Debug)]
pub struct LateSessions {
    /// Topic of JSON events.
    pub input: String,
    /// Where the sessions go.
    pub output: String,
    /// Session gap, ms.
    pub gap: u64,
    /// The source's out-of-orderness, ms.
    pub out_of_orderness: u64,
    /// The sessions' lateness, ms.
    pub lateness: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Extra {
    /// Per key, counts in session windows of this gap (ms) into this topic.
    pub sessions: Option<(String, u64)>,
    /// Sessions with late data: see [`LateSessions`].
    pub late_sessions: Option<LateSessions>,
    /// A left window join of the key's even-amount events (left) with its odd-amount
    /// events (right) in the tumbling windows; the join's rows counted per key and
    /// window into this topic.
    pub join: Option<String>,
    /// Per key, the running count of its events (keyed state) into this topic.
    pub keyed: Option<String>,
    /// A left stream–table lookup of [`Noted`] records in a table of [`Event`]s.
    pub lookup: Option<LookupTopics>,
}

/// The job as a build function for [`freshet::run`]: [`Event`]s from `input`, per-key
/// counts in tumbling windows of `window_ms` to `output` (keyed by the event key);
/// malformed messages printed on stdout with their coordinates.
///
/// `extra` adds session windows, a window join and keyed state, each to its own topic
/// (keyed by the event key).
pub fn job(
    input: String,
    output: String,
    window_ms: u64,
    extra: Extra,
) -> impl Fn(&mut Job<'_>) -> freshet::Result<()> + Send + Sync + 'static {
    move |job| {
        let streams = KafkaSource::new(input.clone(), Json::<Event>::new())
            .event_time(|e: &Event| Some(e.ts))
            .build(job)?;
        let by_key = |w: &WindowCount| Some(w.key.to_string().into_bytes());
        if let Some(topic) = &extra.join {
            let left = streams.records.clone().filter(|e| e.amount % 2 == 0);
            let right = streams.records.clone().filter(|e| e.amount % 2 != 0);
            left.window_join_with(
                right,
                "even-odd",
                window_ms,
                JoinKind::Left,
                |e: &Event| e.key,
                |e: &Event| e.key,
                |_, a, b| (a.ts, b.map(|b| b.ts)),
            )
            .tumble_count("join-rows", window_ms, |w: &Windowed<u64, _>| w.key)
            .write_kafka(
                job,
                KafkaSink::new(topic.clone(), Json::<WindowCount>::new()).key(by_key),
            )?;
        }
        if let Some(topics) = &extra.lookup {
            let table = KafkaSource::new(topics.table.clone(), Json::<Event>::new())
                .event_time(|e: &Event| Some(e.ts))
                .table(job.source_config())
                .build(job)?
                .records
                .map(|e| (e.key, e.amount));
            KafkaSource::new(topics.input.clone(), Json::<Noted>::new())
                .event_time(|n: &Noted| Some(n.ts))
                .build(job)?
                .records
                .lookup_with(
                    table,
                    "amounts",
                    JoinKind::Left,
                    |n: &Noted| n.key,
                    |n, a| LookedUp {
                        key: n.key,
                        ts: n.ts,
                        amount: a.copied(),
                    },
                )
                .write_kafka(
                    job,
                    KafkaSink::new(topics.output.clone(), Json::<LookedUp>::new())
                        .key(|l: &LookedUp| Some(l.key.to_string().into_bytes())),
                )?;
        }
        if let Some(topic) = &extra.keyed {
            streams
                .records
                .clone()
                .keyed_state(
                    "running-count",
                    u64::MAX / 4,
                    |e: &Event| e.key,
                    |key, count: &mut Option<u64>, _e| {
                        let n = count.unwrap_or(0) + 1;
                        *count = Some(n);
                        Some(KeyCount {
                            key: *key,
                            count: n,
                        })
                    },
                )
                .write_kafka(
                    job,
                    KafkaSink::new(topic.clone(), Json::<KeyCount>::new())
                        .key(|c: &KeyCount| Some(c.key.to_string().into_bytes())),
                )?;
        }
        if let Some(late) = &extra.late_sessions {
            let mut config = job.source_config().clone();
            config.out_of_orderness = std::time::Duration::from_millis(late.out_of_orderness);
            let source = KafkaSource::new(late.input.clone(), Json::<Event>::new())
                .event_time(|e: &Event| Some(e.ts))
                .config(config)
                .build(job)?;
            source
                .records
                .session(
                    "late-sessions",
                    late.gap,
                    WindowPolicy::new().lateness(late.lateness),
                    Some(source.late),
                    |e: &Event| e.key,
                    Count,
                )
                .results
                .write_kafka(
                    job,
                    KafkaSink::new(late.output.clone(), Json::<WindowCount>::new()).key(by_key),
                )?;
        }
        if let Some((topic, gap)) = &extra.sessions {
            streams
                .records
                .clone()
                .session_count("sessions", *gap, |e: &Event| e.key)
                .write_kafka(
                    job,
                    KafkaSink::new(topic.clone(), Json::<WindowCount>::new())
                        .key(|w: &WindowCount| Some(w.key.to_string().into_bytes())),
                )?;
        }
        let counts = streams
            .records
            .tumble_count("count", window_ms, |e: &Event| e.key);
        counts.write_kafka(
            job,
            KafkaSink::new(output.clone(), Json::<WindowCount>::new())
                .key(|w: &WindowCount| Some(w.key.to_string().into_bytes())),
        )?;
        streams.errors.print_with(job, "malformed", |e| {
            let (topic, partition, offset) = (&e.topic, e.partition, e.offset);
            format!("malformed {topic}[{partition}]@{offset}: {}", e.reason)
        });
        Ok(())
    }
}
