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
//! also hold back the watermark kept records expire at); then the kept records of both
//! sides (a left record with whether it paired) are written and, once durable, every
//! epoch held for them moves to the epoch after the checkpoint. Restored records hold
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
use crate::checkpoint::{lift_time, Aligner, Checkpoints};
use crate::hash::{by_key, hash};
use crate::held_epochs::HeldEpochs;
use crate::join::{JoinKind, Released, Side};
use crate::time::EventTime;

/// One side's kept records, per key and event time.
type Kept<K, D> = FxHashMap<K, BTreeMap<u64, Vec<D>>>;
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
        };
        let checkpoints = Checkpoints::current();

        builder.build(move |initial| {
            let mut aligner = checkpoints.map(|ctx| {
                let aligner = Aligner::new(ctx, &name, &initial[0]);
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
                        if kept.checkpoint(a, epoch) {
                            kept.lift(epoch);
                        }
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
}

/// One worker's part of a checkpoint: each key's kept records of both sides, by event
/// time (a left record with whether it paired).
type Part<K, A, B> = (SidePart<K, (A, bool)>, SidePart<K, B>);

/// One side's kept records in a checkpoint: per key, by event time.
type SidePart<K, X> = Vec<(K, Vec<(u64, Vec<X>)>)>;

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
                    for b in bs {
                        emit(result(&k, &a, Some(b)));
                        paired = true;
                    }
                }
            }
            let at = self.a.entry(k.clone()).or_default().entry(ta).or_default();
            if at.is_empty() {
                keys.push(k);
            }
            at.push((a, paired));
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
                for (_, as_) in as_.range_mut(range.clone()) {
                    for (a, a_paired) in as_.iter_mut() {
                        emit(result(&k, a, Some(&b)));
                        *a_paired = true;
                    }
                }
            }
            let at = self.b.entry(k.clone()).or_default().entry(tb).or_default();
            if at.is_empty() {
                keys.push(k);
            }
            at.push(b);
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
                    for (a, _) in expired.iter().filter(|(_, paired)| !paired) {
                        session.give(result(&k, a, None));
                    }
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
                    times.remove(&tb);
                    if times.is_empty() {
                        self.b.remove(&k);
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
    /// Writes this worker's part of checkpoint `epoch` (the shape of [`Part`], from
    /// references).
    fn checkpoint(&self, aligner: &mut Aligner<T, Side<A, B>>, epoch: u64) -> bool {
        type View<'a, K, X> = Vec<(&'a K, Vec<(u64, &'a Vec<X>)>)>;
        fn view<K, X>(kept: &Kept<K, X>) -> View<'_, K, X> {
            kept.iter()
                .map(|(k, by_time)| (k, by_time.iter().map(|(t, x)| (*t, x)).collect()))
                .collect()
        }
        aligner.write(epoch, &(view(&self.a), view(&self.b)))
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
        let Some((epoch, parts)) = aligner.restored::<Part<K, A, B>>() else {
            return;
        };
        let since = initial.time().with_epoch(epoch);
        fn load<T: EventTime, K: Hash + Eq + Clone, X>(
            kept: &mut Kept<K, X>,
            expiry: &mut Expiry<T, K>,
            debts: &mut HeldEpochs<T>,
            part: SidePart<K, X>,
            ctx: &Checkpoints,
            since: T,
            initial: &Capability<T>,
        ) {
            for (k, by_time) in part.into_iter().filter(|(k, _)| ctx.owns(hash(k))) {
                for (t, records) in by_time {
                    let (times, keys) = expiry.entry(t).or_default();
                    times.push(since);
                    keys.push(k.clone());
                    debts.owe(&since, initial, 0);
                    kept.entry(k.clone()).or_default().insert(t, records);
                }
            }
        }
        for (a, b) in parts {
            let debts = &mut self.debts;
            load(
                &mut self.a,
                &mut self.expiry_a,
                debts,
                a,
                ctx,
                since,
                initial,
            );
            load(
                &mut self.b,
                &mut self.expiry_b,
                debts,
                b,
                ctx,
                since,
                initial,
            );
        }
    }
}
