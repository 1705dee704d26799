//! Fixed-size windows (tumbling and sliding) aggregated in two stages: local
//! pre-aggregation on the worker that read the records, then an exchange of the
//! partial accumulators by key and a merge.
//!
//! Emit-final only, no late input (see `docs/operators.md`, "Pre-aggregated windows").
//! With one worker there is no exchange to save: the one-stage operator of
//! [`crate::fixed`] runs instead. Under checkpoints its part has the second stage's
//! name and layout, and it merges in the first stage's parts of a checkpoint taken at
//! more workers, so checkpoints restore across worker counts either way.
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
//!
//! Under checkpoints (see [`crate::checkpoint`]) both stages take part at more than one
//! worker: each stage's records or
//! partials of epochs after the next checkpoint epoch wait in its [`Aligner`] until
//! that epoch is sealed; then each writes its part (stage 1 as `{name}
//! (pre-aggregate)`, its partials; stage 2 as `name`, in the layout of the one-stage
//! operator's part, so a one-stage checkpoint restores into it) — the open windows'
//! starts, whole, and each `(window, key)` accumulator changed since the stage's
//! previous part (every one in a full part) — and, once durable, moves their
//! capabilities to the epoch after the checkpoint. A closed window's entries are not
//! removed one by one: an entry of a window not listed as open belongs to a window
//! closed since, and no record or partial can fall in a closed window again (its end
//! is at or below the watermark). On restore each keeps the keys it owns by
//! [`crate::hash::hash`]: stage 1 merges the partials several workers wrote for one
//! key, which stage 2 merges anyway.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hash;
use std::rc::Rc;

use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::Serialize;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::{Capability, CapabilitySet};
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use crate::aggregate::Aggregator;
use crate::capability::{emission_cap, hold, time_of, watermark, Mint, VecOutput};
use crate::checkpoint::{lift_epochs, restored_through, Aligner, Checkpoints};
use crate::hash::hash;
use crate::time::EventTime;
use crate::window::{fold_into, sliding_starts, Emit, Windowed};

/// One key's accumulator in one window.
struct Slot<A> {
    acc: A,
    /// Listed in [`Partials::changed`] since the last checkpoint.
    logged: bool,
}

/// One window's accumulators on one worker, and the capabilities its output is owed at.
struct Partial<T: EventTime, K, A> {
    caps: CapabilitySet<T>,
    keys: FxHashMap<K, Slot<A>>,
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
    /// Whether changes are tracked for incremental checkpoints.
    logging: bool,
    /// `(start, key)` of the accumulators changed since the last checkpoint.
    changed: Vec<(u64, K)>,
    /// The watermark every window ending at or before it was closed at.
    closed_through: u64,
    /// After a restore, stage 2's restored `closed_through` (see
    /// [`crate::checkpoint::restored_through`]); 0 otherwise.
    restored_through: u64,
}

impl<T: EventTime, K, A> Partials<T, K, A> {
    fn new(size: u64) -> Self {
        Partials {
            open: BTreeMap::new(),
            size,
            key_hint: 0,
            logging: false,
            changed: Vec::new(),
            closed_through: 0,
            restored_through: 0,
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
        mut emit: impl FnMut(u64, u64, &Capability<T>, FxHashMap<K, Slot<A>>),
    ) {
        self.closed_through = self.closed_through.max(watermark);
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

impl<T: EventTime, K: Hash + Eq, A> Partials<T, K, A> {
    /// Every capability held, at epochs `<= epoch`, moved to `epoch + 1`: the windows
    /// are in the checkpoint of `epoch`.
    fn lift(&mut self, epoch: u64) {
        for window in self.open.values_mut() {
            lift_epochs(&mut window.caps, epoch);
        }
    }

    /// Loads restored parts `(open windows' starts, entries)`, keeping the entries of
    /// open windows whose keys this worker owns (several parts' accumulators of one key
    /// merged with `merge`), each window holding `(end - 1, C + 1)` (minted from
    /// `initial`).
    fn restore(
        &mut self,
        parts: impl IntoIterator<Item = RestoredPart<K, A>>,
        ctx: &Checkpoints,
        initial: &Capability<T>,
        merge: impl Fn(&mut A, A),
    ) {
        let Some(restore) = ctx.restore() else {
            return;
        };
        for ((start, k), acc) in open_and_owned(parts, ctx) {
            let end = start.saturating_add(self.size);
            let window = self.window(start);
            match window.keys.entry(k) {
                Entry::Occupied(mut o) => merge(&mut o.get_mut().acc, acc),
                Entry::Vacant(v) => {
                    v.insert(Slot { acc, logged: false });
                }
            }
            if window.caps.is_empty() {
                let at = initial.time().with_event(end - 1);
                window
                    .caps
                    .insert(initial.delayed(&at.with_epoch(restore.epoch + 1)));
            }
        }
    }
}

impl<T: EventTime, K: Hash + Eq, A> Partials<T, K, A> {
    /// Writes this stage's part of checkpoint `epoch` as a [`LogPart`] with `extra`,
    /// each entry valued by `(head, accumulator, tail)`: the accumulators changed since
    /// the last part (or every one).
    ///
    /// [`LogPart`]: crate::checkpoint::LogPart
    fn write<X, E: Serialize, H: Serialize + Copy, V: Serialize + Copy>(
        &mut self,
        aligner: &mut Aligner<T, X>,
        epoch: u64,
        extra: E,
        (head, tail): (H, V),
    ) where
        K: Serialize,
        A: Serialize,
    {
        let changed = std::mem::take(&mut self.changed);
        let open = &self.open;
        aligner.write_log(epoch, extra, |want| {
            let all = open.iter().flat_map(|(start, w)| {
                w.keys
                    .iter()
                    .map(move |(k, slot)| ((*start, k), Some((head, &slot.acc, tail))))
            });
            let changed = changed.iter().map(|(start, k)| {
                let slot = open.get(start).and_then(|w| w.keys.get(k));
                ((*start, k), slot.map(|slot| (head, &slot.acc, tail)))
            });
            want.pick(all, changed)
        });
        for (start, k) in &changed {
            if let Some(slot) = self.open.get_mut(start).and_then(|w| w.keys.get_mut(k)) {
                slot.logged = false;
            }
        }
        self.changed = changed;
        self.changed.clear();
    }
}

/// Records (or partials) that waited for a checkpoint, with their capabilities.
type Released<T, X> = Vec<(Capability<T>, Vec<X>)>;

/// Stage 1's state that is not keyed, written whole in every part: the open windows'
/// starts. Entries are keyed by `(start, key)`, valued by `((), partial accumulator, ())`.
type PartialsExtra = Vec<u64>;

/// Stage 2's state that is not keyed, in the layout of the one-stage operator's
/// (`crate::fixed`): the open windows `(start, next early boundary)`, the windows kept
/// for lateness (none here), the late batches waiting (none here) and the watermark
/// windows were closed through. Entries are
/// keyed by `(start, key)`, valued by `(closed, accumulator, (revision, dirty))`
/// (encoded as the one-stage operator's `(closed, (accumulator, revision, dirty))`).
type MergedExtra<T> = (Vec<(u64, u64)>, Vec<u64>, Vec<(T, Vec<()>)>, u64);

impl<T: EventTime, K: Hash + Eq + Serialize, A: Serialize> Partials<T, K, A> {
    /// Writes stage 1's part of checkpoint `epoch` (extra: [`PartialsExtra`]).
    fn write_partials<X>(&mut self, aligner: &mut Aligner<T, X>, epoch: u64) {
        let extra: PartialsExtra = self.open.keys().copied().collect();
        self.write(aligner, epoch, extra, ((), ()))
    }

    /// Writes stage 2's part of checkpoint `epoch` (extra: [`MergedExtra`]).
    fn write_merged<X>(&mut self, aligner: &mut Aligner<T, X>, epoch: u64) {
        let open = self.open.keys().map(|start| (*start, u64::MAX)).collect();
        let extra: MergedExtra<T> = (open, Vec::new(), Vec::new(), self.closed_through);
        // Open for every key (`false`: not closed), revision 0, not dirty.
        self.write(aligner, epoch, extra, (false, (0u32, false)))
    }
}

/// One accumulator of stage 2 as a checkpoint entry: keyed by `(start, key)`, valued
/// by `(closed, accumulator, (revision, dirty))` as in the one-stage operator's part.
type MergedEntry<K, A> = ((u64, K), (bool, A, (u32, bool)));

/// Folds a message of records at `time` into stage 1's windows.
#[allow(clippy::too_many_arguments)]
fn pre_aggregate<T: EventTime, D, K: Hash + Eq + Clone, G: Aggregator<D>>(
    open: &mut Partials<T, K, G::Acc>,
    time: T,
    cap: &impl Mint<T>,
    data: &mut Vec<D>,
    size: u64,
    slide: u64,
    key: &impl Fn(&D) -> K,
    agg: &G,
) {
    let (first, last) = sliding_starts(time.event(), size, slide);
    for start in (first..=last).step_by(slide as usize) {
        let window = open.window(start);
        let end = start.saturating_add(size);
        hold(&mut window.caps, cap, time.with_event(end - 1), 0);
    }
    let Partials {
        open,
        logging,
        changed,
        ..
    } = open;
    let logging = *logging;
    let create = || Slot {
        acc: agg.create(),
        logged: false,
    };
    // Every window from `first` to `last` exists (entered above): the `i`-th starts at
    // `first + i * slide`.
    let add = |i: usize, k: &K, slot: &mut Slot<G::Acc>, record: &D| {
        if logging && !slot.logged {
            slot.logged = true;
            changed.push((first + i as u64 * slide, k.clone()));
        }
        agg.add(&mut slot.acc, record);
    };
    let mut windows: Vec<_> = open
        .range_mut(first..=last)
        .map(|(_, w)| &mut w.keys)
        .collect();
    fold_into(&mut windows, data, key, create, add);
}

/// Merges a message of partials at `time` into stage 2's windows.
fn merge_partials<T: EventTime, K: Hash + Eq + Clone, A>(
    open: &mut Partials<T, K, A>,
    time: T,
    cap: &impl Mint<T>,
    data: &mut Vec<(u64, K, A)>,
    merge_acc: &impl Fn(&mut A, A),
) {
    // All partials under one time are of one window (its end is the time's event time
    // + 1): the window is looked up, and the capability held, once per run of partials
    // of one window, not per partial.
    let mut partials = data.drain(..).peekable();
    while let Some((start, k, acc)) = partials.next() {
        let logging = open.logging;
        let window = open
            .open
            .entry(start)
            .or_insert_with(|| Partial::new(open.key_hint));
        hold(&mut window.caps, cap, time, 0);
        let changed = &mut open.changed;
        let mut merge = |k, acc| match window.keys.entry(k) {
            Entry::Occupied(mut o) => {
                if logging && !o.get().logged {
                    changed.push((start, o.key().clone()));
                    o.get_mut().logged = true;
                }
                merge_acc(&mut o.get_mut().acc, acc)
            }
            Entry::Vacant(v) => {
                if logging {
                    changed.push((start, v.key().clone()));
                }
                v.insert(Slot {
                    acc,
                    logged: logging,
                });
            }
        };
        merge(k, acc);
        while let Some((_, k, acc)) = partials.next_if(|p| p.0 == start) {
            merge(k, acc);
        }
    }
}

/// Each checkpoint epoch the inputs have sealed, in turn: `apply` what waited for it,
/// write the stage's windows with `write`, and move what they hold to the next epoch;
/// then apply what waited for the next one (and everything, once the inputs are done).
fn align<T: EventTime, K, A, X>(
    aligner: &mut Aligner<T, X>,
    open: &mut Partials<T, K, A>,
    frontiers: &[timely::progress::frontier::MutableAntichain<T>],
    mut apply: impl FnMut(&mut Partials<T, K, A>, Released<T, X>),
    write: impl Fn(&mut Partials<T, K, A>, &mut Aligner<T, X>, u64),
) where
    K: Hash + Eq,
{
    while let Some(epoch) = aligner.due(frontiers) {
        apply(open, aligner.release(epoch));
        write(open, aligner, epoch);
        open.lift(epoch);
        let next = aligner.next();
        apply(open, aligner.release(next));
    }
    apply(open, aligner.release_if_done(frontiers));
}

/// A restored part as both stages read it: the open windows' starts, and the
/// `((start, key), accumulator)` entries.
pub(crate) type RestoredPart<K, A> = (BTreeSet<u64>, Vec<((u64, K), A)>);

/// The first stage's parts of `stage` in the restored checkpoint, one `(open windows'
/// starts, entries)` per worker that wrote one (none if nothing is restored): how the
/// stage reads them, and the one-stage operator standing in for it at one worker
/// ([`crate::fixed`]).
pub(crate) fn restored_partials<K, A>(ctx: &Checkpoints, stage: &str) -> Vec<RestoredPart<K, A>>
where
    K: DeserializeOwned + Hash + Eq,
    A: DeserializeOwned,
{
    let parts = ctx.read_log::<PartialsExtra, (u64, K), ((), A, ())>(stage);
    parts
        .into_iter()
        .map(|(starts, entries)| {
            let entries = entries.into_iter().map(|(slot, ((), acc, ()))| (slot, acc));
            (starts.into_iter().collect(), entries.collect())
        })
        .collect()
}

/// The entries of restored parts `(open windows' starts, entries)` this worker takes:
/// those of windows the part lists as open (an entry of a window not listed belongs to
/// one closed since: its entries are not removed one by one) and of keys it owns.
pub(crate) fn open_and_owned<'a, K: Hash + 'a, A: 'a>(
    parts: impl IntoIterator<Item = RestoredPart<K, A>> + 'a,
    ctx: &'a Checkpoints,
) -> impl Iterator<Item = ((u64, K), A)> + 'a {
    parts.into_iter().flat_map(move |(starts, entries)| {
        entries
            .into_iter()
            .filter(move |((start, k), _)| starts.contains(start) && ctx.owns(hash(k)))
    })
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
    let checkpoints = Checkpoints::current();
    if scope.peers() == 1 {
        // One worker: no exchange to save, and the second stage would cost a pass over
        // the partials. The one-stage operator gives the same results at the same times.
        // Its part has the second stage's name and layout, so a checkpoint restores at
        // any number of workers; it reads the first stage's parts of a checkpoint
        // written at more workers, and writes none (the first stage starts empty).
        let policy = crate::window::WindowPolicy::new();
        let stage = format!("{name} (pre-aggregate)");
        let results = crate::fixed::fixed_windows(
            stream,
            None,
            name,
            size,
            slide,
            policy,
            key,
            agg,
            Some(stage),
        );
        return results.results;
    }
    let agg = Rc::new(agg);
    let key = Rc::new(key);

    // Stage 1: per-worker partial accumulators, no exchange.
    let partials = {
        let (agg, key) = (agg.clone(), key.clone());
        let stage = format!("{name} (pre-aggregate)");
        let checkpoints = checkpoints.clone();
        let mut builder = OperatorBuilder::new(stage.clone(), scope);
        let wake = crate::checkpoint::waker(&scope, &builder);
        let mut input = builder.new_input(stream, Pipeline);
        let (out, partials) = builder.new_output();
        let mut out: VecOutput<T, (u64, K, G::Acc)> = OutputBuilder::from(out);
        let mut open: Partials<T, K, G::Acc> = Partials::new(size);
        let held = crate::checkpoint::hold_output(checkpoints.as_ref(), &mut builder);
        builder.build(move |initial| {
            let mut aligner = checkpoints.map(|ctx| {
                let mut aligner = Aligner::new(ctx, &stage, &initial[held]).waking(wake);
                open.logging = true;
                // A compacted part keeps the entries of the windows its extra lists.
                aligner.compact_keeping::<PartialsExtra, (u64, K)>(|starts, (start, _)| {
                    starts.contains(start)
                });
                let ctx = aligner.checkpoints();
                let parts = restored_partials(ctx, &stage);
                open.restore(parts, ctx, &initial[0], |a, b| agg.merge(a, b));
                aligner
            });
            move |frontiers| {
                let mut out = out.activate();
                // Message by message, as in `crate::fixed` (no sort by stamp).
                input.for_each(|cap, data| {
                    let Some(time) = time_of(&cap) else {
                        return;
                    };
                    match aligner.as_mut().filter(|a| a.later(&time)) {
                        Some(a) => a.stash(time, || cap.delayed(&time, 0), data),
                        None => {
                            pre_aggregate(&mut open, time, &cap, data, size, slide, &*key, &*agg)
                        }
                    }
                });
                if let Some(a) = aligner.as_mut() {
                    let apply = |open: &mut Partials<T, K, G::Acc>, released: Released<T, D>| {
                        for (cap, mut data) in released {
                            let time = *cap.time();
                            pre_aggregate(open, time, &cap, &mut data, size, slide, &*key, &*agg);
                        }
                    };
                    align(a, &mut open, frontiers, apply, Partials::write_partials);
                }

                // Records waiting for a checkpoint may still fall in windows the frontier
                // alone would close.
                let frontier = watermark(frontiers);
                let watermark = aligner
                    .as_ref()
                    .map_or(frontier, |a| frontier.min(a.stashed_from()));
                open.close(watermark, |start, _, cap, keys| {
                    let mut session = out.session(cap);
                    for (k, slot) in keys {
                        session.give((start, k, slot.acc));
                    }
                });
                if let Some(a) = aligner.as_mut() {
                    a.settle(frontier);
                }
            }
        });
        partials
    };

    // Stage 2: merge each key's partials on the worker that owns the key.
    let mut builder = OperatorBuilder::new(name.clone(), scope);
    let wake = crate::checkpoint::waker(&scope, &builder);
    // Partials carry their key: hashed by reference, not cloned as `by_key` would.
    let pact = Exchange::new(|p: &(u64, K, G::Acc)| {
        crate::hash::hash(&p.1) % crate::checkpoint::KEY_GROUPS
    });
    let mut input = builder.new_input(partials, pact);
    let (out, results) = builder.new_output();
    let mut out: VecOutput<T, Windowed<K, G::Out>> = OutputBuilder::from(out);
    let mut open: Partials<T, K, G::Acc> = Partials::new(size);
    let held = crate::checkpoint::hold_output(checkpoints.as_ref(), &mut builder);
    builder.build(move |initial| {
        let merger = agg.clone();
        let merge = move |a: &mut G::Acc, b| merger.merge(a, b);
        let mut aligner = checkpoints.map(|ctx| {
            let mut aligner = Aligner::new(ctx, &name, &initial[held]).waking(wake);
            open.logging = true;
            // A compacted part keeps the entries of the windows its extra lists as open.
            aligner.compact_keeping::<MergedExtra<T>, (u64, K)>(|(open, _, _, _), (start, _)| {
                open.iter().any(|(s, _)| s == start)
            });
            if let Some((_, parts)) =
                aligner.restored_log::<MergedExtra<T>, (u64, K), (bool, G::Acc, (u32, bool))>()
            {
                let through: Vec<u64> = parts.iter().map(|(extra, _)| extra.3).collect();
                open.restored_through = restored_through(aligner.checkpoints(), &through);
                open.closed_through = open.restored_through;
                // Windows kept for lateness and late batches: none written here, and a
                // one-stage part's are not this operator's to restore.
                let parts = parts.into_iter().map(|((open, _, _, _), entries)| {
                    let starts = open.into_iter().map(|(start, _)| start).collect();
                    let entries: Vec<MergedEntry<K, G::Acc>> = entries;
                    let entries = entries
                        .into_iter()
                        // A one-stage part's keys its window had closed for.
                        .filter(|(_, (closed, _, _))| !closed)
                        .map(|(slot, (_, acc, _))| (slot, acc))
                        .collect();
                    (starts, entries)
                });
                open.restore(parts, aligner.checkpoints(), &initial[0], &merge);
            }
            aligner
        });
        move |frontiers| {
            let mut out = out.activate();
            input.for_each(|cap, data| {
                let Some(time) = time_of(&cap) else {
                    return;
                };
                // A partial is at its window's `end - 1`: one of a window closed before
                // a restore holds records that were late for the run before the crash
                // (see `restored_through`), and, without a late input, is dropped.
                if time.event() < open.restored_through {
                    if let Some(a) = aligner.as_ref() {
                        a.checkpoints().dropped_behind(&name, data.len() as u64);
                    }
                    data.clear();
                    return;
                }
                match aligner.as_mut().filter(|a| a.later(&time)) {
                    Some(a) => a.stash(time, || cap.delayed(&time, 0), data),
                    None => merge_partials(&mut open, time, &cap, data, &merge),
                }
            });
            if let Some(a) = aligner.as_mut() {
                let apply = |open: &mut Partials<T, K, G::Acc>,
                             released: Released<T, (u64, K, G::Acc)>| {
                    for (cap, mut data) in released {
                        let time = *cap.time();
                        merge_partials(open, time, &cap, &mut data, &merge);
                    }
                };
                align(a, &mut open, frontiers, apply, Partials::write_merged);
            }

            let frontier = watermark(frontiers);
            let watermark = aligner
                .as_ref()
                .map_or(frontier, |a| frontier.min(a.stashed_from()));
            open.close(watermark, |start, end, cap, keys| {
                let mut session = out.session(cap);
                for (k, Slot { acc, .. }) in keys {
                    let value = agg.finish(&acc);
                    session.give(Windowed::new(k, start, end, value, 0, Emit::Final));
                }
            });
            if let Some(a) = aligner.as_mut() {
                a.settle(frontier);
            }
        }
    });
    results
}
