//! Fixed-size windows (tumbling and sliding) aggregated in two stages: local
//! pre-aggregation on the worker that read the records, then an exchange of the
//! partial accumulators by key and a merge.
//!
//! Emit-final only, no late input (see `docs/operators.md`, "Pre-aggregated windows").
//! With one worker there is no exchange to save: the one-stage operator of
//! [`crate::fixed`] runs instead.
//!
//! * Stage 1 (`Pipeline`, no exchange) folds each record into its worker's
//!   `(window, key)` accumulator with [`Aggregator::add`]. Per batch (one time, so one
//!   event time) it looks its windows up once and holds a capability for each at
//!   `(end - 1, e)` unless one at or below it is held already. When its event-time
//!   frontier reaches a window's end it emits `(start, key, acc)` for each key at
//!   `(end - 1, e_min)` and releases the window.
//! * Stage 2 (exchanged by [`crate::hash::hash`] of the key) merges the partials of a
//!   key's window with [`Aggregator::merge`], holding a capability at each partial's
//!   time; when its frontier reaches the window's end every worker's partial is in,
//!   and it emits one [`Windowed`] (revision 0, [`Emit::Final`]) per key at the least
//!   of those times, `(end - 1, e)`: the same results as
//!   [`crate::Tumble::tumble_aggregate`]. `e` is the least epoch of the window's records
//!   on the workers that sent a partial to this one: at or below the least epoch of
//!   the key's records (hold what you owe), but possibly below the one-stage
//!   operator's (the least epoch on the worker owning the key), so an epoch can
//!   complete a little later than with the one-stage operator, never earlier.

use std::collections::hash_map::Entry;
use std::collections::BTreeMap;
use std::hash::Hash;
use std::rc::Rc;

use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::{Capability, CapabilitySet};
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use crate::aggregate::Aggregator;
use crate::capability::{emission_cap, hold, time_of, watermark, VecOutput};
use crate::time::EventTime;
use crate::window::{fold_into, sliding_starts, Emit, Windowed};

/// One window's accumulators on one worker, and the capabilities its output is owed at.
struct Partial<T: EventTime, K, A> {
    caps: CapabilitySet<T>,
    keys: FxHashMap<K, A>,
}

impl<T: EventTime, K, A> Partial<T, K, A> {
    /// A window expected to hold about `keys` keys (the last closed window's count).
    fn new(keys: usize) -> Self {
        Partial {
            caps: CapabilitySet::new(),
            keys: FxHashMap::with_capacity_and_hasher(keys, Default::default()),
        }
    }
}

/// The open windows of one stage, by start.
struct Partials<T: EventTime, K, A> {
    open: BTreeMap<u64, Partial<T, K, A>>,
    size: u64,
    /// Keys in the last closed window: new windows' maps are sized for as many.
    key_hint: usize,
}

impl<T: EventTime, K, A> Partials<T, K, A> {
    fn new(size: u64) -> Self {
        Partials {
            open: BTreeMap::new(),
            size,
            key_hint: 0,
        }
    }

    /// The window starting at `start`, opened if needed.
    fn window(&mut self, start: u64) -> &mut Partial<T, K, A> {
        let hint = self.key_hint;
        self.open.entry(start).or_insert_with(|| Partial::new(hint))
    }

    /// Removes every window whose end the event-time `watermark` has reached and hands
    /// `emit(start, end, capability, keys)` its keys at its emission capability.
    fn close(
        &mut self,
        watermark: u64,
        mut emit: impl FnMut(u64, u64, &Capability<T>, FxHashMap<K, A>),
    ) {
        while let Some(entry) = self.open.first_entry() {
            let start = *entry.key();
            let end = start.saturating_add(self.size);
            if end > watermark {
                break;
            }
            let Partial { caps, keys } = entry.remove();
            self.key_hint = keys.len();
            if let Some(cap) = emission_cap(&caps, end - 1) {
                emit(start, end, &cap, keys);
            }
        }
    }
}

/// Keyed fixed-size windows `[k * slide, k * slide + size)` aggregated by `agg`,
/// pre-aggregated per worker before the key exchange. Emit-final, no lateness.
pub(crate) fn fixed_preaggregated<'scope, T, D, K, G, KF>(
    stream: StreamVec<'scope, T, D>,
    name: String,
    size: u64,
    slide: u64,
    key: KF,
    agg: G,
) -> StreamVec<'scope, T, Windowed<K, G::Out>>
where
    T: EventTime,
    D: ExchangeData + Clone,
    K: ExchangeData + Hash + Eq + Clone,
    G: Aggregator<D>,
    G::Acc: ExchangeData,
    G::Out: Clone + 'static,
    KF: Fn(&D) -> K + 'static,
{
    assert!(size > 0, "window size must be at least 1 ms");
    assert!(
        slide > 0 && slide <= size,
        "window slide must be in 1..=size ms"
    );
    let scope = stream.scope();
    if scope.peers() == 1 {
        // One worker: no exchange to save, and the second stage would cost a pass over
        // the partials. The one-stage operator gives the same results at the same times.
        let policy = crate::window::WindowPolicy::new();
        return crate::fixed::fixed_windows(stream, None, name, size, slide, policy, key, agg)
            .results;
    }
    let agg = Rc::new(agg);

    // Stage 1: per-worker partial accumulators, no exchange.
    let partials = {
        let agg = agg.clone();
        let mut builder = OperatorBuilder::new(format!("{name} (pre-aggregate)"), scope);
        let mut input = builder.new_input(stream, Pipeline);
        let (out, partials) = builder.new_output();
        let mut out: VecOutput<T, (u64, K, G::Acc)> = OutputBuilder::from(out);
        let mut open: Partials<T, K, G::Acc> = Partials::new(size);
        builder.build(move |_initial| {
            move |frontiers| {
                let mut out = out.activate();
                // Message by message, as in `crate::fixed` (no sort by stamp).
                input.for_each(|cap, data| {
                    let Some(time) = time_of(&cap) else {
                        return;
                    };
                    let (first, last) = sliding_starts(time.event(), size, slide);
                    for start in (first..=last).step_by(slide as usize) {
                        let window = open.window(start);
                        let end = start.saturating_add(size);
                        hold(&mut window.caps, &cap, time.with_event(end - 1), 0);
                    }
                    let create = || agg.create();
                    let add = |acc: &mut G::Acc, record: &D| agg.add(acc, record);
                    if first == last {
                        // One window (always, for tumbling windows).
                        let keys = &mut open.window(first).keys;
                        fold_into(&mut [keys], data, &key, create, add);
                    } else {
                        let mut windows: Vec<_> = open
                            .open
                            .range_mut(first..=last)
                            .map(|(_, w)| &mut w.keys)
                            .collect();
                        fold_into(&mut windows, data, &key, create, add);
                    }
                });

                let watermark = watermark(frontiers);
                open.close(watermark, |start, _, cap, keys| {
                    let mut session = out.session(cap);
                    for (k, acc) in keys {
                        session.give((start, k, acc));
                    }
                });
            }
        });
        partials
    };

    // Stage 2: merge each key's partials on the worker that owns the key.
    let mut builder = OperatorBuilder::new(name, scope);
    // Partials carry their key: hashed by reference, not cloned as `by_key` would.
    let pact = Exchange::new(|p: &(u64, K, G::Acc)| crate::hash::hash(&p.1));
    let mut input = builder.new_input(partials, pact);
    let (out, results) = builder.new_output();
    let mut out: VecOutput<T, Windowed<K, G::Out>> = OutputBuilder::from(out);
    let mut open: Partials<T, K, G::Acc> = Partials::new(size);
    builder.build(move |_initial| {
        move |frontiers| {
            let mut out = out.activate();
            input.for_each(|cap, data| {
                let Some(time) = time_of(&cap) else {
                    return;
                };
                // All partials under one time are of one window (its end is the time's
                // event time + 1): the window is looked up, and the capability held,
                // once per run of partials of one window, not per partial.
                let mut partials = data.drain(..).peekable();
                while let Some((start, k, acc)) = partials.next() {
                    let window = open.window(start);
                    hold(&mut window.caps, &cap, time, 0);
                    let mut merge = |k, acc| match window.keys.entry(k) {
                        Entry::Occupied(mut o) => agg.merge(o.get_mut(), acc),
                        Entry::Vacant(v) => {
                            v.insert(acc);
                        }
                    };
                    merge(k, acc);
                    while let Some((_, k, acc)) = partials.next_if(|p| p.0 == start) {
                        merge(k, acc);
                    }
                }
            });

            let watermark = watermark(frontiers);
            open.close(watermark, |start, end, cap, keys| {
                let mut session = out.session(cap);
                for (k, acc) in keys {
                    let value = agg.finish(&acc);
                    session.give(Windowed::new(k, start, end, value, 0, Emit::Final));
                }
            });
        }
    });
    results
}
