//! The engine behind tumbling and sliding windows: fixed-size windows, one every `slide`.
//!
//! Per batch (one time, so one event time) the operator computes the batch's windows
//! once, holds a capability for each at `(end - 1, e)` unless one at or below it is
//! held already, and folds each record into each window's per-key accumulator. When the
//! event-time watermark (over the main and the late input) reaches a window's end it
//! emits the window at its capability and releases it; the state alone is kept for
//! `lateness` more for late corrections.
//!
//! A late record (on the late input, at time `(t', e')`, carrying event time `et`) is,
//! for each window `[s, end)` holding `et`:
//! * `end > t'`: still open (the watermark is at most `t'`): folded in, a capability at
//!   `(end - 1, e')` held for it;
//! * `end <= t' < end + lateness`: a correction. It is kept, with a capability at
//!   `(t', e')`, until the watermark passes `t'` (so the window's final result is out
//!   and every late record at `t'` is in), then applied; each changed key's window is
//!   emitted at `(t', e')` with the next revision and the capability dropped;
//! * `t' >= end + lateness`: too late, emitted on the too-late output at `(t', e')`.
//!
//! Every decision depends on times only, never on scheduling, so results are the same
//! at any number of workers.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::hash::Hash;
use std::rc::Rc;

use rustc_hash::FxHashMap;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::operator::empty;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::CapabilitySet;
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use crate::aggregate::Aggregator;
use crate::capability::{emission_cap, hold, time_of, watermark, VecOutput, Waiting};
use crate::hash::by_key;
use crate::late::Late;
use crate::time::EventTime;
use crate::window::{fold_into, sliding_starts, Emit, WindowPolicy, WindowStreams, Windowed};

/// One key's accumulator in one window.
struct Slot<A> {
    acc: A,
    /// The revision the next emission gets.
    revision: u32,
    /// Changed since its last emission: in an open window, by any record (early
    /// results skip unchanged keys); in a closed one, by a late record (listed in
    /// `dirty`).
    dirty: bool,
}

impl<A> Slot<A> {
    fn new(acc: A) -> Self {
        Slot {
            acc,
            revision: 0,
            dirty: false,
        }
    }
}

/// A window whose final result is not out yet.
struct Open<T: EventTime, K, A> {
    caps: CapabilitySet<T>,
    keys: FxHashMap<K, Slot<A>>,
    /// The next early-firing boundary.
    next_early: u64,
}

impl<T: EventTime, K, A> Open<T, K, A> {
    /// A window expected to hold about `keys` keys (the last closed window's count:
    /// sized up front, its map is not rehashed while it fills).
    fn new(next_early: u64, keys: usize) -> Self {
        Open {
            caps: CapabilitySet::new(),
            keys: FxHashMap::with_capacity_and_hasher(keys, Default::default()),
            next_early,
        }
    }
}

/// Keyed fixed-size windows `[k * slide, k * slide + size)` aggregated by `agg`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fixed_windows<'scope, T, D, K, G, KF>(
    stream: StreamVec<'scope, T, D>,
    late: Option<StreamVec<'scope, T, Late<D>>>,
    name: String,
    size: u64,
    slide: u64,
    policy: WindowPolicy,
    key: KF,
    agg: G,
) -> WindowStreams<'scope, T, K, G::Out, D>
where
    T: EventTime,
    D: ExchangeData + Clone,
    K: ExchangeData + Hash + Eq + Clone,
    G: Aggregator<D>,
    G::Out: Clone + 'static,
    KF: Fn(&D) -> K + 'static,
{
    assert!(size > 0, "window size must be at least 1 ms");
    assert!(
        slide > 0 && slide <= size,
        "window slide must be in 1..=size ms"
    );
    let scope = stream.scope();
    // Without a late input no record can use kept state.
    let lateness = if late.is_some() { policy.lateness } else { 0 };
    let late = late.unwrap_or_else(|| empty(scope));
    let key = Rc::new(key);
    let (k1, k2) = (key.clone(), key.clone());
    let main_pact = by_key(move |d: &D| k1(d));
    let late_pact = by_key(move |d: &Late<D>| k2(&d.record));

    let mut builder = OperatorBuilder::new(name, scope);
    let mut main_in = builder.new_input(stream, main_pact);
    let mut late_in = builder.new_input(late, late_pact);
    let (results_out, results) = builder.new_output();
    let (too_late_out, too_late) = builder.new_output();
    let mut results_out: VecOutput<T, Windowed<K, G::Out>> = OutputBuilder::from(results_out);
    let mut too_late_out: VecOutput<T, Late<D>> = OutputBuilder::from(too_late_out);
    let too_late_count = Rc::new(Cell::new(0u64));
    let counter = too_late_count.clone();

    let first_early = move |start: u64| match policy.early {
        Some(period) => start.saturating_add(period),
        None => u64::MAX,
    };
    let mut open: BTreeMap<u64, Open<T, K, G::Acc>> = BTreeMap::new();
    let mut closed: BTreeMap<u64, FxHashMap<K, Slot<G::Acc>>> = BTreeMap::new();
    let mut pending: Waiting<T, Late<D>> = BTreeMap::new();
    let mut dirty: Vec<(u64, K)> = Vec::new();
    let mut key_hint = 0usize;

    builder.build(move |_initial| {
        move |frontiers| {
            let mut results_out = results_out.activate();
            let mut too_late_out = too_late_out.activate();

            // Message by message: grouping by stamp would sort every step's messages,
            // and the work per message (its windows, a capability check) is small.
            main_in.for_each(|cap, data| {
                let Some(time) = time_of(&cap) else {
                    return;
                };
                let (first, last) = sliding_starts(time.event(), size, slide);
                for start in (first..=last).step_by(slide as usize) {
                    let window = open
                        .entry(start)
                        .or_insert_with(|| Open::new(first_early(start), key_hint));
                    let end = start.saturating_add(size);
                    hold(&mut window.caps, &cap, time.with_event(end - 1), 0);
                }
                let create = || Slot::new(agg.create());
                let add = |slot: &mut Slot<G::Acc>, record: &D| {
                    agg.add(&mut slot.acc, record);
                    slot.dirty = true;
                };
                if first == last {
                    // One window (always, for tumbling windows): no list of windows.
                    let window = open.get_mut(&first).expect("entered above");
                    fold_into(&mut [&mut window.keys], data, &*key, create, add);
                } else {
                    let mut windows: Vec<_> = open
                        .range_mut(first..=last)
                        .map(|(_, w)| &mut w.keys)
                        .collect();
                    fold_into(&mut windows, data, &*key, create, add);
                }
            });

            late_in.for_each_stamp(|cap, batches| {
                let Some(time) = time_of(&cap) else {
                    return;
                };
                let now = time.event();
                let mut too_late = too_late_out.session(&cap);
                // Kept, at their time, until the watermark passes it.
                let mut defer = |record| {
                    let entry = pending.entry((now, time));
                    let (_, records) = entry.or_insert_with(|| (cap.delayed(&time, 0), Vec::new()));
                    records.push(record);
                };
                for batch in batches {
                    for record in batch.drain(..) {
                        let (first, last) = sliding_starts(record.event_time, size, slide);
                        let (mut correct, mut beyond) = (false, false);
                        for start in (first..=last).step_by(slide as usize) {
                            let end = start.saturating_add(size);
                            if end > now {
                                let window = open
                                    .entry(start)
                                    .or_insert_with(|| Open::new(first_early(start), key_hint));
                                hold(&mut window.caps, &cap, time.with_event(end - 1), 0);
                                let slot = window
                                    .keys
                                    .entry(key(&record.record))
                                    .or_insert_with(|| Slot::new(agg.create()));
                                agg.add(&mut slot.acc, &record.record);
                                slot.dirty = true;
                            } else if now < end.saturating_add(lateness) {
                                correct = true;
                            } else {
                                beyond = true;
                            }
                        }
                        if beyond {
                            counter.set(counter.get() + 1);
                        }
                        match (beyond, correct) {
                            (true, false) => too_late.give(record),
                            (false, true) => defer(record),
                            // Sliding windows only: too late for one window, not another.
                            (true, true) => {
                                too_late.give(record.clone());
                                defer(record);
                            }
                            (false, false) => {}
                        }
                    }
                }
            });

            let watermark = watermark(frontiers);

            // Final results of the windows the watermark has passed.
            while let Some(entry) = open.first_entry() {
                let start = *entry.key();
                let end = start.saturating_add(size);
                if end > watermark {
                    break;
                }
                let Open { caps, mut keys, .. } = entry.remove();
                key_hint = keys.len();
                if let Some(cap) = emission_cap(&caps, end - 1) {
                    let mut session = results_out.session(&cap);
                    let final_of = |key: K, slot: &Slot<G::Acc>| {
                        let value = agg.finish(&slot.acc);
                        Windowed::new(key, start, end, value, slot.revision, Emit::Final)
                    };
                    if lateness > 0 {
                        for (k, slot) in keys.iter_mut() {
                            session.give(final_of(k.clone(), slot));
                            slot.revision += 1;
                            slot.dirty = false;
                        }
                    } else {
                        for (k, slot) in keys.drain() {
                            session.give(final_of(k, &slot));
                        }
                    }
                }
                // Kept even if already past its lateness: late records pending below
                // `end + lateness` are applied first, then it is dropped below.
                if lateness > 0 {
                    closed.insert(start, keys);
                }
            }

            // Early results of open windows whose next boundary the watermark crossed.
            if let Some(period) = policy.early {
                for (&start, window) in open.iter_mut() {
                    let end = start.saturating_add(size);
                    if window.next_early > watermark || window.next_early >= end {
                        continue;
                    }
                    window.next_early = start + period * ((watermark - start) / period + 1);
                    let Some(cap) = emission_cap(&window.caps, end - 1) else {
                        continue;
                    };
                    let mut session = results_out.session(&cap);
                    for (k, slot) in window.keys.iter_mut().filter(|(_, slot)| slot.dirty) {
                        slot.dirty = false;
                        let value = agg.finish(&slot.acc);
                        session.give(Windowed::new(
                            k.clone(),
                            start,
                            end,
                            value,
                            slot.revision,
                            Emit::Early,
                        ));
                        slot.revision += 1;
                    }
                }
            }

            // Late corrections whose time the watermark has passed, in time order.
            while let Some(entry) = pending.first_entry() {
                let (now, _) = *entry.key();
                if now >= watermark {
                    break;
                }
                let (cap, records) = entry.remove();
                for record in records {
                    let (first, last) = sliding_starts(record.event_time, size, slide);
                    for start in (first..=last).step_by(slide as usize) {
                        let end = start.saturating_add(size);
                        if end > now || now >= end.saturating_add(lateness) {
                            continue;
                        }
                        let k = key(&record.record);
                        let keys = closed.entry(start).or_default();
                        let slot = match keys.get_mut(&k) {
                            Some(slot) => slot,
                            None => keys.entry(k.clone()).or_insert(Slot::new(agg.create())),
                        };
                        agg.add(&mut slot.acc, &record.record);
                        if !slot.dirty {
                            slot.dirty = true;
                            dirty.push((start, k));
                        }
                    }
                }
                let mut session = results_out.session(&cap);
                for (start, k) in dirty.drain(..) {
                    let slot = closed
                        .get_mut(&start)
                        .and_then(|keys| keys.get_mut(&k))
                        .expect("dirty slot is kept");
                    let (end, value) = (start.saturating_add(size), agg.finish(&slot.acc));
                    session.give(Windowed::new(
                        k,
                        start,
                        end,
                        value,
                        slot.revision,
                        Emit::Late,
                    ));
                    slot.revision += 1;
                    slot.dirty = false;
                }
            }

            // State of windows past their lateness.
            while let Some(entry) = closed.first_entry() {
                if entry.key().saturating_add(size).saturating_add(lateness) > watermark {
                    break;
                }
                entry.remove();
            }
        }
    });

    WindowStreams {
        results,
        too_late,
        too_late_count,
    }
}
