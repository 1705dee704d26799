//! Stream–table joins: each stream record is enriched with its key's latest table value
//! as of the record's event time.
//!
//! The table is a stream of `(key, value)` upserts (e.g. a compacted topic). Both
//! inputs are exchanged by key. A stream record at `(ts, e)` waits, holding its batch's
//! capability at `(ts, e)`, until the table's event-time frontier passes `ts` (every
//! upsert at or before `ts` is in); it is then joined with the upsert of greatest event
//! time `<= ts` (among upserts at the same event time, the one at the later timestamp,
//! then the greater value, wins) and emitted at `(ts, e)`.
//!
//! The table's state holds no capability: a table side is re-read from its start at
//! every run and never committed (see `docs/operators.md`). Per key it keeps the
//! latest value at or below the stream's frontier and every later one.
//!
//! This is a hand-written keyed operator rather than a differential-dataflow
//! arrangement. [`crate::Time`] does work with differential (see the test in
//! `time.rs`), but differential's upsert arrangement (`arrange_from_upsert`) requires
//! a totally ordered timestamp, and `Time` is a product order; and an as-of lookup
//! keeps one value per key and time, which differential's joins (all matching pairs,
//! as multisets over time) do not express directly.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::rc::Rc;

use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use crate::join::JoinKind;
use crate::time::{event_frontier, EventTime};
use crate::window::VecOutput;

/// Stream records waiting for the table, by event time and time.
type Waiting<T, D> = BTreeMap<(u64, T), (Capability<T>, Vec<D>)>;

/// Extension trait: as-of lookups of stream records in a table of upserts.
pub trait Lookup<'scope, T: EventTime, D> {
    /// Joins each record with the value of its key in `table` as of the record's event
    /// time, emitting `result(record, Some(value))`; a record whose key has no value
    /// yet is emitted as `result(record, None)` by a [`JoinKind::Left`] lookup and
    /// dropped by an inner one.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, JoinKind, Lookup};
    ///
    /// let out = timely::example(|scope| {
    ///     // Prices: item 1 costs 10 from t=0 and 12 from t=50.
    ///     let prices = vec![(1u8, 10u32, 0u64), (1, 12, 50)].to_stream(scope)
    ///         .assign_event_time("at", |r: &(u8, u32, u64)| r.2);
    ///     let table = timely::dataflow::operators::vec::Map::map(prices, |(k, v, _)| (k, v));
    ///     vec![(1u8, 20u64), (1, 70), (2, 70)].to_stream(scope)
    ///         .assign_event_time("at", |r: &(u8, u64)| r.1)
    ///         .lookup_with(table, "price", JoinKind::Left, |r: &(u8, u64)| r.0,
    ///             |r, price: Option<&u32>| (r.1, price.copied()))
    ///         .capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// got.sort();
    /// assert_eq!(got, vec![(20, Some(10)), (70, None), (70, Some(12))]);
    /// ```
    fn lookup_with<K, V, R, KF, F>(
        self,
        table: StreamVec<'scope, T, (K, V)>,
        name: &str,
        kind: JoinKind,
        key: KF,
        result: F,
    ) -> StreamVec<'scope, T, R>
    where
        K: ExchangeData + Hash + Eq + Clone,
        V: ExchangeData + Ord,
        R: 'static,
        KF: Fn(&D) -> K + 'static,
        F: Fn(D, Option<&V>) -> R + 'static;

    /// Inner lookup: `(record, value)` for records whose key has a value.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, Lookup};
    ///
    /// let out = timely::example(|scope| {
    ///     let table = vec![('a', 'A')].to_stream(scope);
    ///     vec!['a', 'b'].to_stream(scope).assign_event_time("at", |_| 5)
    ///         .lookup(table, "names", |c: &char| *c)
    ///         .capture()
    /// });
    /// let got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// assert_eq!(got, vec![('a', 'A')]);
    /// ```
    fn lookup<K, V, KF>(
        self,
        table: StreamVec<'scope, T, (K, V)>,
        name: &str,
        key: KF,
    ) -> StreamVec<'scope, T, (D, V)>
    where
        Self: Sized,
        D: 'static,
        K: ExchangeData + Hash + Eq + Clone,
        V: ExchangeData + Ord + Clone,
        KF: Fn(&D) -> K + 'static,
    {
        self.lookup_with(table, name, JoinKind::Inner, key, |d, v| {
            (d, v.expect("inner lookup has a value").clone())
        })
    }

    /// Left lookup: `(record, Some(value))`, or `(record, None)` if the key has none.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, Lookup};
    ///
    /// let out = timely::example(|scope| {
    ///     let table = vec![('a', 1u8)].to_stream(scope);
    ///     vec!['a', 'b'].to_stream(scope).assign_event_time("at", |_| 5)
    ///         .lookup_left(table, "ids", |c: &char| *c)
    ///         .capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// got.sort();
    /// assert_eq!(got, vec![('a', Some(1)), ('b', None)]);
    /// ```
    fn lookup_left<K, V, KF>(
        self,
        table: StreamVec<'scope, T, (K, V)>,
        name: &str,
        key: KF,
    ) -> StreamVec<'scope, T, (D, Option<V>)>
    where
        Self: Sized,
        D: 'static,
        K: ExchangeData + Hash + Eq + Clone,
        V: ExchangeData + Ord + Clone,
        KF: Fn(&D) -> K + 'static,
    {
        self.lookup_with(table, name, JoinKind::Left, key, |d, v| (d, v.cloned()))
    }
}

impl<'scope, T: EventTime, D: ExchangeData> Lookup<'scope, T, D> for StreamVec<'scope, T, D> {
    fn lookup_with<K, V, R, KF, F>(
        self,
        table: StreamVec<'scope, T, (K, V)>,
        name: &str,
        kind: JoinKind,
        key: KF,
        result: F,
    ) -> StreamVec<'scope, T, R>
    where
        K: ExchangeData + Hash + Eq + Clone,
        V: ExchangeData + Ord,
        R: 'static,
        KF: Fn(&D) -> K + 'static,
        F: Fn(D, Option<&V>) -> R + 'static,
    {
        let key = Rc::new(key);
        let route = key.clone();
        let pact = Exchange::new(move |d: &D| crate::hash::hash(&route(d)));
        let table_pact = Exchange::new(|(k, _): &(K, V)| crate::hash::hash(k));

        let mut builder = OperatorBuilder::new(format!("Lookup({name})"), self.scope());
        let mut stream_in = builder.new_input(self, pact);
        let mut table_in = builder.new_input(table, table_pact);
        let (output, stream) = builder.new_output();
        let mut output: VecOutput<T, R> = OutputBuilder::from(output);

        // Per key, its upserts by event time: (the upsert's time, value).
        let mut values: FxHashMap<K, BTreeMap<u64, (T, V)>> = FxHashMap::default();
        let mut waiting: Waiting<T, D> = BTreeMap::new();
        // No stream record below this event time can still be looked up.
        let mut horizon = 0u64;

        builder.build(move |_initial| {
            move |frontiers| {
                let mut output = output.activate();
                stream_in.for_each_stamp(|cap, batches| {
                    let Some(time) = cap.stamp().iter().next().copied() else {
                        return;
                    };
                    let (_, records) = waiting
                        .entry((time.event(), time))
                        .or_insert_with(|| (cap.delayed(&time, 0), Vec::new()));
                    for batch in batches {
                        records.append(batch);
                    }
                });
                table_in.for_each_stamp(|cap, batches| {
                    let Some(time) = cap.stamp().iter().next().copied() else {
                        return;
                    };
                    let t = time.event();
                    for batch in batches {
                        for (k, v) in batch.drain(..) {
                            let history = values.entry(k).or_default();
                            let newer = match history.get(&t) {
                                Some((old_time, old)) => (*old_time, old) < (time, &v),
                                None => true,
                            };
                            if newer {
                                history.insert(t, (time, v));
                            }
                            // Keep the latest value at or below the horizon, and later ones.
                            if let Some((&keep, _)) = history.range(..=horizon).next_back() {
                                while history.first_key_value().is_some_and(|(&u, _)| u < keep) {
                                    history.pop_first();
                                }
                            }
                        }
                    }
                });

                let table_frontier = event_frontier(&frontiers[1].frontier());
                while let Some(entry) = waiting.first_entry() {
                    let (ts, _) = *entry.key();
                    if ts >= table_frontier {
                        break;
                    }
                    let (cap, records) = entry.remove();
                    let mut session = output.session(&cap);
                    for record in records {
                        let value = values
                            .get(&key(&record))
                            .and_then(|history| history.range(..=ts).next_back())
                            .map(|(_, (_, v))| v);
                        if value.is_some() || kind == JoinKind::Left {
                            session.give(result(record, value));
                        }
                    }
                }
                let stream_frontier = event_frontier(&frontiers[0].frontier());
                horizon = waiting
                    .first_key_value()
                    .map_or(stream_frontier, |((ts, _), _)| stream_frontier.min(*ts));
            }
        });
        stream
    }
}
