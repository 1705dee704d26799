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

use std::collections::BTreeMap;
use std::hash::Hash;
use std::rc::Rc;

use rustc_hash::FxHashMap;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use crate::capability::{time_of, watermark, VecOutput};
use crate::hash::by_key;
use crate::held_epochs::HeldEpochs;
use crate::join::JoinKind;
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
        let mut builder = OperatorBuilder::new(name, self.scope());
        let mut input_a = builder.new_input(self, pact_a);
        let mut input_b = builder.new_input(other, pact_b);
        let (output, stream) = builder.new_output();
        let mut output: VecOutput<T, R> = OutputBuilder::from(output);

        // Left records, each with whether it found a partner yet.
        let mut kept_a: Kept<K, (A, bool)> = FxHashMap::default();
        let mut kept_b: Kept<K, B> = FxHashMap::default();
        let mut expiry_a: Expiry<T, K> = BTreeMap::new();
        let mut expiry_b: Expiry<T, K> = BTreeMap::new();
        let mut debts: HeldEpochs<T> = HeldEpochs::new();

        builder.build(move |_initial| {
            move |frontiers| {
                let mut output = output.activate();
                input_a.for_each_stamp(|cap, batches| {
                    let Some(time) = time_of(&cap) else {
                        return;
                    };
                    let ta = time.event();
                    let (times, keys) = expiry_a.entry(ta).or_default();
                    times.push(time);
                    debts.owe(&time, &cap, 0);
                    let mut session = output.session(&cap);
                    let range = ta.saturating_sub(lower)..=ta.saturating_add(upper);
                    for batch in batches {
                        for a in batch.drain(..) {
                            let k = key_a(&a);
                            let mut paired = false;
                            if let Some(bs) = kept_b.get(&k) {
                                for (_, bs) in bs.range(range.clone()) {
                                    for b in bs {
                                        session.give(result(&k, &a, Some(b)));
                                        paired = true;
                                    }
                                }
                            }
                            let at = kept_a.entry(k.clone()).or_default().entry(ta).or_default();
                            if at.is_empty() {
                                keys.push(k);
                            }
                            at.push((a, paired));
                        }
                    }
                });
                input_b.for_each_stamp(|cap, batches| {
                    let Some(time) = time_of(&cap) else {
                        return;
                    };
                    let tb = time.event();
                    let (times, keys) = expiry_b.entry(tb).or_default();
                    times.push(time);
                    debts.owe(&time, &cap, 0);
                    let mut session = output.session(&cap);
                    let range = tb.saturating_sub(upper)..=tb.saturating_add(lower);
                    for batch in batches {
                        for b in batch.drain(..) {
                            let k = key_b(&b);
                            if let Some(as_) = kept_a.get_mut(&k) {
                                for (_, as_) in as_.range_mut(range.clone()) {
                                    for (a, a_paired) in as_.iter_mut() {
                                        session.give(result(&k, a, Some(&b)));
                                        *a_paired = true;
                                    }
                                }
                            }
                            let at = kept_b.entry(k.clone()).or_default().entry(tb).or_default();
                            if at.is_empty() {
                                keys.push(k);
                            }
                            at.push(b);
                        }
                    }
                });

                let watermark = watermark(frontiers);
                // An `a` at `ta` can pair until a `b` at `ta + upper` can arrive.
                while let Some(entry) = expiry_a.first_entry() {
                    let ta = *entry.key();
                    // (Once both inputs end, everything expires.)
                    if ta.saturating_add(upper) >= watermark && watermark < u64::MAX {
                        break;
                    }
                    let (times, keys) = entry.remove();
                    // At `ta + upper`, at or above the last settled watermark, in the
                    // least epoch among the records.
                    let cap = match kind {
                        JoinKind::Left => times
                            .iter()
                            .copied()
                            .reduce(|a, b| a.meet(&b))
                            .map(|t| debts.delayed(&t.with_event(ta.saturating_add(upper)))),
                        JoinKind::Inner => None,
                    };
                    times.iter().for_each(|t| debts.pay(t));
                    for k in keys {
                        let Some(kept) = kept_a.get_mut(&k) else {
                            continue;
                        };
                        let expired = kept.remove(&ta).unwrap_or_default();
                        if kept.is_empty() {
                            kept_a.remove(&k);
                        }
                        if let Some(cap) = cap.as_ref() {
                            let mut session = output.session(cap);
                            for (a, _) in expired.iter().filter(|(_, paired)| !paired) {
                                session.give(result(&k, a, None));
                            }
                        }
                    }
                }
                while let Some(entry) = expiry_b.first_entry() {
                    let tb = *entry.key();
                    if tb.saturating_add(lower) >= watermark && watermark < u64::MAX {
                        break;
                    }
                    let (times, keys) = entry.remove();
                    times.iter().for_each(|t| debts.pay(t));
                    for k in keys {
                        if let Some(times) = kept_b.get_mut(&k) {
                            times.remove(&tb);
                            if times.is_empty() {
                                kept_b.remove(&k);
                            }
                        }
                    }
                }
                debts.settle(watermark);
            }
        });
        stream
    }
}
