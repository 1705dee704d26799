//! Keyed sliding (hopping) event-time windows: `size` ms long, one starting every
//! `slide` ms, so each record is in `size / slide` windows (rounded up or down).
//!
//! Same emission, capability and lateness rules as tumbling windows (a tumbling
//! window is a sliding one with `slide == size`): see [`crate::tumble`] and
//! `docs/operators.md`.

use std::hash::Hash;

use timely::dataflow::StreamVec;
use timely::ExchangeData;

use crate::aggregate::{Aggregator, Count};
use crate::fixed::fixed_windows;
use crate::late::Late;
use crate::preagg::fixed_preaggregated;
use crate::time::EventTime;
use crate::window::{WindowPolicy, WindowStreams, Windowed};

/// Extension trait: keyed sliding windows over a stream of records.
pub trait Slide<'scope, T: EventTime, D> {
    /// Aggregates each key's records in every window `[n * slide, n * slide + size)`
    /// with `agg`, emitting as `policy` says and taking late records from `late`.
    ///
    /// Requires `1 <= slide <= size`. A late record too late for one of its windows is
    /// emitted on the too-late output (once) even if it updated its other windows.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, Slide, WindowPolicy};
    /// use freshet_operators::aggregate::Count;
    ///
    /// let out = timely::example(|scope| {
    ///     vec![3u64, 7, 12].to_stream(scope).assign_event_time("at", |r: &u64| *r)
    ///         .slide("count", 10, 5, WindowPolicy::new(), None, |_: &u64| (), Count)
    ///         .results
    ///         .capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v)
    ///     .map(|w| (w.start, w.end, w.value)).collect();
    /// got.sort();
    /// assert_eq!(got, vec![(0, 10, 2), (5, 15, 2), (10, 20, 1)]);
    /// ```
    #[allow(clippy::too_many_arguments)]
    fn slide<K, G, KF>(
        self,
        name: &str,
        size: u64,
        slide: u64,
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

    /// Aggregates each key's records per sliding window with `agg`: emit-final, no
    /// late input.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, Slide};
    /// use freshet_operators::aggregate::Sum;
    ///
    /// let out = timely::example(|scope| {
    ///     vec![1u64, 2, 3].to_stream(scope).assign_event_time("at", |r: &u64| *r)
    ///         .slide_aggregate("sum", 2, 1, |_: &u64| (), Sum::new(|r: &u64| *r))
    ///         .capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v)
    ///     .map(|w| (w.start, w.value)).collect();
    /// got.sort();
    /// assert_eq!(got, vec![(0, 1), (1, 3), (2, 5), (3, 3)]);
    /// ```
    fn slide_aggregate<K, G, KF>(
        self,
        name: &str,
        size: u64,
        slide: u64,
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
        self.slide(name, size, slide, WindowPolicy::new(), None, key, agg)
            .results
    }

    /// Like [`Slide::slide_aggregate`] (emit-final, no late input), with local
    /// pre-aggregation before the key exchange: each worker folds the records it reads
    /// into per-`(window, key)` accumulators, and only those are exchanged by key and
    /// merged with [`Aggregator::merge`]. Same results as `slide_aggregate`, at
    /// `(end - 1, e)`, `e` at or below the least epoch of the key's records (see
    /// [`Tumble::tumble_preaggregate`](crate::Tumble::tumble_preaggregate)). Needs an aggregator with a real `merge` and an exchangeable
    /// accumulator (not [`crate::aggregate::Fold`]).
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, Slide};
    /// use freshet_operators::aggregate::Count;
    ///
    /// let out = timely::example(|scope| {
    ///     vec![0u64, 1, 2, 3].to_stream(scope).assign_event_time("at", |r: &u64| *r)
    ///         .slide_preaggregate("count", 4, 2, |r: &u64| r % 2, Count)
    ///         .capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v)
    ///     .map(|w| (w.key, w.start, w.value)).collect();
    /// got.sort();
    /// assert_eq!(got, vec![(0, 0, 2), (0, 2, 1), (1, 0, 2), (1, 2, 1)]);
    /// ```
    fn slide_preaggregate<K, G, KF>(
        self,
        name: &str,
        size: u64,
        slide: u64,
        key: KF,
        agg: G,
    ) -> StreamVec<'scope, T, Windowed<K, G::Out>>
    where
        K: ExchangeData + Hash + Eq + Clone,
        G: Aggregator<D>,
        G::Acc: ExchangeData,
        G::Out: Clone + 'static,
        KF: Fn(&D) -> K + 'static;

    /// Counts each key's records per sliding window.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, Slide};
    ///
    /// let out = timely::example(|scope| {
    ///     vec![0u64, 1, 2, 3].to_stream(scope).assign_event_time("at", |r: &u64| *r)
    ///         .slide_count("count", 4, 2, |r: &u64| r % 2)
    ///         .capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v)
    ///     .map(|w| (w.key, w.start, w.value)).collect();
    /// got.sort();
    /// assert_eq!(got, vec![(0, 0, 2), (0, 2, 1), (1, 0, 2), (1, 2, 1)]);
    /// ```
    fn slide_count<K, KF>(
        self,
        name: &str,
        size: u64,
        slide: u64,
        key: KF,
    ) -> StreamVec<'scope, T, Windowed<K, u64>>
    where
        Self: Sized,
        K: ExchangeData + Hash + Eq + Clone,
        KF: Fn(&D) -> K + 'static,
    {
        self.slide_aggregate(name, size, slide, key, Count)
    }
}

impl<'scope, T: EventTime, D: ExchangeData + Clone> Slide<'scope, T, D>
    for StreamVec<'scope, T, D>
{
    fn slide<K, G, KF>(
        self,
        name: &str,
        size: u64,
        slide: u64,
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
        let name = format!("Slide({name}, {size}ms every {slide}ms)");
        fixed_windows(self, late, name, size, slide, policy, key, agg, None)
    }

    fn slide_preaggregate<K, G, KF>(
        self,
        name: &str,
        size: u64,
        slide: u64,
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
        let name = format!("Slide({name}, {size}ms every {slide}ms, pre-aggregated)");
        fixed_preaggregated(self, name, size, slide, key, agg)
    }
}
