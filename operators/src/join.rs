//! Keyed window joins: records of two streams with the same key in the same tumbling
//! event-time window are paired.
//!
//! Both inputs are exchanged by key. Per window the operator keeps each key's records
//! of both sides and holds a capability at `(end - 1, e_min)` over both inputs' records
//! (like [`crate::tumble`]); when the event-time watermark over both inputs reaches the
//! window's end it emits every pair there (and, for a left join, each left record
//! without a partner once, with `None`), then drops the window.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::rc::Rc;

use rustc_hash::FxHashMap;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::{CapabilitySet, InputCapability};
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use crate::capability::{emission_cap, hold, time_of, watermark, VecOutput};
use crate::hash::by_key;
use crate::time::EventTime;
use crate::window::{tumbling_start, Emit, Windowed};

/// Which records of the left input a join emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinKind {
    /// Only left records with a partner, once per partner.
    Inner,
    /// Also each left record without any partner, once, with `None`.
    Left,
}

/// One key's records of one window: left and right.
type Sides<A, B> = (Vec<A>, Vec<B>);

/// Open windows by start: the capability for the result, and per key the records of
/// the left and the right side.
type Open<T, K, A, B> = BTreeMap<u64, (CapabilitySet<T>, FxHashMap<K, Sides<A, B>>)>;

/// Files one side's records of a message (`side` picks the side) under their key in
/// the message's tumbling window, holding the window's capability at `(end - 1, e)`.
fn file<'a, T: EventTime, K: Hash + Eq, A, B, X: 'a>(
    open: &mut Open<T, K, A, B>,
    cap: &InputCapability<T>,
    batches: impl Iterator<Item = &'a mut Vec<X>>,
    size: u64,
    key: impl Fn(&X) -> K,
    side: fn(&mut Sides<A, B>) -> &mut Vec<X>,
) {
    let Some(time) = time_of(cap) else {
        return;
    };
    let start = tumbling_start(time.event(), size);
    let (caps, sides) = open.entry(start).or_default();
    hold(
        caps,
        cap,
        time.with_event(start.saturating_add(size) - 1),
        0,
    );
    for batch in batches {
        for record in batch.drain(..) {
            side(sides.entry(key(&record)).or_default()).push(record);
        }
    }
}

/// Extension trait: keyed tumbling-window joins.
pub trait WindowJoin<'scope, T: EventTime, A> {
    /// Pairs records of `self` and `other` with the same key in the same tumbling
    /// window of `size` ms, emitting `result(key, a, Some(b))` for each pair (and
    /// `result(key, a, None)` for an unpaired `a` if `kind` is [`JoinKind::Left`]) as a
    /// [`Windowed`] final result, at `(end - 1, e_min)`.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, WindowJoin};
    /// use freshet_operators::join::JoinKind;
    ///
    /// let out = timely::example(|scope| {
    ///     let clicks = vec![(1u8, 3u64), (2, 4)].to_stream(scope)
    ///         .assign_event_time("at", |r: &(u8, u64)| r.1);
    ///     let views = vec![(1u8, 8u64), (1, 12)].to_stream(scope)
    ///         .assign_event_time("at", |r: &(u8, u64)| r.1);
    ///     clicks.window_join_with(views, "clicks-views", 10, JoinKind::Left,
    ///         |a: &(u8, u64)| a.0, |b: &(u8, u64)| b.0,
    ///         |_k, a, b| (a.1, b.map(|b| b.1)))
    ///         .capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v)
    ///     .map(|w| (w.key, w.start, w.value)).collect();
    /// got.sort();
    /// assert_eq!(got, vec![(1, 0, (3, Some(8))), (2, 0, (4, None))]);
    /// ```
    #[allow(clippy::too_many_arguments)]
    fn window_join_with<B, K, R, KA, KB, F>(
        self,
        other: StreamVec<'scope, T, B>,
        name: &str,
        size: u64,
        kind: JoinKind,
        key_a: KA,
        key_b: KB,
        result: F,
    ) -> StreamVec<'scope, T, Windowed<K, R>>
    where
        B: ExchangeData,
        K: ExchangeData + Hash + Eq + Clone,
        R: 'static,
        KA: Fn(&A) -> K + 'static,
        KB: Fn(&B) -> K + 'static,
        F: Fn(&K, &A, Option<&B>) -> R + 'static;

    /// Inner window join: every pair `(a, b)` with the same key in the same window.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, WindowJoin};
    ///
    /// let out = timely::example(|scope| {
    ///     let a = vec![(1u8, 'x', 3u64), (2, 'y', 4)].to_stream(scope)
    ///         .assign_event_time("at", |r: &(u8, char, u64)| r.2);
    ///     let b = vec![(1u8, 'p', 5u64), (1, 'q', 15)].to_stream(scope)
    ///         .assign_event_time("at", |r: &(u8, char, u64)| r.2);
    ///     a.window_join(b, "ab", 10, |a: &(u8, char, u64)| a.0, |b: &(u8, char, u64)| b.0)
    ///         .capture()
    /// });
    /// let got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v)
    ///     .map(|w| (w.key, (w.value.0).1, (w.value.1).1)).collect();
    /// assert_eq!(got, vec![(1, 'x', 'p')]);
    /// ```
    fn window_join<B, K, KA, KB>(
        self,
        other: StreamVec<'scope, T, B>,
        name: &str,
        size: u64,
        key_a: KA,
        key_b: KB,
    ) -> StreamVec<'scope, T, Windowed<K, (A, B)>>
    where
        Self: Sized,
        A: Clone + 'static,
        B: ExchangeData + Clone,
        K: ExchangeData + Hash + Eq + Clone,
        KA: Fn(&A) -> K + 'static,
        KB: Fn(&B) -> K + 'static,
    {
        self.window_join_with(
            other,
            name,
            size,
            JoinKind::Inner,
            key_a,
            key_b,
            |_, a, b| (a.clone(), b.expect("inner join pairs").clone()),
        )
    }

    /// Left window join: every pair, and each unpaired left record with `None`.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, WindowJoin};
    ///
    /// let out = timely::example(|scope| {
    ///     let a = vec![(1u8, 3u64)].to_stream(scope).assign_event_time("at", |r: &(u8, u64)| r.1);
    ///     let b = vec![(2u8, 4u64)].to_stream(scope).assign_event_time("at", |r: &(u8, u64)| r.1);
    ///     a.window_left_join(b, "ab", 10, |a: &(u8, u64)| a.0, |b: &(u8, u64)| b.0).capture()
    /// });
    /// let got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v).map(|w| w.value).collect();
    /// assert_eq!(got, vec![((1, 3), None)]);
    /// ```
    fn window_left_join<B, K, KA, KB>(
        self,
        other: StreamVec<'scope, T, B>,
        name: &str,
        size: u64,
        key_a: KA,
        key_b: KB,
    ) -> StreamVec<'scope, T, Windowed<K, (A, Option<B>)>>
    where
        Self: Sized,
        A: Clone + 'static,
        B: ExchangeData + Clone,
        K: ExchangeData + Hash + Eq + Clone,
        KA: Fn(&A) -> K + 'static,
        KB: Fn(&B) -> K + 'static,
    {
        self.window_join_with(
            other,
            name,
            size,
            JoinKind::Left,
            key_a,
            key_b,
            |_, a, b| (a.clone(), b.cloned()),
        )
    }
}

impl<'scope, T: EventTime, A: ExchangeData> WindowJoin<'scope, T, A> for StreamVec<'scope, T, A> {
    fn window_join_with<B, K, R, KA, KB, F>(
        self,
        other: StreamVec<'scope, T, B>,
        name: &str,
        size: u64,
        kind: JoinKind,
        key_a: KA,
        key_b: KB,
        result: F,
    ) -> StreamVec<'scope, T, Windowed<K, R>>
    where
        B: ExchangeData,
        K: ExchangeData + Hash + Eq + Clone,
        R: 'static,
        KA: Fn(&A) -> K + 'static,
        KB: Fn(&B) -> K + 'static,
        F: Fn(&K, &A, Option<&B>) -> R + 'static,
    {
        assert!(size > 0, "window size must be at least 1 ms");
        let (key_a, key_b) = (Rc::new(key_a), Rc::new(key_b));
        let (route_a, route_b) = (key_a.clone(), key_b.clone());
        let pact_a = by_key(move |d: &A| route_a(d));
        let pact_b = by_key(move |d: &B| route_b(d));

        let mut builder =
            OperatorBuilder::new(format!("WindowJoin({name}, {size}ms)"), self.scope());
        let mut input_a = builder.new_input(self, pact_a);
        let mut input_b = builder.new_input(other, pact_b);
        let (output, stream) = builder.new_output();
        let mut output: VecOutput<T, Windowed<K, R>> = OutputBuilder::from(output);

        let mut open: Open<T, K, A, B> = BTreeMap::new();

        builder.build(move |_initial| {
            move |frontiers| {
                let mut output = output.activate();
                input_a.for_each_stamp(|cap, batches| {
                    file(&mut open, &cap, batches, size, &*key_a, |sides| {
                        &mut sides.0
                    });
                });
                input_b.for_each_stamp(|cap, batches| {
                    file(&mut open, &cap, batches, size, &*key_b, |sides| {
                        &mut sides.1
                    });
                });

                let watermark = watermark(frontiers);
                while let Some(entry) = open.first_entry() {
                    let start = *entry.key();
                    let end = start.saturating_add(size);
                    if end > watermark {
                        break;
                    }
                    let (caps, sides) = entry.remove();
                    let Some(cap) = emission_cap(&caps, end - 1) else {
                        continue;
                    };
                    let mut session = output.session(&cap);
                    for (k, (left, right)) in sides {
                        for a in &left {
                            if right.is_empty() && kind == JoinKind::Left {
                                let value = result(&k, a, None);
                                session.give(Windowed::new(
                                    k.clone(),
                                    start,
                                    end,
                                    value,
                                    0,
                                    Emit::Final,
                                ));
                            }
                            for b in &right {
                                let value = result(&k, a, Some(b));
                                session.give(Windowed::new(
                                    k.clone(),
                                    start,
                                    end,
                                    value,
                                    0,
                                    Emit::Final,
                                ));
                            }
                        }
                    }
                }
            }
        });
        stream
    }
}
