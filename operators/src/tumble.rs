//! Keyed tumbling (fixed, non-overlapping) event-time windows.
//!
//! A window `[start, start + size)` is emitted once the event-time frontier at the
//! operator reaches its end: from then on no record of it can still arrive. While a
//! window is open the operator holds a capability at `(end - 1, e_min)`, `e_min` the
//! earliest epoch among its records, so offsets are not committed past records whose
//! result is not yet written (see `docs/operators.md`, "Operators hold what they owe").
//! Lateness, early results and the too-late output are described in
//! [`crate::window`] and `docs/operators.md`.

use std::hash::Hash;

use timely::dataflow::StreamVec;
use timely::ExchangeData;

use crate::aggregate::{Aggregator, Count, Fold};
use crate::fixed::fixed_windows;
use crate::late::Late;
use crate::preagg::fixed_preaggregated;
use crate::time::EventTime;
use crate::window::{WindowPolicy, WindowStreams, Windowed};

/// Extension trait: keyed tumbling windows over a stream of records.
pub trait Tumble<'scope, T: EventTime, D> {
    /// Aggregates each key's records in each tumbling window of `size` ms with `agg`,
    /// emitting as `policy` says and taking late records from `late`.
    ///
    /// Records (and late records) are exchanged by the hash of `key`, so each key's
    /// windows live on one worker. Final results are emitted at `(end - 1, e_min)`;
    /// corrections at the time of the late records that caused them.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, Emit, Late, Tumble, WindowPolicy};
    /// use freshet_operators::aggregate::Sum;
    ///
    /// let (results, too_late) = timely::example(|scope| {
    ///     let main = vec![('a', 1u64), ('a', 12)].to_stream(scope)
    ///         .assign_event_time("at", |r: &(char, u64)| r.1);
    ///     // Two late records, arriving at event time 25: one for [10, 20), within
    ///     // 10 ms of lateness, one for [0, 10), beyond it.
    ///     let late = vec![
    ///         Late { event_time: 15, watermark: 25, record: ('a', 15) },
    ///         Late { event_time: 5, watermark: 25, record: ('a', 5) },
    ///     ].to_stream(scope).assign_event_time("late at", |_| 25);
    ///     let w = main.tumble("sum", 10, WindowPolicy::new().lateness(10), Some(late),
    ///         |r: &(char, u64)| r.0, Sum::new(|r: &(char, u64)| r.1));
    ///     (w.results.capture(), w.too_late.capture())
    /// });
    /// let mut got: Vec<_> = results.extract().into_iter().flat_map(|(_, v)| v)
    ///     .map(|w| (w.start, w.value, w.revision, w.kind)).collect();
    /// got.sort();
    /// assert_eq!(got, vec![
    ///     (0, 1, 0, Emit::Final),
    ///     (10, 12, 0, Emit::Final),
    ///     (10, 27, 1, Emit::Late),
    /// ]);
    /// assert_eq!(too_late.extract()[0].1[0].event_time, 5);
    /// ```
    fn tumble<K, G, KF>(
        self,
        name: &str,
        size: u64,
        policy: WindowPolicy,
        late: Option<StreamVec<'scope, T, Late<D>>>,
        key: KF,
        agg: G,
    ) -> WindowStreams<'scope, T, K, G::Out, D>
    where
        K: ExchangeData + Hash + Eq + Clone,
        G: Aggregator<D>,
        G::Out: Clone + 'static,
        KF: Fn(&D) -> K + 'static;

    /// Aggregates each key's records per tumbling window with `agg`: emit-final, no
    /// late input.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, Tumble};
    /// use freshet_operators::aggregate::Max;
    ///
    /// let out = timely::example(|scope| {
    ///     (0..10u64).to_stream(scope).assign_event_time("at", |r: &u64| *r)
    ///         .tumble_aggregate("max", 5, |_: &u64| (), Max::new(|r: &u64| *r))
    ///         .capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v)
    ///     .map(|w| (w.start, w.value)).collect();
    /// got.sort();
    /// assert_eq!(got, vec![(0, Some(4)), (5, Some(9))]);
    /// ```
    fn tumble_aggregate<K, G, KF>(
        self,
        name: &str,
        size: u64,
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
        self.tumble(name, size, WindowPolicy::new(), None, key, agg)
            .results
    }

    /// Like [`Tumble::tumble_aggregate`] (emit-final, no late input), with local
    /// pre-aggregation before the key exchange: each worker folds the records it reads
    /// into per-`(window, key)` accumulators, and only those partial accumulators are
    /// exchanged by key and merged with [`Aggregator::merge`] when the event-time
    /// frontier passes the window's end. Same results as `tumble_aggregate`; far fewer
    /// records cross workers. Results are emitted at `(end - 1, e)`, `e` the least
    /// epoch among the window's records (all keys) on the workers that sent a partial
    /// for the key: at or below the least epoch of the key's records, as owed, but
    /// possibly below `tumble_aggregate`'s epoch (the least on the worker that owns
    /// the key), so an epoch may complete slightly later, never earlier.
    ///
    /// Needs an aggregator with a real `merge` and an exchangeable accumulator: not
    /// [`Fold`] (use [`Tumble::tumble_aggregate`] or [`Tumble::tumble_fold`] for folds).
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, Tumble};
    /// use freshet_operators::aggregate::Sum;
    ///
    /// let out = timely::example(|scope| {
    ///     (0..10u64).map(|t| (t % 2, t)).to_stream(scope)
    ///         .assign_event_time("at", |r: &(u64, u64)| r.1)
    ///         .tumble_preaggregate("sum", 5, |r: &(u64, u64)| r.0, Sum::new(|r: &(u64, u64)| r.1))
    ///         .capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v)
    ///     .map(|w| (w.key, w.start, w.value)).collect();
    /// got.sort();
    /// assert_eq!(got, vec![(0, 0, 0 + 2 + 4), (0, 5, 6 + 8), (1, 0, 1 + 3), (1, 5, 5 + 7 + 9)]);
    /// ```
    fn tumble_preaggregate<K, G, KF>(
        self,
        name: &str,
        size: u64,
        key: KF,
        agg: G,
    ) -> StreamVec<'scope, T, Windowed<K, G::Out>>
    where
        K: ExchangeData + Hash + Eq + Clone,
        G: Aggregator<D>,
        G::Acc: ExchangeData,
        G::Out: Clone + 'static,
        KF: Fn(&D) -> K + 'static;

    /// Folds each key's records in each tumbling window of `size` ms into an `A`,
    /// starting from `A::default()`, and emits one [`Windowed`] per key and window.
    ///
    /// Records are exchanged by the hash of `key`, so each key's windows live on one
    /// worker. The result is emitted at `(end - 1, e_min)`.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, Tumble};
    ///
    /// let out = timely::example(|scope| {
    ///     // Records are (key, amount) at event times 0..10 (the timestamp is a bare u64).
    ///     (0..10u64)
    ///         .map(|t| (t % 2, t))
    ///         .to_stream(scope)
    ///         .assign_event_time("at", |r: &(u64, u64)| r.1)
    ///         .tumble_fold("sum", 5, |r: &(u64, u64)| r.0, |s: &mut u64, r| *s += r.1)
    ///         .capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v)
    ///     .map(|w| (w.key, w.start, w.value)).collect();
    /// got.sort();
    /// assert_eq!(got, vec![(0, 0, 0 + 2 + 4), (0, 5, 6 + 8), (1, 0, 1 + 3), (1, 5, 5 + 7 + 9)]);
    /// ```
    fn tumble_fold<K, A, KF, F>(
        self,
        name: &str,
        size: u64,
        key: KF,
        fold: F,
    ) -> StreamVec<'scope, T, Windowed<K, A>>
    where
        Self: Sized,
        K: ExchangeData + Hash + Eq + Clone,
        A: ExchangeData + Default + Clone,
        KF: Fn(&D) -> K + 'static,
        F: Fn(&mut A, &D) + 'static,
    {
        self.tumble_aggregate(name, size, key, Fold::new(fold))
    }

    /// Counts each key's records per tumbling window of `size` ms.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, Tumble};
    ///
    /// let out = timely::example(|scope| {
    ///     (0..10u64).map(|t| (t, t)).to_stream(scope).assign_event_time("at", |r: &(u64, u64)| r.1)
    ///         .tumble_count("count", 4, |_: &(u64, u64)| 0u8)
    ///         .capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v)
    ///     .map(|w| (w.start, w.value)).collect();
    /// got.sort();
    /// assert_eq!(got, vec![(0, 4), (4, 4), (8, 2)]);
    /// ```
    fn tumble_count<K, KF>(
        self,
        name: &str,
        size: u64,
        key: KF,
    ) -> StreamVec<'scope, T, Windowed<K, u64>>
    where
        Self: Sized,
        K: ExchangeData + Hash + Eq + Clone,
        KF: Fn(&D) -> K + 'static,
    {
        self.tumble_aggregate(name, size, key, Count)
    }
}

impl<'scope, T: EventTime, D: ExchangeData + Clone> Tumble<'scope, T, D>
    for StreamVec<'scope, T, D>
{
    fn tumble<K, G, KF>(
        self,
        name: &str,
        size: u64,
        policy: WindowPolicy,
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
        let name = format!("Tumble({name}, {size}ms)");
        fixed_windows(self, late, name, size, size, policy, key, agg, None)
    }

    fn tumble_preaggregate<K, G, KF>(
        self,
        name: &str,
        size: u64,
        key: KF,
        agg: G,
    ) -> StreamVec<'scope, T, Windowed<K, G::Out>>
    where
        K: ExchangeData + Hash + Eq + Clone,
        G: Aggregator<D>,
        G::Acc: ExchangeData,
        G::Out: Clone + 'static,
        KF: Fn(&D) -> K + 'static,
    {
        let name = format!("Tumble({name}, {size}ms, pre-aggregated)");
        fixed_preaggregated(self, name, size, size, key, agg)
    }
}
