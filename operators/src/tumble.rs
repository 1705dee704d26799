//! Keyed tumbling (fixed, non-overlapping) event-time windows.
//!
//! A window `[start, start + size)` is emitted once the event-time frontier at the
//! operator reaches its end: from then on no record of it can still arrive. While a
//! window is open the operator holds a capability at `(end - 1, e_min)`, `e_min` the
//! earliest epoch among its records, so offsets are not committed past records whose
//! result is not yet written (see `docs/architecture.md`, "Operators hold what they owe").

use std::collections::BTreeMap;
use std::hash::Hash;

use rustc_hash::FxHashMap;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::CapabilitySet;
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use crate::time::{event_frontier, EventTime};
use crate::window::{tumbling_start, Windowed};

/// Open windows: per window start, the capability for its result and the per-key state.
type OpenWindows<T, K, A> = BTreeMap<u64, (CapabilitySet<T>, FxHashMap<K, A>)>;

/// Extension trait: keyed tumbling windows over a stream of records.
pub trait Tumble<'scope, T: EventTime, D> {
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
        K: ExchangeData + Hash + Eq + Clone,
        A: ExchangeData + Default,
        KF: Fn(&D) -> K + 'static,
        F: Fn(&mut A, &D) + 'static;

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
        self.tumble_fold(name, size, key, |count: &mut u64, _| *count += 1)
    }
}

impl<'scope, T: EventTime, D: ExchangeData> Tumble<'scope, T, D> for StreamVec<'scope, T, D> {
    fn tumble_fold<K, A, KF, F>(
        self,
        name: &str,
        size: u64,
        key: KF,
        fold: F,
    ) -> StreamVec<'scope, T, Windowed<K, A>>
    where
        K: ExchangeData + Hash + Eq + Clone,
        A: ExchangeData + Default,
        KF: Fn(&D) -> K + 'static,
        F: Fn(&mut A, &D) + 'static,
    {
        assert!(size > 0, "tumbling window size must be at least 1 ms");
        let key = std::rc::Rc::new(key);
        let route_key = key.clone();
        let pact = Exchange::new(move |d: &D| crate::hash::hash(&route_key(d)));
        let mut open: OpenWindows<T, K, A> = BTreeMap::new();
        self.unary_frontier(
            pact,
            &format!("Tumble({name}, {size}ms)"),
            move |_cap, _info| {
                move |(input, frontier), output| {
                    input.for_each_stamp(|cap, batches| {
                        // Sources and Freshet operators send each message under one time.
                        let Some(time) = cap.stamp().iter().next().copied() else {
                            return;
                        };
                        let start = tumbling_start(time.event(), size);
                        let result_time = time.with_event(start.saturating_add(size) - 1);
                        let (caps, state) = open.entry(start).or_default();
                        caps.insert(cap.delayed(&result_time, 0));
                        for batch in batches {
                            for record in batch.drain(..) {
                                fold(state.entry(key(&record)).or_default(), &record);
                            }
                        }
                    });
                    let watermark = event_frontier(frontier.frontier().as_ref());
                    while let Some(entry) = open.first_entry() {
                        let end = entry.key().saturating_add(size);
                        if end > watermark {
                            break;
                        }
                        let start = *entry.key();
                        let (caps, state) = entry.remove();
                        if let Some(first) = caps.first() {
                            let mut session = output.session(&first);
                            for (k, value) in state {
                                session.give(Windowed {
                                    key: k,
                                    start,
                                    end,
                                    value,
                                });
                            }
                        }
                    }
                }
            },
        )
    }
}
