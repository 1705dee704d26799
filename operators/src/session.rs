//! Keyed session windows: a key's records closer than `gap` ms in event time form one
//! session `[first, last + gap)`; a record that bridges two sessions merges them.
//!
//! A session is emitted once the event-time watermark reaches its end `last + gap`
//! (no record can extend it any more). While open it holds a capability at
//! `(end - 1, e)` for each least epoch `e` among its records (usually one, the
//! earliest), moved up as the session grows, and emits there, at `(end - 1, e_min)`. Session windows take no allowed lateness: every record on the
//! late input is emitted on the too-late output (a late record could extend or merge
//! sessions already emitted, which an upsert by `(key, start, end)` cannot express).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::hash::Hash;
use std::rc::Rc;

use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::operator::empty;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::CapabilitySet;
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use crate::aggregate::{Aggregator, Count};
use crate::late::Late;
use crate::time::EventTime;
use crate::window::{
    advance_caps, emission_cap, hold, watermark, Emit, VecOutput, WindowStreams, Windowed,
};

/// One open session of one key.
struct Open<T: EventTime, A> {
    start: u64,
    last: u64,
    caps: CapabilitySet<T>,
    acc: A,
}

/// Extension trait: keyed, gap-based session windows.
pub trait Session<'scope, T: EventTime, D> {
    /// Aggregates each key's sessions (records less than `gap` ms apart) with `agg`,
    /// which must merge: a record bridging two sessions merges their accumulators.
    ///
    /// Emit-final. Records on `late` are all emitted on the too-late output.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, Session};
    /// use freshet_operators::aggregate::Count;
    ///
    /// let out = timely::example(|scope| {
    ///     // 1 and 12 start two sessions; 6 bridges them (gap 7).
    ///     vec![1u64, 12, 6, 30].to_stream(scope).assign_event_time("at", |r: &u64| *r)
    ///         .session("visits", 7, None, |_: &u64| 'u', Count)
    ///         .results
    ///         .capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v)
    ///     .map(|w| (w.start, w.end, w.value)).collect();
    /// got.sort();
    /// assert_eq!(got, vec![(1, 19, 3), (30, 37, 1)]);
    /// ```
    fn session<K, G, KF>(
        self,
        name: &str,
        gap: u64,
        late: Option<StreamVec<'scope, T, Late<D>>>,
        key: KF,
        agg: G,
    ) -> WindowStreams<'scope, T, K, G::Out, D>
    where
        K: ExchangeData + Hash + Eq + Clone,
        G: Aggregator<D>,
        G::Out: Clone + 'static,
        KF: Fn(&D) -> K + 'static;

    /// Aggregates each key's sessions with `agg`, without a late input.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, Session};
    /// use freshet_operators::aggregate::Sum;
    ///
    /// let out = timely::example(|scope| {
    ///     vec![(1u8, 10u64), (1, 12), (2, 11)].to_stream(scope)
    ///         .assign_event_time("at", |r: &(u8, u64)| r.1)
    ///         .session_aggregate("sum", 5, |r: &(u8, u64)| r.0, Sum::new(|r: &(u8, u64)| r.1))
    ///         .capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v)
    ///     .map(|w| (w.key, w.start, w.end, w.value)).collect();
    /// got.sort();
    /// assert_eq!(got, vec![(1, 10, 17, 22), (2, 11, 16, 11)]);
    /// ```
    fn session_aggregate<K, G, KF>(
        self,
        name: &str,
        gap: u64,
        key: KF,
        agg: G,
    ) -> StreamVec<'scope, T, Windowed<K, G::Out>>
    where
        Self: Sized,
        K: ExchangeData + Hash + Eq + Clone,
        G: Aggregator<D>,
        G::Out: Clone + 'static,
        KF: Fn(&D) -> K + 'static,
    {
        self.session(name, gap, None, key, agg).results
    }

    /// Counts each key's records per session.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, Session};
    ///
    /// let out = timely::example(|scope| {
    ///     vec![0u64, 2, 4, 20].to_stream(scope).assign_event_time("at", |r: &u64| *r)
    ///         .session_count("count", 3, |_: &u64| ())
    ///         .capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v)
    ///     .map(|w| (w.start, w.value)).collect();
    /// got.sort();
    /// assert_eq!(got, vec![(0, 3), (20, 1)]);
    /// ```
    fn session_count<K, KF>(
        self,
        name: &str,
        gap: u64,
        key: KF,
    ) -> StreamVec<'scope, T, Windowed<K, u64>>
    where
        Self: Sized,
        K: ExchangeData + Hash + Eq + Clone,
        KF: Fn(&D) -> K + 'static,
    {
        self.session_aggregate(name, gap, key, Count)
    }
}

impl<'scope, T: EventTime, D: ExchangeData + Clone> Session<'scope, T, D>
    for StreamVec<'scope, T, D>
{
    fn session<K, G, KF>(
        self,
        name: &str,
        gap: u64,
        late: Option<StreamVec<'scope, T, Late<D>>>,
        key: KF,
        agg: G,
    ) -> WindowStreams<'scope, T, K, G::Out, D>
    where
        K: ExchangeData + Hash + Eq + Clone,
        G: Aggregator<D>,
        G::Out: Clone + 'static,
        KF: Fn(&D) -> K + 'static,
    {
        assert!(gap > 0, "session gap must be at least 1 ms");
        let scope = self.scope();
        let late = late.unwrap_or_else(|| empty(scope));
        let key = Rc::new(key);
        let route = key.clone();
        let pact = Exchange::new(move |d: &D| crate::hash::hash(&route(d)));

        let mut builder = OperatorBuilder::new(format!("Session({name}, gap {gap}ms)"), scope);
        let mut main_in = builder.new_input(self, pact);
        // Late records are not applied: no need to route them by key.
        let mut late_in = builder.new_input(late, timely::dataflow::channels::pact::Pipeline);
        let (results_out, results) = builder.new_output();
        let (too_late_out, too_late) = builder.new_output();
        let mut results_out: VecOutput<T, Windowed<K, G::Out>> = OutputBuilder::from(results_out);
        let mut too_late_out: VecOutput<T, Late<D>> = OutputBuilder::from(too_late_out);
        let too_late_count = Rc::new(Cell::new(0u64));
        let counter = too_late_count.clone();

        // Per key, its open sessions, sorted and at least `gap` apart.
        let mut sessions: FxHashMap<K, Vec<Open<T, G::Acc>>> = FxHashMap::default();
        // Keys by the end of a session they had: at or before the end of each of the
        // key's open sessions. Entries go stale as sessions grow; when the watermark
        // reaches one, the key's ended sessions are emitted and the key is filed again
        // under its earliest open session's end.
        let mut ends: BTreeMap<u64, Vec<K>> = BTreeMap::new();

        builder.build(move |_initial| {
            move |frontiers| {
                let mut results_out = results_out.activate();
                let mut too_late_out = too_late_out.activate();

                main_in.for_each_stamp(|cap, batches| {
                    let Some(time) = cap.stamp().iter().next().copied() else {
                        return;
                    };
                    let t = time.event();
                    for batch in batches {
                        for record in batch.drain(..) {
                            let k = key(&record);
                            let open = sessions.entry(k).or_default();
                            // Sessions this record touches: a contiguous run.
                            let from = open.partition_point(|s| s.last.saturating_add(gap) <= t);
                            let to = open.partition_point(|s| s.start < t.saturating_add(gap));
                            if to == from + 1 {
                                // Touches one session: the common case, updated in place.
                                let s = &mut open[from];
                                s.start = s.start.min(t);
                                s.last = s.last.max(t);
                                let end = s.last + gap;
                                hold(&mut s.caps, &cap, time.with_event(end - 1), 0);
                                // Move the capabilities up with the session's end once they
                                // lag it by a gap: not per record, yet a long session does
                                // not hold event time back for long.
                                let lag = s.caps.iter().map(|c| c.time().event()).min();
                                if lag.is_some_and(|e| e.saturating_add(gap) < end) {
                                    advance_caps(&mut s.caps, end - 1);
                                }
                                agg.add(&mut s.acc, &record);
                                continue;
                            }
                            let mut merged = Open {
                                start: t,
                                last: t,
                                caps: CapabilitySet::new(),
                                acc: agg.create(),
                            };
                            let new = from == to;
                            for s in open.drain(from..to) {
                                merged.start = merged.start.min(s.start);
                                merged.last = merged.last.max(s.last);
                                for c in s.caps.iter() {
                                    merged.caps.insert(c.clone());
                                }
                                agg.merge(&mut merged.acc, s.acc);
                            }
                            let end = merged.last + gap;
                            hold(&mut merged.caps, &cap, time.with_event(end - 1), 0);
                            advance_caps(&mut merged.caps, end - 1);
                            agg.add(&mut merged.acc, &record);
                            open.insert(from, merged);
                            // A merged session's parts have entries in `ends`, at or before
                            // its end; a new session needs one.
                            if new {
                                ends.entry(end).or_default().push(key(&record));
                            }
                        }
                    }
                });

                late_in.for_each_stamp(|cap, batches| {
                    let mut session = too_late_out.session(&cap);
                    for batch in batches {
                        counter.set(counter.get() + batch.len() as u64);
                        session.give_iterator(batch.drain(..));
                    }
                });

                let watermark = watermark(frontiers);
                while let Some(entry) = ends.first_entry() {
                    if *entry.key() > watermark {
                        break;
                    }
                    for k in entry.remove() {
                        let Some(open) = sessions.get_mut(&k) else {
                            continue;
                        };
                        let closed = open.partition_point(|s| s.last + gap <= watermark);
                        for s in open.drain(..closed) {
                            let end = s.last + gap;
                            if let Some(cap) = emission_cap(&s.caps, end - 1) {
                                results_out.session(&cap).give(Windowed {
                                    key: k.clone(),
                                    start: s.start,
                                    end,
                                    value: agg.finish(&s.acc),
                                    revision: 0,
                                    kind: Emit::Final,
                                });
                            }
                        }
                        match open.first() {
                            // Look again when the earliest open session may end.
                            Some(s) => ends.entry(s.last + gap).or_default().push(k),
                            None => {
                                sessions.remove(&k);
                            }
                        }
                    }
                }
            }
        });

        WindowStreams {
            results,
            too_late,
            too_late_count,
        }
    }
}
