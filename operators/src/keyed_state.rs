//! Per-key state machines over event time, with state dropped after an event-time TTL.
//!
//! Records are exchanged by key and applied in event-time order: a record at
//! `(t, e)` waits, holding its batch's capability, until the event-time watermark
//! passes `t`; then the records of each ready time are applied in time order (records
//! of one key at the same time in arrival order) and their outputs emitted at
//! `(t, e)`. A key's state expires when no record of it arrived for more than `ttl`
//! ms of event time: when the watermark passes `last + ttl`, or when its next record
//! is later than that (the record then starts from no state). An `expire` callback
//! may emit a last output for it.
//!
//! While any key keeps state derived from epoch `e`, the operator holds a capability
//! at `(watermark, e)`: one per distinct epoch among live states, moved up with the
//! watermark, so downstream event time is not held back while commits are.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::rc::Rc;

use rustc_hash::FxHashMap;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use crate::capability::{stash, watermark, VecOutput, Waiting};
use crate::hash::by_key;
use crate::held_epochs::HeldEpochs;
use crate::time::EventTime;

/// One key's live state.
struct Entry<T, S> {
    state: S,
    /// The meet of the times of the records the state is derived from.
    since: T,
    /// The greatest event time of those records.
    last: u64,
    /// Where the key's one entry in the expiry index is (at or before `last + ttl`).
    scheduled: u64,
}

/// Extension trait: keyed state machines with an event-time TTL.
pub trait KeyedState<'scope, T: EventTime, D> {
    /// Runs `step(key, state, record)` for each record in event-time order, emitting
    /// what it returns; `state` is `None` for a key with no live state, and setting it
    /// to `None` drops it. A state not updated for more than `ttl` ms of event time is
    /// dropped, emitting what `expire(key, state)` returns.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, KeyedState};
    ///
    /// // Logins per user until 10 ms of silence; report each streak when it ends.
    /// let out = timely::example(|scope| {
    ///     vec![('u', 1u64), ('u', 5), ('u', 30)].to_stream(scope)
    ///         .assign_event_time("at", |r: &(char, u64)| r.1)
    ///         .keyed_state_with("streaks", 10, |r: &(char, u64)| r.0,
    ///             |_user, streak: &mut Option<u32>, _r| {
    ///                 *streak = Some(streak.unwrap_or(0) + 1);
    ///                 None
    ///             },
    ///             |user, streak| Some((*user, streak)))
    ///         .capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// got.sort();
    /// assert_eq!(got, vec![('u', 1), ('u', 2)]);
    /// ```
    fn keyed_state_with<K, S, R, I, KF, F, E>(
        self,
        name: &str,
        ttl: u64,
        key: KF,
        step: F,
        expire: E,
    ) -> StreamVec<'scope, T, R>
    where
        K: ExchangeData + Hash + Eq + Clone,
        S: 'static,
        R: 'static,
        I: IntoIterator<Item = R>,
        KF: Fn(&D) -> K + 'static,
        F: FnMut(&K, &mut Option<S>, D) -> I + 'static,
        E: FnMut(&K, S) -> Option<R> + 'static;

    /// [`KeyedState::keyed_state_with`] with nothing emitted on expiry.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, KeyedState};
    ///
    /// // Emit a record only when its value differs from the key's previous one.
    /// let out = timely::example(|scope| {
    ///     vec![(1u8, 'a', 1u64), (1, 'a', 2), (1, 'b', 3)].to_stream(scope)
    ///         .assign_event_time("at", |r: &(u8, char, u64)| r.2)
    ///         .keyed_state("changes", 100, |r: &(u8, char, u64)| r.0,
    ///             |_, last: &mut Option<char>, r| {
    ///                 let changed = *last != Some(r.1);
    ///                 *last = Some(r.1);
    ///                 changed.then_some(r)
    ///             })
    ///         .capture()
    /// });
    /// let got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// assert_eq!(got, vec![(1, 'a', 1), (1, 'b', 3)]);
    /// ```
    fn keyed_state<K, S, R, I, KF, F>(
        self,
        name: &str,
        ttl: u64,
        key: KF,
        step: F,
    ) -> StreamVec<'scope, T, R>
    where
        Self: Sized,
        K: ExchangeData + Hash + Eq + Clone,
        S: 'static,
        R: 'static,
        I: IntoIterator<Item = R>,
        KF: Fn(&D) -> K + 'static,
        F: FnMut(&K, &mut Option<S>, D) -> I + 'static,
    {
        self.keyed_state_with(name, ttl, key, step, |_, _| None)
    }

    /// A running fold per key with a TTL: emits `(key, state)` after each record.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, KeyedState};
    ///
    /// let out = timely::example(|scope| {
    ///     vec![(7u8, 1u64), (7, 2), (7, 50)].to_stream(scope)
    ///         .assign_event_time("at", |r: &(u8, u64)| r.1)
    ///         .keyed_fold("total", 10, |r: &(u8, u64)| r.0, |sum: &mut u64, r| *sum += r.1)
    ///         .capture()
    /// });
    /// let got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// // The state expired between 2 and 50.
    /// assert_eq!(got, vec![(7, 1), (7, 3), (7, 50)]);
    /// ```
    fn keyed_fold<K, S, KF, F>(
        self,
        name: &str,
        ttl: u64,
        key: KF,
        fold: F,
    ) -> StreamVec<'scope, T, (K, S)>
    where
        Self: Sized,
        K: ExchangeData + Hash + Eq + Clone,
        S: Default + Clone + 'static,
        KF: Fn(&D) -> K + 'static,
        F: Fn(&mut S, &D) + 'static,
    {
        self.keyed_state(name, ttl, key, move |k, state: &mut Option<S>, record| {
            let state = state.get_or_insert_with(S::default);
            fold(state, &record);
            Some((k.clone(), state.clone()))
        })
    }
}

impl<'scope, T: EventTime, D: ExchangeData> KeyedState<'scope, T, D> for StreamVec<'scope, T, D> {
    fn keyed_state_with<K, S, R, I, KF, F, E>(
        self,
        name: &str,
        ttl: u64,
        key: KF,
        mut step: F,
        mut expire: E,
    ) -> StreamVec<'scope, T, R>
    where
        K: ExchangeData + Hash + Eq + Clone,
        S: 'static,
        R: 'static,
        I: IntoIterator<Item = R>,
        KF: Fn(&D) -> K + 'static,
        F: FnMut(&K, &mut Option<S>, D) -> I + 'static,
        E: FnMut(&K, S) -> Option<R> + 'static,
    {
        let key = Rc::new(key);
        let route = key.clone();
        let pact = by_key(move |d: &D| route(d));

        let name = format!("KeyedState({name}, ttl {ttl}ms)");
        let mut builder = OperatorBuilder::new(name, self.scope());
        let mut input = builder.new_input(self, pact);
        let (output, stream) = builder.new_output();
        let mut output: VecOutput<T, R> = OutputBuilder::from(output);

        let mut waiting: Waiting<T, D> = BTreeMap::new();
        let mut states: FxHashMap<K, Entry<T, S>> = FxHashMap::default();
        // One entry per live key, at or before its `last + ttl`: a key updated since is
        // moved to its new deadline when its entry comes up (so memory is per key, not
        // per record); entries of dropped keys are skipped.
        let mut expiry: BTreeMap<u64, Vec<K>> = BTreeMap::new();
        // One capability per epoch among live states, at the watermark.
        let mut debts: HeldEpochs<T> = HeldEpochs::new();

        builder.build(move |_initial| {
            move |frontiers| {
                let mut output = output.activate();
                input.for_each_stamp(|cap, batches| stash(&mut waiting, cap, batches));

                let watermark = watermark(frontiers);
                while let Some(entry) = waiting.first_entry() {
                    let (t, time) = *entry.key();
                    if t >= watermark {
                        break;
                    }
                    let (cap, records) = entry.remove();
                    let mut session = output.session(&cap);
                    for record in records {
                        let k = key(&record);
                        let mut state = None;
                        let mut since = time;
                        let mut scheduled = None;
                        if let Some(old) = states.remove(&k) {
                            debts.pay(&old.since);
                            if old.last.saturating_add(ttl) < t {
                                session.give_iterator(expire(&k, old.state).into_iter());
                            } else {
                                state = Some(old.state);
                                since = since.meet(&old.since);
                                scheduled = Some(old.scheduled);
                            }
                        }
                        session.give_iterator(step(&k, &mut state, record).into_iter());
                        if let Some(state) = state {
                            // `t` is at or above the last settled watermark.
                            debts.owe_with(&since.with_event(t), &cap);
                            let scheduled = scheduled.unwrap_or_else(|| {
                                let at = t.saturating_add(ttl);
                                expiry.entry(at).or_default().push(k.clone());
                                at
                            });
                            states.insert(
                                k,
                                Entry {
                                    state,
                                    since,
                                    last: t,
                                    scheduled,
                                },
                            );
                        }
                    }
                }

                // States whose TTL the watermark passed (all of them once input ends).
                while let Some(entry) = expiry.first_entry() {
                    if *entry.key() >= watermark && watermark < u64::MAX {
                        break;
                    }
                    let at = *entry.key();
                    for k in entry.remove() {
                        let Some(e) = states.get_mut(&k).filter(|e| e.scheduled == at) else {
                            continue; // dropped (and maybe re-created with its own entry)
                        };
                        let deadline = e.last.saturating_add(ttl);
                        if deadline > at {
                            // Updated since it was scheduled: move its one entry.
                            e.scheduled = deadline;
                            expiry.entry(deadline).or_default().push(k);
                            continue;
                        }
                        let old = states.remove(&k).expect("live");
                        debts.pay(&old.since);
                        if let Some(r) = expire(&k, old.state) {
                            // `at` is at or above the last settled watermark.
                            let cap = debts.delayed(&old.since.with_event(at));
                            output.session(&cap).give(r);
                        }
                    }
                }

                debts.settle(watermark);
            }
        });
        stream
    }
}
