//! Keyed interval joins: `a` (at event time `ta`) pairs with every `b` of the same key
//! at event time `tb` with `ta - lower <= tb <= ta + upper`.
//!
//! Both inputs are exchanged by key. A pair is emitted as soon as its second record
//! arrives, at that record's own time. Each record is kept, per key and event time,
//! for as long as a partner can still arrive: an `a` until the event-time watermark
//! passes `ta + upper`, a `b` until it passes `tb + lower`. While any record of epoch
//! `e` is kept the operator holds a capability at `(watermark, e)` (one per epoch,
//! moved up with the watermark; counted per batch, not per record), so the epoch is
//! not complete while a future pair could still need its records, and downstream
//! event time is not held back. For a left join, an `a` that found no partner is
//! emitted with `None` when it expires, at `(ta + upper, e)`.
//!
//! Under checkpoints (see [`crate::checkpoint`]) records of epochs after the next
//! checkpoint epoch wait in the operator's [`Aligner`] until that epoch is sealed (they
//! also hold back the watermark kept records expire at); then the part — per key and
//! event time whose kept records changed since the operator's previous part (were
//! added, paired or expired; every one in a full part) the records of both sides there
//! (a left record with whether it paired) — is written and, once durable, every epoch
//! held for them moves to the epoch after the checkpoint. Restored records hold
//! `C + 1`.

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

use crate::capability::{time_of, watermark, Mint, VecOutput};
use crate::checkpoint::{lift_time, restored_through, Aligner, Checkpoints};
use crate::hash::{by_key, hash};
use crate::held_epochs::HeldEpochs;
use crate::join::{JoinKind, Released, Side};
use crate::time::EventTime;

/// One side's kept records, per key and event time.
type Kept<K, D> = FxHashMap<K, BTreeMap<u64, At<D>>>;

/// One side's kept records of one key at one event time.
struct At<D> {
    records: Vec<D>,
    /// Listed in [`Both::changed`] since the last checkpoint.
    logged: bool,
}

impl<D> Default for At<D> {
    fn default() -> Self {
        At {
            records: Vec::new(),
            logged: false,
        }
    }
}
/// Per event time of kept records: the times of their batches and their keys.
type Expiry<T, K> = BTreeMap<u64, (Vec<T>, Vec<K>)>;

/// Extension trait: keyed event-time interval joins.
pub trait IntervalJoin<'scope, T: EventTime, A> {
    /// Pairs each `a` with every `b` of the same key whose event time is within
    /// `[ta - lower, ta + upper]`, emitting `result(key, a, Some(b))` per pair (and,
    /// for [`JoinKind::Left`], `result(key, a, None)` for an `a` that never paired).
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, IntervalJoin};
    /// use freshet_operators::join::JoinKind;
    ///
    /// let out = timely::example(|scope| {
    ///     let orders = vec![(1u8, 100u64), (2, 100)].to_stream(scope)
    ///         .assign_event_time("at", |r: &(u8, u64)| r.1);
    ///     let payments = vec![(1u8, 95u64), (1, 130), (2, 90)].to_stream(scope)
    ///         .assign_event_time("at", |r: &(u8, u64)| r.1);
    ///     // Payments from 5 ms before to 20 ms after the order.
    ///     orders.interval_join_with(payments, "paid", 5, 20, JoinKind::Left,
    ///         |a: &(u8, u64)| a.0, |b: &(u8, u64)| b.0,
    ///         |k, a, b| (*k, a.1, b.map(|b| b.1)))
    ///         .capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// got.sort();
    /// assert_eq!(got, vec![(1, 100, Some(95)), (2, 100, None)]);
    /// ```
    #[allow(clippy::too_many_arguments)]
    fn interval_join_with<B, K, R, KA, KB, F>(
        self,
        other: StreamVec<'scope, T, B>,
        name: &str,
        lower: u64,
        upper: u64,
        kind: JoinKind,
        key_a: KA,
        key_b: KB,
        result: F,
    ) -> StreamVec<'scope, T, R>
    where
        B: ExchangeData,
        K: ExchangeData + Hash + Eq + Clone,
        R: 'static,
        KA: Fn(&A) -> K + 'static,
        KB: Fn(&B) -> K + 'static,
        F: Fn(&K, &A, Option<&B>) -> R + 'static;

    /// Inner interval join, emitting `(a, b)` pairs.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, IntervalJoin};
    ///
    /// let out = timely::example(|scope| {
    ///     let a = vec![10u64].to_stream(scope).assign_event_time("at", |r: &u64| *r);
    ///     let b = vec![8u64, 12, 20].to_stream(scope).assign_event_time("at", |r: &u64| *r);
    ///     a.interval_join(b, "near", 2, 2, |_: &u64| (), |_: &u64| ()).capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// got.sort();
    /// assert_eq!(got, vec![(10, 8), (10, 12)]);
    /// ```
    #[allow(clippy::too_many_arguments)]
    fn interval_join<B, K, KA, KB>(
        self,
        other: StreamVec<'scope, T, B>,
        name: &str,
        lower: u64,
        upper: u64,
        key_a: KA,
        key_b: KB,
    ) -> StreamVec<'scope, T, (A, B)>
    where
        Self: Sized,
        A: Clone + 'static,
        B: ExchangeData + Clone,
        K: ExchangeData + Hash + Eq + Clone,
        KA: Fn(&A) -> K + 'static,
        KB: Fn(&B) -> K + 'static,
    {
        self.interval_join_with(
            other,
            name,
            lower,
            upper,
            JoinKind::Inner,
            key_a,
            key_b,
            |_, a, b| (a.clone(), b.expect("inner join pairs").clone()),
        )
    }

    /// Left interval join, emitting `(a, Some(b))` pairs and `(a, None)` for an `a`
    /// without partner once it can no longer get one.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, IntervalJoin};
    ///
    /// let out = timely::example(|scope| {
    ///     let a = vec![10u64, 50].to_stream(scope).assign_event_time("at", |r: &u64| *r);
    ///     let b = vec![11u64].to_stream(scope).assign_event_time("at", |r: &u64| *r);
    ///     a.interval_left_join(b, "near", 0, 5, |_: &u64| (), |_: &u64| ()).capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// got.sort();
    /// assert_eq!(got, vec![(10, Some(11)), (50, None)]);
    /// ```
    #[allow(clippy::too_many_arguments)]
    fn interval_left_join<B, K, KA, KB>(
        self,
        other: StreamVec<'scope, T, B>,
        name: &str,
        lower: u64,
        upper: u64,
        key_a: KA,
        key_b: KB,
    ) -> StreamVec<'scope, T, (A, Option<B>)>
    where
        Self: Sized,
        A: Clone + 'static,
        B: ExchangeData + Clone,
        K: ExchangeData + Hash + Eq + Clone,
        KA: Fn(&A) -> K + 'static,
        KB: Fn(&B) -> K + 'static,
    {
        self.interval_join_with(
            other,
            name,
            lower,
            upper,
            JoinKind::Left,
            key_a,
            key_b,
            |_, a, b| (a.clone(), b.cloned()),
        )
    }
}

impl<'scope, T: EventTime, A: ExchangeData> IntervalJoin<'scope, T, A> for StreamVec<'scope, T, A> {
    fn interval_join_with<B, K, R, KA, KB, F>(
        self,
        other: StreamVec<'scope, T, B>,
        name: &str,
        lower: u64,
        upper: u64,
        kind: JoinKind,
        key_a: KA,
        key_b: KB,
        result: F,
    ) -> StreamVec<'scope, T, R>
    where
        B: ExchangeData,
        K: ExchangeData + Hash + Eq + Clone,
        R: 'static,
        KA: Fn(&A) -> K + 'static,
        KB: Fn(&B) -> K + 'static,
        F: Fn(&K, &A, Option<&B>) -> R + 'static,
    {
        let (key_a, key_b) = (Rc::new(key_a), Rc::new(key_b));
        let (route_a, route_b) = (key_a.clone(), key_b.clone());
        let pact_a = by_key(move |d: &A| route_a(d));
        let pact_b = by_key(move |d: &B| route_b(d));

        let name = format!("IntervalJoin({name}, -{lower}ms..+{upper}ms)");
        let mut builder = OperatorBuilder::new(name.clone(), self.scope());
        let wake = crate::checkpoint::waker(&self.scope(), &builder);
        let mut input_a = builder.new_input(self, pact_a);
        let mut input_b = builder.new_input(other, pact_b);
        let (output, stream) = builder.new_output();
        let mut output: VecOutput<T, R> = OutputBuilder::from(output);

        let mut kept: Both<T, K, A, B> = Both {
            lower,
            upper,
            a: FxHashMap::default(),
            b: FxHashMap::default(),
            expiry_a: BTreeMap::new(),
            expiry_b: BTreeMap::new(),
            debts: HeldEpochs::new(),
            logging: false,
            changed: Vec::new(),
            closed_through: 0,
            restored_through: 0,
        };
        let checkpoints = Checkpoints::current();

        let held = crate::checkpoint::hold_output(checkpoints.as_ref(), &mut builder);
        builder.build(move |initial| {
            let mut aligner = checkpoints.map(|ctx| {
                let aligner = Aligner::new(ctx, &name, &initial[held]).waking(wake);
                kept.logging = true;
                kept.restore(&aligner, &initial[0]);
                aligner
            });
            move |frontiers| {
                let mut output = output.activate();
                input_a.for_each_stamp(|cap, batches| {
                    let Some(time) = time_of(&cap) else {
                        return;
                    };
                    let records = batches.flat_map(|b| b.drain(..));
                    // Expired before a restore: late for the run before the crash (see
                    // `restored_through`); it could only pair with expired records.
                    if time.event().saturating_add(upper) < kept.restored_through {
                        if let Some(a) = aligner.as_ref() {
                            a.checkpoints()
                                .dropped_behind(&name, records.count() as u64);
                        }
                        return;
                    }
                    if let Some(a) = aligner.as_mut().filter(|a| a.later(&time)) {
                        let mut records = records.map(Side::Left).collect();
                        a.stash(time, || cap.delayed(&time, 0), &mut records);
                        return;
                    }
                    let mut session = output.session(&cap);
                    let mut emit = |r| session.give(r);
                    kept.add_a(time, &cap, records, &*key_a, &result, &mut emit);
                });
                input_b.for_each_stamp(|cap, batches| {
                    let Some(time) = time_of(&cap) else {
                        return;
                    };
                    let records = batches.flat_map(|b| b.drain(..));
                    // Expired before a restore: late for the run before the crash (see
                    // `restored_through`); it could only pair with expired records.
                    if time.event().saturating_add(lower) < kept.restored_through {
                        if let Some(a) = aligner.as_ref() {
                            a.checkpoints()
                                .dropped_behind(&name, records.count() as u64);
                        }
                        return;
                    }
                    if let Some(a) = aligner.as_mut().filter(|a| a.later(&time)) {
                        let mut records = records.map(Side::Right).collect();
                        a.stash(time, || cap.delayed(&time, 0), &mut records);
                        return;
                    }
                    let mut session = output.session(&cap);
                    let mut emit = |r| session.give(r);
                    kept.add_b(time, &cap, records, &*key_b, &result, &mut emit);
                });

                // Each checkpoint epoch the inputs have sealed, in turn: pair what waited for it,
                // write the kept records, and move what they hold to the next epoch.
                if let Some(a) = aligner.as_mut() {
                    let mut apply = |kept: &mut Both<T, K, A, B>, released: Released<T, A, B>| {
                        for (cap, records) in released {
                            let time = *cap.time();
                            let mut session = output.session(&cap);
                            let mut emit = |r| session.give(r);
                            for record in records {
                                match record {
                                    Side::Left(x) => {
                                        kept.add_a(time, &cap, [x], &*key_a, &result, &mut emit)
                                    }
                                    Side::Right(y) => {
                                        kept.add_b(time, &cap, [y], &*key_b, &result, &mut emit)
                                    }
                                }
                            }
                        }
                    };
                    while let Some(epoch) = a.due(frontiers) {
                        apply(&mut kept, a.release(epoch));
                        kept.checkpoint(a, epoch);
                        kept.lift(epoch);
                        let next = a.next();
                        apply(&mut kept, a.release(next));
                    }
                    apply(&mut kept, a.release_if_done(frontiers));
                }

                // Records waiting for a checkpoint may still pair with kept records the
                // frontier alone would expire.
                let frontier = watermark(frontiers);
                let watermark = aligner
                    .as_ref()
                    .map_or(frontier, |a| frontier.min(a.stashed_from()));
                kept.expire(watermark, kind, &result, &mut output);
                kept.debts.settle(watermark);
                if let Some(a) = aligner.as_mut() {
                    a.settle(frontier);
                }
            }
        });
        stream
    }
}

/// The operator's output, activated.
type Output<'a, T, R> = timely::dataflow::operators::generic::OutputBuilderSession<
    'a,
    T,
    timely::container::CapacityContainerBuilder<Vec<R>>,
>;

/// Both sides' kept records, their expiry index and the epochs held for them.
struct Both<T: EventTime, K, A, B> {
    lower: u64,
    upper: u64,
    /// Left records, each with whether it found a partner yet.
    a: Kept<K, (A, bool)>,
    b: Kept<K, B>,
    expiry_a: Expiry<T, K>,
    expiry_b: Expiry<T, K>,
    debts: HeldEpochs<T>,
    /// Whether changes are tracked for incremental checkpoints.
    logging: bool,
    /// `(key, event time)` of the kept records changed since the last checkpoint (one
    /// side's change listed once; both sides' may list it twice).
    changed: Vec<(K, u64)>,
    /// The watermark kept records were expired at.
    closed_through: u64,
    /// After a restore, the restored `closed_through` (see
    /// [`crate::checkpoint::restored_through`]); 0 otherwise.
    restored_through: u64,
}

/// One key's kept records at one event time as a checkpoint entry: keyed by `(key,
/// event time)`, valued by the records of both sides there (a left record with whether
/// it paired).
type KeptEntry<K, A, B> = ((K, u64), (Vec<(A, bool)>, Vec<B>));

/// Lists `(k, t)` in `changed` unless `at` is listed already (or nothing is tracked).
fn log_change<K: Clone, D>(
    logging: bool,
    changed: &mut Vec<(K, u64)>,
    at: &mut At<D>,
    k: &K,
    t: u64,
) {
    if logging && !at.logged {
        at.logged = true;
        changed.push((k.clone(), t));
    }
}

impl<T: EventTime, K: Hash + Eq + Clone, A, B> Both<T, K, A, B> {
    /// Pairs left records of one message at `time` (covered by `cap`) with the kept
    /// right records in range, emitting each pair, and keeps them.
    fn add_a<R>(
        &mut self,
        time: T,
        cap: &impl Mint<T>,
        records: impl IntoIterator<Item = A>,
        key: &impl Fn(&A) -> K,
        result: &impl Fn(&K, &A, Option<&B>) -> R,
        emit: &mut impl FnMut(R),
    ) {
        let ta = time.event();
        let (times, keys) = self.expiry_a.entry(ta).or_default();
        times.push(time);
        self.debts.owe(&time, cap, 0);
        let range = ta.saturating_sub(self.lower)..=ta.saturating_add(self.upper);
        for a in records {
            let k = key(&a);
            let mut paired = false;
            if let Some(bs) = self.b.get(&k) {
                for (_, bs) in bs.range(range.clone()) {
                    for b in &bs.records {
                        emit(result(&k, &a, Some(b)));
                        paired = true;
                    }
                }
            }
            let at = self.a.entry(k.clone()).or_default().entry(ta).or_default();
            log_change(self.logging, &mut self.changed, at, &k, ta);
            if at.records.is_empty() {
                keys.push(k);
            }
            at.records.push((a, paired));
        }
    }

    /// Pairs right records of one message at `time` (covered by `cap`) with the kept
    /// left records in range, emitting each pair, and keeps them.
    fn add_b<R>(
        &mut self,
        time: T,
        cap: &impl Mint<T>,
        records: impl IntoIterator<Item = B>,
        key: &impl Fn(&B) -> K,
        result: &impl Fn(&K, &A, Option<&B>) -> R,
        emit: &mut impl FnMut(R),
    ) {
        let tb = time.event();
        let (times, keys) = self.expiry_b.entry(tb).or_default();
        times.push(time);
        self.debts.owe(&time, cap, 0);
        let range = tb.saturating_sub(self.upper)..=tb.saturating_add(self.lower);
        for b in records {
            let k = key(&b);
            if let Some(as_) = self.a.get_mut(&k) {
                for (ta, as_) in as_.range_mut(range.clone()) {
                    let mut newly = false;
                    for (a, a_paired) in as_.records.iter_mut() {
                        emit(result(&k, a, Some(&b)));
                        newly |= !*a_paired;
                        *a_paired = true;
                    }
                    if newly {
                        log_change(self.logging, &mut self.changed, as_, &k, *ta);
                    }
                }
            }
            let at = self.b.entry(k.clone()).or_default().entry(tb).or_default();
            log_change(self.logging, &mut self.changed, at, &k, tb);
            if at.records.is_empty() {
                keys.push(k);
            }
            at.records.push(b);
        }
    }

    /// Drops the records no partner can arrive for any more (all of them once the
    /// watermark is at the end), emitting unpaired left records of a left join.
    fn expire<R: 'static>(
        &mut self,
        watermark: u64,
        kind: JoinKind,
        result: &impl Fn(&K, &A, Option<&B>) -> R,
        output: &mut Output<'_, T, R>,
    ) {
        let (lower, upper) = (self.lower, self.upper);
        self.closed_through = self.closed_through.max(watermark);
        // An `a` at `ta` can pair until a `b` at `ta + upper` can arrive.
        while let Some(entry) = self.expiry_a.first_entry() {
            let ta = *entry.key();
            // (Once both inputs end, everything expires.)
            if ta.saturating_add(upper) >= watermark && watermark < u64::MAX {
                break;
            }
            let (times, keys) = entry.remove();
            // At `ta + upper`, at or above the last settled watermark, in the least
            // epoch among the records.
            let cap = match kind {
                JoinKind::Left => times
                    .iter()
                    .copied()
                    .reduce(|a, b| a.meet(&b))
                    .map(|t| self.debts.delayed(&t.with_event(ta.saturating_add(upper)))),
                JoinKind::Inner => None,
            };
            times.iter().for_each(|t| self.debts.pay(t));
            for k in keys {
                let Some(kept) = self.a.get_mut(&k) else {
                    continue;
                };
                let expired = kept.remove(&ta).unwrap_or_default();
                if kept.is_empty() {
                    self.a.remove(&k);
                }
                if let Some(cap) = cap.as_ref() {
                    let mut session = output.session(cap);
                    for (a, _) in expired.records.iter().filter(|(_, paired)| !paired) {
                        session.give(result(&k, a, None));
                    }
                }
                if self.logging && !expired.logged {
                    self.changed.push((k, ta));
                }
            }
        }
        while let Some(entry) = self.expiry_b.first_entry() {
            let tb = *entry.key();
            if tb.saturating_add(lower) >= watermark && watermark < u64::MAX {
                break;
            }
            let (times, keys) = entry.remove();
            times.iter().for_each(|t| self.debts.pay(t));
            for k in keys {
                if let Some(times) = self.b.get_mut(&k) {
                    let expired = times.remove(&tb);
                    if times.is_empty() {
                        self.b.remove(&k);
                    }
                    if self.logging && expired.is_some_and(|at| !at.logged) {
                        self.changed.push((k, tb));
                    }
                }
            }
        }
    }

    /// Every epoch `<= epoch` held for kept records moves to `epoch + 1`: the
    /// checkpoint of `epoch` answers for them.
    fn lift(&mut self, epoch: u64) {
        for (times, _) in self.expiry_a.values_mut().chain(self.expiry_b.values_mut()) {
            for t in times.iter_mut() {
                *t = lift_time(*t, epoch);
            }
        }
        self.debts.lift(epoch);
    }
}

impl<T: EventTime, K: Hash + Eq + Clone + Serialize, A: Serialize, B: Serialize> Both<T, K, A, B> {
    /// Writes this worker's part of checkpoint `epoch`: the kept records of each key
    /// and event time changed since the last part (or of every one).
    fn checkpoint(&mut self, aligner: &mut Aligner<T, Side<A, B>>, epoch: u64) {
        type View<'a, A, B> = (&'a [(A, bool)], &'a [B]);
        fn at<'a, K: Hash + Eq, X>(kept: &'a Kept<K, X>, k: &K, t: u64) -> Option<&'a [X]> {
            kept.get(k)?.get(&t).map(|at| &at.records[..])
        }
        let changed = std::mem::take(&mut self.changed);
        let (a, b) = (&self.a, &self.b);
        let view = |k: &K, t: u64| -> Option<View<'_, A, B>> {
            match (at(a, k, t), at(b, k, t)) {
                (None, None) => None,
                (x, y) => Some((x.unwrap_or_default(), y.unwrap_or_default())),
            }
        };
        aligner.write_log(epoch, self.closed_through, |want| {
            // Each `(key, event time)` once, from the side that has it first.
            let left = a
                .iter()
                .flat_map(|(k, by_time)| by_time.keys().map(move |t| (k, *t)));
            let right = b.iter().flat_map(|(k, by_time)| {
                by_time
                    .keys()
                    .filter(move |t| at(a, k, **t).is_none())
                    .map(move |t| (k, *t))
            });
            let changed = changed.iter().map(|(k, t)| (k, *t));
            want.pick_by_key(left.chain(right), changed, |(k, t)| view(k, *t))
        });
        for (k, t) in &changed {
            for logged in [
                self.a
                    .get_mut(k)
                    .and_then(|m| m.get_mut(t))
                    .map(|at| &mut at.logged),
                self.b
                    .get_mut(k)
                    .and_then(|m| m.get_mut(t))
                    .map(|at| &mut at.logged),
            ]
            .into_iter()
            .flatten()
            {
                *logged = false;
            }
        }
        self.changed = changed;
        self.changed.clear();
    }
}

impl<T, K, A, B> Both<T, K, A, B>
where
    T: EventTime,
    K: Hash + Eq + Clone + DeserializeOwned,
    A: DeserializeOwned,
    B: DeserializeOwned,
{
    /// Loads the restored checkpoint's parts, keeping the keys this worker owns, each
    /// key's records of one event time holding (from `initial`) the epoch after the
    /// checkpoint.
    fn restore(&mut self, aligner: &Aligner<T, Side<A, B>>, initial: &Capability<T>) {
        let ctx = aligner.checkpoints();
        let Some((epoch, parts)) =
            aligner.restored_log::<u64, (K, u64), (Vec<(A, bool)>, Vec<B>)>()
        else {
            return;
        };
        let through: Vec<u64> = parts.iter().map(|(through, _)| *through).collect();
        self.restored_through = restored_through(ctx, &through);
        self.closed_through = self.restored_through;
        let since = initial.time().with_epoch(epoch);
        #[allow(clippy::too_many_arguments)]
        fn load<T: EventTime, K: Hash + Eq + Clone, X>(
            kept: &mut Kept<K, X>,
            expiry: &mut Expiry<T, K>,
            debts: &mut HeldEpochs<T>,
            k: &K,
            t: u64,
            records: Vec<X>,
            since: T,
            initial: &Capability<T>,
        ) {
            if records.is_empty() {
                return;
            }
            let (times, keys) = expiry.entry(t).or_default();
            times.push(since);
            keys.push(k.clone());
            debts.owe(&since, initial, 0);
            let at = kept.entry(k.clone()).or_default().entry(t).or_default();
            at.records.extend(records);
        }
        for (_, entries) in parts {
            let entries: Vec<KeptEntry<K, A, B>> = entries;
            for ((k, t), (a, b)) in entries.into_iter().filter(|((k, _), _)| ctx.owns(hash(k))) {
                let debts = &mut self.debts;
                load(
                    &mut self.a,
                    &mut self.expiry_a,
                    debts,
                    &k,
                    t,
                    a,
                    since,
                    initial,
                );
                load(
                    &mut self.b,
                    &mut self.expiry_b,
                    debts,
                    &k,
                    t,
                    b,
                    since,
                    initial,
                );
            }
        }
    }
}
