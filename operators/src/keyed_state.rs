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
//!
//! Under checkpoints (see [`crate::checkpoint`]) records of epochs after the next
//! checkpoint epoch wait in the operator's [`Aligner`] until that epoch is sealed; then
//! the part — the states changed since the operator's previous part (every state in a
//! full part), each with its expiry bookkeeping (`last`, and where its expiry entry
//! is), a state dropped as a removed entry, and the records still waiting for the
//! watermark, whole — is written, and once it is durable every epoch held for it moves to the epoch after the checkpoint:
//! a key updated in every epoch no longer holds commits back at its first one. Restored
//! state and records hold the epoch after the restored checkpoint. The state type must
//! therefore be serializable (`Serialize + DeserializeOwned`), checked at compile time.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::rc::Rc;

use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::Serialize;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use crate::capability::{watermark, VecOutput, Waiting};
use crate::checkpoint::{
    by_event, lift_time, restore_pending, take_in, write_due, Aligner, Checkpoints,
};
use crate::hash::{by_key, hash};
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
    /// Listed in [`Keyed::changed`] since the last checkpoint.
    logged: bool,
}

/// Extension trait: keyed state machines with an event-time TTL.
pub trait KeyedState<'scope, T: EventTime, D> {
    /// Runs `step(key, state, record)` for each record in event-time order, emitting
    /// what it returns; `state` is `None` for a key with no live state, and setting it
    /// to `None` drops it. A state not updated for more than `ttl` ms of event time is
    /// dropped, emitting what `expire(key, state)` returns.
    ///
    /// The operator's checkpoint name is `KeyedState(name, ttl <ttl>ms)`: `name` must
    /// be unique among the job's stateful operators. The state is written in
    /// checkpoints, hence `S: Serialize + DeserializeOwned`.
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
        S: Serialize + DeserializeOwned + 'static,
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
        S: Serialize + DeserializeOwned + 'static,
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
        S: Default + Clone + Serialize + DeserializeOwned + 'static,
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
        S: Serialize + DeserializeOwned + 'static,
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
        let mut builder = OperatorBuilder::new(name.clone(), self.scope());
        let wake = crate::checkpoint::waker(&self.scope(), &builder);
        let mut input = builder.new_input(self, pact);
        let (output, stream) = builder.new_output();
        let mut output: VecOutput<T, R> = OutputBuilder::from(output);

        let mut waiting: Waiting<T, D> = BTreeMap::new();
        let mut keyed: Keyed<T, K, S> = Keyed {
            states: FxHashMap::default(),
            expiry: BTreeMap::new(),
            debts: HeldEpochs::new(),
            logging: false,
            changed: Vec::new(),
        };
        let checkpoints = Checkpoints::current();

        let held = crate::checkpoint::hold_output(checkpoints.as_ref(), &mut builder);
        builder.build(move |initial| {
            let mut aligner = checkpoints.map(|ctx| {
                let aligner = Aligner::new(ctx, &name, &initial[held]).waking(wake);
                keyed.logging = true;
                keyed.restore(&aligner, &initial[0], &mut waiting, &*key);
                aligner
            });
            move |frontiers| {
                let mut output = output.activate();
                input.for_each_stamp(|cap, batches| {
                    take_in(aligner.as_mut(), &mut waiting, cap, batches)
                });

                // Each checkpoint epoch the inputs have sealed, in turn: what waited for it
                // joins the records waiting for the watermark, the part is written, and what
                // it held moves to the next epoch.
                if let Some(a) = aligner.as_mut() {
                    write_due(a, frontiers, &mut waiting, |a, epoch, waiting| {
                        keyed.checkpoint(a, epoch, waiting);
                        keyed.lift(epoch);
                    });
                }

                // Records waiting for a checkpoint are applied in event-time order too.
                let frontier = watermark(frontiers);
                let watermark = aligner
                    .as_ref()
                    .map_or(frontier, |a| frontier.min(a.stashed_from()));
                while let Some(entry) = waiting.first_entry() {
                    let (t, _) = *entry.key();
                    if t >= watermark {
                        break;
                    }
                    let (cap, records) = entry.remove();
                    keyed.apply(
                        t,
                        &cap,
                        records,
                        ttl,
                        &*key,
                        &mut step,
                        &mut expire,
                        &mut output,
                    );
                }

                // States whose TTL the watermark passed (all of them once input ends).
                keyed.expire(watermark, ttl, &mut expire, &mut output);
                keyed.debts.settle(watermark);
                if let Some(a) = aligner.as_mut() {
                    a.settle(frontier);
                }
            }
        });
        stream
    }
}

/// The operator's output, activated.
type Session<'a, T, R> = timely::dataflow::operators::generic::OutputBuilderSession<
    'a,
    T,
    timely::container::CapacityContainerBuilder<Vec<R>>,
>;

/// Every live key's state, the expiry index and the epochs held for them.
struct Keyed<T: EventTime, K, S> {
    states: FxHashMap<K, Entry<T, S>>,
    /// One entry per live key, at or before its `last + ttl`: a key updated since is
    /// moved to its new deadline when its entry comes up (so memory is per key, not
    /// per record); entries of dropped keys are skipped.
    expiry: BTreeMap<u64, Vec<K>>,
    /// One capability per epoch among live states, at the watermark.
    debts: HeldEpochs<T>,
    /// Whether changes are tracked for incremental checkpoints.
    logging: bool,
    /// The keys whose state changed or was dropped since the last checkpoint.
    changed: Vec<K>,
}

/// The state that is not keyed, written whole in every part: the records waiting for
/// the watermark, at their time.
type Extra<T, D> = Vec<(T, Vec<D>)>;

/// One key's state as a checkpoint entry: keyed by the key, valued by `(state, last,
/// scheduled)`.
type StateEntry<K, S> = (K, (S, u64, u64));

impl<T: EventTime, K: Hash + Eq + Clone, S> Keyed<T, K, S> {
    /// Applies the records of one waiting batch at event time `t`, under `cap`.
    #[allow(clippy::too_many_arguments)]
    fn apply<D, R: 'static, I: IntoIterator<Item = R>>(
        &mut self,
        t: u64,
        cap: &Capability<T>,
        records: Vec<D>,
        ttl: u64,
        key: &impl Fn(&D) -> K,
        step: &mut impl FnMut(&K, &mut Option<S>, D) -> I,
        expire: &mut impl FnMut(&K, S) -> Option<R>,
        output: &mut Session<'_, T, R>,
    ) {
        // The capability's time, not the batch's: a checkpoint may have moved it to
        // a later epoch.
        let time = *cap.time();
        let mut session = output.session(cap);
        for record in records {
            let k = key(&record);
            let mut state = None;
            let mut since = time;
            let mut scheduled = None;
            // Whether the key is listed in `changed` already (or need not be), and
            // whether it had state.
            let (mut logged, mut had) = (!self.logging, false);
            if let Some(old) = self.states.remove(&k) {
                (logged, had) = (logged || old.logged, true);
                self.debts.pay(&old.since);
                if old.last.saturating_add(ttl) < t {
                    session.give_iterator(expire(&k, old.state).into_iter());
                } else {
                    state = Some(old.state);
                    since = since.meet(&old.since);
                    scheduled = Some(old.scheduled);
                }
            }
            session.give_iterator(step(&k, &mut state, record).into_iter());
            // The key had state or has it now: its entry changed.
            if !logged && (had || state.is_some()) {
                logged = true;
                self.changed.push(k.clone());
            }
            if let Some(state) = state {
                // `t` is at or above the last settled watermark.
                self.debts.owe(&since.with_event(t), cap, 0);
                let scheduled = scheduled.unwrap_or_else(|| {
                    let at = t.saturating_add(ttl);
                    self.expiry.entry(at).or_default().push(k.clone());
                    at
                });
                self.states.insert(
                    k,
                    Entry {
                        state,
                        since,
                        last: t,
                        scheduled,
                        logged,
                    },
                );
            }
        }
    }

    /// Drops the states whose TTL the watermark passed (all of them once it is at the
    /// end), emitting what `expire` returns.
    fn expire<R: 'static>(
        &mut self,
        watermark: u64,
        ttl: u64,
        expire: &mut impl FnMut(&K, S) -> Option<R>,
        output: &mut Session<'_, T, R>,
    ) {
        while let Some(entry) = self.expiry.first_entry() {
            if *entry.key() >= watermark && watermark < u64::MAX {
                break;
            }
            let at = *entry.key();
            for k in entry.remove() {
                let Some(e) = self.states.get_mut(&k).filter(|e| e.scheduled == at) else {
                    continue; // dropped (and maybe re-created with its own entry)
                };
                let deadline = e.last.saturating_add(ttl);
                if deadline > at {
                    // Updated since it was scheduled: move its one entry.
                    e.scheduled = deadline;
                    if self.logging && !e.logged {
                        e.logged = true;
                        self.changed.push(k.clone());
                    }
                    self.expiry.entry(deadline).or_default().push(k);
                    continue;
                }
                let old = self.states.remove(&k).expect("live");
                self.debts.pay(&old.since);
                if let Some(r) = expire(&k, old.state) {
                    // `at` is at or above the last settled watermark.
                    let cap = self.debts.delayed(&old.since.with_event(at));
                    output.session(&cap).give(r);
                }
                if self.logging && !old.logged {
                    self.changed.push(k);
                }
            }
        }
    }

    /// Every epoch `<= epoch` held for a state moves to `epoch + 1`: the checkpoint of
    /// `epoch` answers for it.
    fn lift(&mut self, epoch: u64) {
        for e in self.states.values_mut() {
            e.since = lift_time(e.since, epoch);
        }
        self.debts.lift(epoch);
    }
}

impl<T: EventTime, K: Hash + Eq + Clone + Serialize, S: Serialize> Keyed<T, K, S> {
    /// Writes this worker's part of checkpoint `epoch`: the states changed since the
    /// last part (or every state), and the records waiting.
    fn checkpoint<D: Serialize>(
        &mut self,
        aligner: &mut Aligner<T, D>,
        epoch: u64,
        waiting: &Waiting<T, D>,
    ) {
        let extra: Vec<(T, &Vec<D>)> = waiting.iter().map(|((_, t), (_, d))| (*t, d)).collect();
        let changed = std::mem::take(&mut self.changed);
        let states = &self.states;
        fn view<T, S>(e: &Entry<T, S>) -> (&S, u64, u64) {
            (&e.state, e.last, e.scheduled)
        }
        aligner.write_log(epoch, extra, |want| {
            let all = states.iter().map(|(k, e)| (k, Some(view(e))));
            want.pick(all, changed.iter().map(|k| (k, states.get(k).map(view))))
        });
        for k in &changed {
            if let Some(e) = self.states.get_mut(k) {
                e.logged = false;
            }
        }
        self.changed = changed;
        self.changed.clear();
    }
}

impl<T: EventTime, K: Hash + Eq + Clone + DeserializeOwned, S: DeserializeOwned> Keyed<T, K, S> {
    /// Loads the restored checkpoint's parts, keeping the keys this worker owns, with
    /// their epochs held (from `initial`) at the epoch after the checkpoint.
    fn restore<D: DeserializeOwned>(
        &mut self,
        aligner: &Aligner<T, D>,
        initial: &Capability<T>,
        waiting: &mut Waiting<T, D>,
        key: &impl Fn(&D) -> K,
    ) {
        let ctx = aligner.checkpoints();
        let Some((epoch, parts)) = aligner.restored_log::<Extra<T, D>, K, (S, u64, u64)>() else {
            return;
        };
        let since = initial.time().with_epoch(epoch);
        for (waiting_part, states) in parts {
            let states: Vec<StateEntry<K, S>> = states;
            for (k, (state, last, scheduled)) in states {
                if !ctx.owns(hash(&k)) {
                    continue;
                }
                self.debts.owe(&since, initial, 0);
                self.expiry.entry(scheduled).or_default().push(k.clone());
                let entry = Entry {
                    state,
                    since,
                    last,
                    scheduled,
                    logged: false,
                };
                self.states.insert(k, entry);
            }
            restore_pending(waiting, by_event(waiting_part), ctx, initial, epoch, key);
        }
    }
}
