//! Helpers shared by the operator tests: scripted inputs over `Time`, running a
//! dataflow at 1 or N workers, and random input generation.
#![allow(dead_code)]

pub mod crash;
pub mod upsert;

use std::sync::{Arc, Mutex};

use freshet_operators::{Late, Time};
use proptest::prelude::*;
use timely::dataflow::operators::Inspect;
use timely::dataflow::StreamVec;

/// A scripted input: records at explicit times, released round by round.
pub use freshet_operators::scripted::ScriptedInput as Source;

/// Collects what a stream carries, on every worker, into one shared vector.
pub fn collect<'s, D: Clone + Send + 'static>(
    stream: StreamVec<'s, Time, D>,
    into: &Arc<Mutex<Vec<D>>>,
) {
    let into = into.clone();
    stream.inspect(move |d| into.lock().unwrap().push(d.clone()));
}

/// One round (epoch) of a windowed workload: the source's watermark, the records read
/// (at or above it) and the late records read (below it).
#[derive(Clone, Debug)]
pub struct Round<D> {
    /// The event-time watermark the round's records are at or above.
    pub watermark: u64,
    /// `(event time, record)`.
    pub records: Vec<(u64, D)>,
    /// Late records, arriving at `(watermark, epoch)`.
    pub late: Vec<Late<D>>,
}

/// A keyed record: `(key, value, event time)`.
pub type Rec = (u8, u64, u64);

/// Random rounds of keyed records, out of order within each round.
pub fn rounds(max_rounds: usize) -> impl Strategy<Value = Vec<Round<Rec>>> {
    let round = (
        0u64..25,
        prop::collection::vec((0u8..4, 0u64..100, 0u64..40), 0..12),
        prop::collection::vec((0u8..4, 0u64..100, 0u64..60), 0..4),
    );
    prop::collection::vec(round, 1..max_rounds).prop_map(|raw| {
        let mut watermark = 0;
        raw.into_iter()
            .map(|(step, records, late)| {
                watermark += step;
                let records = records
                    .into_iter()
                    .map(|(k, v, off)| (k, v, watermark + off));
                round_at(watermark, records, late)
            })
            .collect()
    })
}

/// A round at `watermark` of `records` (`(key, value, event time)`) and of late records
/// `(key, value, back)`, each `1 + back % watermark` ms behind the watermark (none at
/// watermark 0).
pub fn round_at(
    watermark: u64,
    records: impl IntoIterator<Item = Rec>,
    late: Vec<(u8, u64, u64)>,
) -> Round<Rec> {
    let records = records.into_iter().map(|r| (r.2, r)).collect();
    let late = late
        .into_iter()
        .filter(|_| watermark > 0)
        .map(|(k, v, back)| {
            let event_time = watermark.saturating_sub(1 + back % watermark.max(1));
            Late {
                event_time,
                watermark,
                record: (k, v, event_time),
            }
        })
        .collect();
    Round {
        watermark,
        records,
        late,
    }
}

/// Runs a dataflow with one main and one late input fed with `rounds` (round `e` in
/// epoch `e`; each worker feeds every `workers`-th record, stepping between rounds) at
/// `workers` workers, and returns everything `build`'s output carried, sorted.
pub fn run_windowed<D, O, F>(workers: usize, rounds: &[Round<D>], build: F) -> Vec<O>
where
    D: timely::ExchangeData + Clone + Send + Sync,
    O: Clone + Send + Ord + 'static,
    F: for<'s> Fn(StreamVec<'s, Time, D>, StreamVec<'s, Time, Late<D>>) -> StreamVec<'s, Time, O>
        + Send
        + Sync
        + 'static,
{
    let out = Arc::new(Mutex::new(Vec::new()));
    let rounds = rounds.to_vec();
    let shared = out.clone();
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let (mut main, mut late) = worker.dataflow::<Time, _, _>(|scope| {
            let (main, main_stream) = Source::new(&scope);
            let (late, late_stream) = Source::new(&scope);
            collect(build(main_stream, late_stream), &shared);
            (main, late)
        });
        // Every worker reads its share of each round, like a source reading its
        // partitions, and advances in step.
        let mine = |i: usize| i % peers == index;
        for (epoch, round) in rounds.iter().enumerate() {
            let epoch = epoch as u64;
            for (_, (event, record)) in round.records.iter().enumerate().filter(|(i, _)| mine(*i)) {
                main.send(Time::new(*event, epoch), record.clone());
            }
            for (_, record) in round.late.iter().enumerate().filter(|(i, _)| mine(*i)) {
                late.send(Time::new(round.watermark, epoch), record.clone());
            }
            let next = rounds
                .get(epoch as usize + 1)
                .map_or(round.watermark, |r| r.watermark);
            main.advance(Time::new(next, epoch + 1));
            late.advance(Time::new(next, epoch + 1));
            for _ in 0..3 {
                worker.step();
            }
        }
        main.close();
        late.close();
    })
    .expect("timely ran");
    let mut out = Arc::try_unwrap(out)
        .ok()
        .expect("workers done")
        .into_inner()
        .unwrap();
    out.sort();
    out
}

/// Steps `worker` a few times: enough for a small dataflow to settle on one worker.
pub fn steps(worker: &mut timely::worker::Worker) {
    for _ in 0..5 {
        worker.step();
    }
}

/// What a stream–table lookup over `rounds` emits: stream records have an even value,
/// table upserts `(key, value)` an odd one (with `deletes`, a multiple of 5 is a
/// tombstone). The winning upsert for a stream record is its key's one of greatest
/// (event time, epoch, value) at or before its event time, a tombstone below any value;
/// a tombstone gives no value. Sorted.
pub fn lookup_reference(
    rounds: &[Round<Rec>],
    kind: freshet_operators::JoinKind,
    deletes: bool,
) -> Vec<(Rec, Option<u64>)> {
    let all: Vec<(u64, Rec)> = rounds
        .iter()
        .enumerate()
        .flat_map(|(epoch, r)| r.records.iter().map(move |(_, d)| (epoch as u64, *d)))
        .collect();
    let row = |v: u64| (!(deletes && v.is_multiple_of(5))).then_some(v);
    let mut out = Vec::new();
    for (_, s) in all.iter().filter(|(_, r)| r.1 & 1 == 0) {
        let value = all
            .iter()
            .filter(|(_, t)| t.1 & 1 == 1 && t.0 == s.0 && t.2 <= s.2)
            .max_by_key(|(epoch, t)| (t.2, *epoch, row(t.1)))
            .and_then(|(_, t)| row(t.1));
        if value.is_some() || kind == freshet_operators::JoinKind::Left {
            out.push((*s, value));
        }
    }
    out.sort();
    out
}

/// The lookup [`lookup_reference`] describes, with tombstones: odd values are the
/// table's upserts (a multiple of 5 a tombstone), even ones the stream records looked
/// up, emitted as `(record, value)`.
pub fn lookup_with_tombstones(
    main: StreamVec<'_, Time, Rec>,
    kind: freshet_operators::JoinKind,
) -> StreamVec<'_, Time, (Rec, Option<u64>)> {
    use freshet_operators::Lookup;
    use timely::dataflow::operators::vec::{Filter, Map};
    let table = main
        .clone()
        .filter(|r: &Rec| r.1 & 1 == 1)
        .map(|r| (r.0, (!r.1.is_multiple_of(5)).then_some(r.1)));
    main.filter(|r: &Rec| r.1 & 1 == 0).lookup_upserts_with(
        table,
        "l",
        kind,
        |r: &Rec| r.0,
        |r, v| (r, v.copied()),
    )
}
