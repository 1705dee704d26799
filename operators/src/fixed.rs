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
//!
//! Under checkpoints (see [`crate::checkpoint`]) records of epochs after the next
//! checkpoint epoch wait in the operator's [`Aligner`] until that epoch is sealed; then
//! the state — open windows, windows kept for lateness, pending late batches, with
//! their revisions — is written, and every capability held for it moves to the next
//! epoch. Restored state holds its capabilities at the epoch after the checkpoint; a
//! record read behind the watermark the restored state had closed windows through is
//! applied as a late record at it (see [`crate::checkpoint::restored_through`]).

use std::cell::Cell;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hash;
use std::rc::Rc;

use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::operator::empty;
use timely::dataflow::operators::generic::{OutputBuilder, OutputBuilderSession};
use timely::dataflow::operators::{Capability, CapabilitySet};
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use crate::aggregate::Aggregator;
use crate::capability::{emission_cap, hold, time_of, watermark, Mint, VecOutput, Waiting};
use crate::checkpoint::{
    behind, by_event, lift_epoch, lift_epochs, restore_pending, restored_through, Aligner, Arrival,
    Checkpoints,
};
use crate::hash::{by_key, hash};
use crate::late::Late;
use crate::time::EventTime;
use crate::window::{fold_into, sliding_starts, Emit, WindowPolicy, WindowStreams, Windowed};

/// One key's accumulator in one window.
#[derive(Serialize, Deserialize)]
struct Slot<A> {
    acc: A,
    /// The revision the next emission gets.
    revision: u32,
    /// Changed since its last emission: in an open window, by any record (early
    /// results skip unchanged keys); in a closed one, by a late record (listed in
    /// `dirty`).
    dirty: bool,
    /// Listed in `Windows::changed` since the last checkpoint.
    #[serde(skip)]
    logged: bool,
}

impl<A> Slot<A> {
    fn new(acc: A) -> Self {
        Slot {
            acc,
            revision: 0,
            dirty: false,
            logged: false,
        }
    }
}

/// Lists `(start, key)` as changed since the last checkpoint, once, if `logging`.
#[inline]
fn log_change<K: Clone, A>(
    logging: bool,
    changed: &mut Vec<(u64, K)>,
    start: u64,
    key: &K,
    slot: &mut Slot<A>,
) {
    if logging && !slot.logged {
        slot.logged = true;
        changed.push((start, key.clone()));
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

/// The state of a part that is not keyed, written whole in every part: the open
/// windows `(start, next early boundary)`, the windows kept for lateness, the late
/// batches waiting (at their time) and the watermark windows were closed through.
/// Entries are keyed by `(start, key)` and say
/// whether the window had closed for that key; an entry whose window is not in the
/// list it names belongs to a window dropped since.
type Extra<T, D> = (Vec<(u64, u64)>, Vec<u64>, Vec<(T, Vec<Late<D>>)>, u64);

/// The operator's state between activations.
struct Windows<T: EventTime, K, A, D> {
    size: u64,
    slide: u64,
    lateness: u64,
    early: Option<u64>,
    open: BTreeMap<u64, Open<T, K, A>>,
    closed: BTreeMap<u64, FxHashMap<K, Slot<A>>>,
    pending: Waiting<T, Late<D>>,
    dirty: Vec<(u64, K)>,
    key_hint: usize,
    /// Whether changes are tracked for incremental checkpoints.
    logging: bool,
    /// `(start, key)` of the entries changed since the last checkpoint.
    changed: Vec<(u64, K)>,
    /// The watermark every window ending at or before it was closed at (written in
    /// checkpoints).
    closed_through: u64,
    /// After a restore, the watermark the restored state had closed windows at (see
    /// [`Windows::behind`]); 0 otherwise.
    restored_through: u64,
}

impl<T: EventTime, K: Hash + Eq + Clone, A, D: Clone> Windows<T, K, A, D> {
    fn first_early(&self, start: u64) -> u64 {
        match self.early {
            Some(period) => start.saturating_add(period),
            None => u64::MAX,
        }
    }

    fn window(&mut self, start: u64) -> &mut Open<T, K, A> {
        let (next_early, hint) = (self.first_early(start), self.key_hint);
        self.open
            .entry(start)
            .or_insert_with(|| Open::new(next_early, hint))
    }

    /// Folds a message of main records at `time` into its windows.
    fn add_main<G: Aggregator<D, Acc = A>>(
        &mut self,
        time: T,
        cap: &impl Mint<T>,
        data: &mut Vec<D>,
        key: &impl Fn(&D) -> K,
        agg: &G,
    ) {
        let (size, slide) = (self.size, self.slide);
        let (first, last) = sliding_starts(time.event(), size, slide);
        for start in (first..=last).step_by(slide as usize) {
            let end = start.saturating_add(size);
            hold(
                &mut self.window(start).caps,
                cap,
                time.with_event(end - 1),
                0,
            );
        }
        let create = || Slot::new(agg.create());
        let (logging, changed) = (self.logging, &mut self.changed);
        let add = |i: usize, k: &K, slot: &mut Slot<A>, record: &D| {
            agg.add(&mut slot.acc, record);
            slot.dirty = true;
            log_change(logging, changed, first + i as u64 * slide, k, slot);
        };
        if first == last {
            // One window (always, for tumbling windows): no list of windows.
            let window = self.open.get_mut(&first).expect("entered above");
            fold_into(&mut [&mut window.keys], data, key, create, add);
        } else {
            let mut windows: Vec<_> = self
                .open
                .range_mut(first..=last)
                .map(|(_, w)| &mut w.keys)
                .collect();
            fold_into(&mut windows, data, key, create, add);
        }
    }

    /// How a late record at time `now` stands: `(too late for some window, taken by
    /// some window)`, where a window takes it while open or within lateness. Depends
    /// on times only, not on state.
    fn classify(&self, now: u64, event_time: u64) -> (bool, bool) {
        let (first, last) = sliding_starts(event_time, self.size, self.slide);
        let (mut beyond, mut taken) = (false, false);
        for start in (first..=last).step_by(self.slide as usize) {
            let end = start.saturating_add(self.size);
            if now < end.saturating_add(self.lateness) {
                taken = true;
            } else {
                beyond = true;
            }
        }
        (beyond, taken)
    }

    /// Whether a late record at `now` is kept for a correction of some window.
    fn corrects(&self, now: u64, event_time: u64) -> bool {
        let (first, last) = sliding_starts(event_time, self.size, self.slide);
        (first..=last).step_by(self.slide as usize).any(|start| {
            let end = start.saturating_add(self.size);
            end <= now && now < end.saturating_add(self.lateness)
        })
    }

    /// Takes late records applied at `time` (`cap` their input's capability): each goes
    /// to `too_late` (counted) for the windows it is too late for, and is applied to the
    /// others — at once, or after the next checkpoint if `time` is of a later epoch.
    #[allow(clippy::too_many_arguments)]
    fn take_late<G: Aggregator<D, Acc = A>>(
        &mut self,
        time: T,
        cap: &impl Mint<T>,
        records: impl IntoIterator<Item = Late<D>>,
        aligner: Option<&mut Aligner<T, Arrival<D>>>,
        mut too_late: impl FnMut(Late<D>),
        counter: &Cell<u64>,
        (key, agg): (&impl Fn(&D) -> K, &G),
    ) {
        let now = time.event();
        let later = aligner.as_ref().is_some_and(|a| a.later(&time));
        let mut kept = Vec::new();
        for record in records {
            let (beyond, absorbed) = self.classify(now, record.event_time);
            if beyond {
                counter.set(counter.get() + 1);
                if !absorbed {
                    too_late(record);
                    continue;
                }
                // Sliding windows only: too late for one window, not another.
                too_late(record.clone());
            }
            if later {
                kept.push(Arrival::Late(record));
            } else {
                self.add_late(time, cap, record, key, agg);
            }
        }
        if let Some(a) = aligner.filter(|_| !kept.is_empty()) {
            a.stash(time, || cap.mint(&time, 0), &mut kept);
        }
    }

    /// Where a record read at `time` is applied after a restore: a restarted source
    /// resumes at the watermark it had when the checkpoint's epoch ended, which may be
    /// behind the watermark this operator had closed windows at (it sees the next
    /// epoch's progress before writing its part). A record read behind the restored
    /// watermark is late, as it was for the run before the crash, and is applied as a
    /// late record at that watermark: `Some(that time)`; `None` for a record in time.
    fn behind(&self, time: T) -> Option<T> {
        behind(time, self.restored_through)
    }

    /// Applies a late record read at `time`: folded into the windows still open, kept
    /// for a correction of the windows within lateness.
    fn add_late<G: Aggregator<D, Acc = A>>(
        &mut self,
        time: T,
        cap: &impl Mint<T>,
        record: Late<D>,
        key: &impl Fn(&D) -> K,
        agg: &G,
    ) {
        let now = time.event();
        let (first, last) = sliding_starts(record.event_time, self.size, self.slide);
        for start in (first..=last).step_by(self.slide as usize) {
            let end = start.saturating_add(self.size);
            if end > now {
                let (next_early, hint) = (self.first_early(start), self.key_hint);
                let window = self
                    .open
                    .entry(start)
                    .or_insert_with(|| Open::new(next_early, hint));
                hold(&mut window.caps, cap, time.with_event(end - 1), 0);
                let k = key(&record.record);
                let slot = window
                    .keys
                    .entry(k.clone())
                    .or_insert_with(|| Slot::new(agg.create()));
                agg.add(&mut slot.acc, &record.record);
                slot.dirty = true;
                log_change(self.logging, &mut self.changed, start, &k, slot);
            }
        }
        if self.corrects(now, record.event_time) {
            let (_, records) = self
                .pending
                .entry((now, time))
                .or_insert_with(|| (cap.mint(&time, 0), Vec::new()));
            records.push(record);
        }
    }

    /// Applies records that waited for a checkpoint, in time order.
    fn apply<G: Aggregator<D, Acc = A>>(
        &mut self,
        released: Vec<(Capability<T>, Vec<Arrival<D>>)>,
        key: &impl Fn(&D) -> K,
        agg: &G,
    ) {
        for (cap, records) in released {
            // One message's main records at once, as when they first arrived: their
            // windows are looked up and held once, not per record.
            let time = *cap.time();
            let mut main = Vec::new();
            for record in records {
                match record {
                    Arrival::Main(d) => main.push(d),
                    Arrival::Late(l) => self.add_late(time, &cap, l, key, agg),
                }
            }
            if !main.is_empty() {
                self.add_main(time, &cap, &mut main, key, agg);
            }
        }
    }

    /// Every capability held, at epochs `<= epoch`, moved to `epoch + 1`: the state
    /// they were held for is in the checkpoint of `epoch`.
    fn lift(&mut self, epoch: u64) {
        for window in self.open.values_mut() {
            lift_epochs(&mut window.caps, epoch);
        }
        for (cap, _) in self.pending.values_mut() {
            lift_epoch(cap, epoch);
        }
    }
}

impl<T: EventTime, K: Hash + Eq + Clone + Serialize, A: Serialize, D: Clone + Serialize>
    Windows<T, K, A, D>
{
    /// Writes this worker's part of checkpoint `epoch`: the entries changed since the
    /// last part (or every entry), the lists of windows and the late records waiting.
    fn checkpoint(&mut self, aligner: &mut Aligner<T, Arrival<D>>, epoch: u64) {
        let extra = (
            self.open
                .iter()
                .map(|(s, w)| (*s, w.next_early))
                .collect::<Vec<_>>(),
            self.closed.keys().copied().collect::<Vec<_>>(),
            self.pending
                .iter()
                .map(|((_, t), (_, records))| (*t, records))
                .collect::<Vec<_>>(),
            self.closed_through,
        );
        let changed = std::mem::take(&mut self.changed);
        let (open, closed) = (&self.open, &self.closed);
        // A key's slot is in its window's open or its closed map, never both (a window
        // may be in both after a restore at another worker count: see `restore`).
        let slot = |start: u64, k: &K| {
            let open_slot = open.get(&start).and_then(|w| w.keys.get(k));
            match open_slot {
                Some(slot) => Some((false, slot)),
                None => closed
                    .get(&start)
                    .and_then(|keys| keys.get(k))
                    .map(|s| (true, s)),
            }
        };
        let entries = open.values().map(|w| w.keys.len()).sum::<usize>()
            + closed.values().map(|keys| keys.len()).sum::<usize>();
        // An entry is listed once per interval; the list also holds entries of windows
        // dropped since, so this overstates the share of live entries that changed
        // (a full part then, when most of what was touched is gone, is also smaller).
        let mostly_changed = changed.len() * 2 >= entries;
        let full = aligner.write_log_full_if(epoch, extra, mostly_changed, |want| {
            let all = open
                .iter()
                .map(|(s, w)| (*s, false, &w.keys))
                .chain(closed.iter().map(|(s, keys)| (*s, true, keys)))
                .flat_map(|(s, c, keys)| {
                    keys.iter().map(move |(k, slot)| ((s, k), Some((c, slot))))
                });
            // An entry of a window since dropped needs no tombstone: a restore ignores
            // the entries of windows its newest part does not list.
            let listed = |s: &u64| open.contains_key(s) || closed.contains_key(s);
            let changed = changed
                .iter()
                .filter(|(s, _)| listed(s))
                .map(|(s, k)| ((*s, k), slot(*s, k)));
            want.pick(all, changed)
        });
        if full {
            // Every entry, in order: cheaper than looking the changed ones up.
            let open = self.open.values_mut().flat_map(|w| w.keys.values_mut());
            for slot in open.chain(self.closed.values_mut().flat_map(|k| k.values_mut())) {
                slot.logged = false;
            }
        } else {
            for (start, k) in &changed {
                let open = self.open.get_mut(start).and_then(|w| w.keys.get_mut(k));
                let slot = match open {
                    Some(slot) => Some(slot),
                    None => self.closed.get_mut(start).and_then(|keys| keys.get_mut(k)),
                };
                if let Some(slot) = slot {
                    slot.logged = false;
                }
            }
        }
        self.changed = changed;
        self.changed.clear();
    }
}

/// A window operator's results output, activated.
type Results<'a, T, K, O> =
    OutputBuilderSession<'a, T, CapacityContainerBuilder<Vec<Windowed<K, O>>>>;

impl<T: EventTime, K: Hash + Eq + Clone + 'static, A, D: Clone> Windows<T, K, A, D> {
    /// Final results of the windows the watermark has passed.
    fn close<G: Aggregator<D, Acc = A, Out: 'static>>(
        &mut self,
        watermark: u64,
        agg: &G,
        out: &mut Results<'_, T, K, G::Out>,
    ) {
        let (size, lateness) = (self.size, self.lateness);
        self.closed_through = self.closed_through.max(watermark);
        while let Some(entry) = self.open.first_entry() {
            let start = *entry.key();
            let end = start.saturating_add(size);
            if end > watermark {
                break;
            }
            let Open { caps, mut keys, .. } = entry.remove();
            self.key_hint = keys.len();
            if let Some(cap) = emission_cap(&caps, end - 1) {
                let mut session = out.session(&cap);
                let final_of = |key: K, slot: &Slot<A>| {
                    let value = agg.finish(&slot.acc);
                    Windowed::new(key, start, end, value, slot.revision, Emit::Final)
                };
                if lateness > 0 {
                    for (k, slot) in keys.iter_mut() {
                        session.give(final_of(k.clone(), slot));
                        slot.revision += 1;
                        slot.dirty = false;
                        log_change(self.logging, &mut self.changed, start, k, slot);
                    }
                } else {
                    for (k, slot) in keys.drain() {
                        session.give(final_of(k, &slot));
                    }
                }
            }
            // Kept even if already past its lateness: late records pending below
            // `end + lateness` are applied first, then it is dropped in `expire`. The
            // window may be closed already for other keys (restored from workers that
            // had closed it before this one's part was written): they are kept.
            if lateness > 0 {
                match self.closed.entry(start) {
                    Entry::Vacant(v) => {
                        v.insert(keys);
                    }
                    Entry::Occupied(mut o) => o.get_mut().extend(keys),
                }
            }
        }
    }

    /// Early results of open windows whose next boundary the watermark crossed.
    fn fire_early<G: Aggregator<D, Acc = A, Out: 'static>>(
        &mut self,
        watermark: u64,
        agg: &G,
        out: &mut Results<'_, T, K, G::Out>,
    ) {
        let Some(period) = self.early else {
            return;
        };
        for (&start, window) in self.open.iter_mut() {
            let end = start.saturating_add(self.size);
            if window.next_early > watermark || window.next_early >= end {
                continue;
            }
            window.next_early = start + period * ((watermark - start) / period + 1);
            let Some(cap) = emission_cap(&window.caps, end - 1) else {
                continue;
            };
            let mut session = out.session(&cap);
            for (k, slot) in window.keys.iter_mut().filter(|(_, slot)| slot.dirty) {
                slot.dirty = false;
                log_change(self.logging, &mut self.changed, start, k, slot);
                let value = agg.finish(&slot.acc);
                let early = Windowed::new(k.clone(), start, end, value, slot.revision, Emit::Early);
                session.give(early);
                slot.revision += 1;
            }
        }
    }

    /// Late corrections whose time the watermark has passed, in time order.
    fn correct<G: Aggregator<D, Acc = A, Out: 'static>>(
        &mut self,
        watermark: u64,
        key: &impl Fn(&D) -> K,
        agg: &G,
        out: &mut Results<'_, T, K, G::Out>,
    ) {
        let (size, slide, lateness) = (self.size, self.slide, self.lateness);
        while let Some(entry) = self.pending.first_entry() {
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
                    let keys = self.closed.entry(start).or_default();
                    let slot = match keys.get_mut(&k) {
                        Some(slot) => slot,
                        None => keys.entry(k.clone()).or_insert(Slot::new(agg.create())),
                    };
                    agg.add(&mut slot.acc, &record.record);
                    log_change(self.logging, &mut self.changed, start, &k, slot);
                    if !slot.dirty {
                        slot.dirty = true;
                        self.dirty.push((start, k));
                    }
                }
            }
            let mut session = out.session(&cap);
            for (start, k) in self.dirty.drain(..) {
                let slot = self
                    .closed
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
    }

    /// Drops the state of windows past their lateness.
    fn expire(&mut self, watermark: u64) {
        while let Some(entry) = self.closed.first_entry() {
            let start = *entry.key();
            if start
                .saturating_add(self.size)
                .saturating_add(self.lateness)
                > watermark
            {
                break;
            }
            entry.remove();
        }
    }
}

impl<T, K, A, D> Windows<T, K, A, D>
where
    T: EventTime,
    K: Hash + Eq + Clone + DeserializeOwned + 'static,
    A: DeserializeOwned,
    D: Clone + DeserializeOwned + 'static,
{
    /// Loads the restored checkpoint's parts, keeping the keys this worker owns, with
    /// capabilities (minted from `initial`) at the epoch after the checkpoint.
    fn restore(
        &mut self,
        aligner: &mut Aligner<T, Arrival<D>>,
        initial: &Capability<T>,
        key: &impl Fn(&D) -> K,
    ) {
        // A compacted part keeps the entries of the windows its extra lists (open or
        // kept for lateness): a window dropped since is never listed again.
        aligner.compact_keeping::<Extra<T, D>, (u64, K)>(|(open, closed, _, _), (start, _)| {
            open.iter().any(|(s, _)| s == start) || closed.contains(start)
        });
        let Some((epoch, parts)) = aligner.restored_log::<Extra<T, D>, (u64, K), (bool, Slot<A>)>()
        else {
            return;
        };
        let ctx = aligner.checkpoints();
        let at = |event: u64| initial.time().with_event(event).with_epoch(epoch);
        let through: Vec<u64> = parts.iter().map(|(extra, _)| extra.3).collect();
        self.restored_through = restored_through(ctx, &through);
        self.closed_through = self.restored_through;
        for ((open, closed, pending, _), entries) in parts {
            let open: BTreeMap<u64, u64> = open.into_iter().collect();
            let closed: BTreeSet<u64> = closed.into_iter().collect();
            // Each entry says whether its key's window had closed for it: workers close
            // a window at their own pace, so parts written at the same epoch by
            // several workers may disagree, and a restore at another worker count then
            // holds the window both open (for some keys) and closed (for others).
            for ((start, k), (closed_for_key, slot)) in entries {
                if !ctx.owns(hash(&k)) {
                    continue;
                }
                let next_early = open.get(&start).filter(|_| !closed_for_key);
                if let Some(&next_early) = next_early {
                    let end = start.saturating_add(self.size);
                    let window = self
                        .open
                        .entry(start)
                        .or_insert_with(|| Open::new(next_early, 0));
                    window.keys.insert(k, slot);
                    if window.caps.is_empty() {
                        window.caps.insert(initial.delayed(&at(end - 1)));
                    }
                } else if closed_for_key && closed.contains(&start) {
                    self.closed.entry(start).or_default().insert(k, slot);
                }
            }
            restore_pending(
                &mut self.pending,
                by_event(pending),
                ctx,
                initial,
                epoch,
                &|l: &Late<D>| key(&l.record),
            );
        }
        // Windows none of whose keys this worker owns hold nothing.
        self.open.retain(|_, w| !w.keys.is_empty());
    }

    /// Merges into the open windows the partial accumulators of a pre-aggregation's
    /// first stage, `stage`, in the restored checkpoint (written while the job ran the
    /// two stages at more workers): at one worker this operator stands in for both. A
    /// partial's window had not closed in the first stage, so the second cannot have
    /// emitted it.
    fn absorb(
        &mut self,
        ctx: &Checkpoints,
        stage: &str,
        initial: &Capability<T>,
        merge: impl Fn(&mut A, A),
    ) {
        ctx.adopt(stage);
        let Some(restore) = ctx.restore() else {
            return;
        };
        let at = |event: u64| {
            initial
                .time()
                .with_event(event)
                .with_epoch(restore.epoch + 1)
        };
        let parts = crate::preagg::restored_partials::<K, A>(ctx, stage);
        for ((start, k), acc) in crate::preagg::open_and_owned(parts, ctx) {
            let end = start.saturating_add(self.size);
            let next_early = self.first_early(start);
            let window = self
                .open
                .entry(start)
                .or_insert_with(|| Open::new(next_early, 0));
            match window.keys.entry(k) {
                std::collections::hash_map::Entry::Occupied(mut slot) => {
                    merge(&mut slot.get_mut().acc, acc)
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(Slot::new(acc));
                }
            }
            if window.caps.is_empty() {
                window.caps.insert(initial.delayed(&at(end - 1)));
            }
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
    stands_in_for: Option<String>,
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
    let has_late = late.is_some();
    let late = late.unwrap_or_else(|| empty(scope));
    let key = Rc::new(key);
    let (k1, k2) = (key.clone(), key.clone());
    let main_pact = by_key(move |d: &D| k1(d));
    let late_pact = by_key(move |d: &Late<D>| k2(&d.record));
    let checkpoints = Checkpoints::current();

    let mut builder = OperatorBuilder::new(name.clone(), scope);
    let wake = crate::checkpoint::waker(&scope, &builder);
    let mut main_in = builder.new_input(stream, main_pact);
    let mut late_in = builder.new_input(late, late_pact);
    let (results_out, results) = builder.new_output();
    let (too_late_out, too_late) = builder.new_output();
    if has_late {
        let holds = "late records beyond the window's lateness";
        crate::unconnected::declare(&too_late, &name, "too_late", holds);
    }
    let mut results_out: VecOutput<T, Windowed<K, G::Out>> = OutputBuilder::from(results_out);
    let mut too_late_out: VecOutput<T, Late<D>> = OutputBuilder::from(too_late_out);
    let too_late_count = Rc::new(Cell::new(0u64));
    let counter = too_late_count.clone();

    let mut state: Windows<T, K, G::Acc, D> = Windows {
        size,
        slide,
        lateness,
        early: policy.early,
        open: BTreeMap::new(),
        closed: BTreeMap::new(),
        pending: BTreeMap::new(),
        dirty: Vec::new(),
        key_hint: 0,
        logging: false,
        changed: Vec::new(),
        closed_through: 0,
        restored_through: 0,
    };

    let held = crate::checkpoint::hold_output(checkpoints.as_ref(), &mut builder);
    builder.build(move |initial| {
        let mut aligner = checkpoints.map(|ctx| {
            let mut aligner = Aligner::new(ctx, &name, &initial[held]).waking(wake);
            state.logging = true;
            state.restore(&mut aligner, &initial[0], &*key);
            if let Some(stage) = &stands_in_for {
                let merge = |a: &mut G::Acc, b| agg.merge(a, b);
                state.absorb(aligner.checkpoints(), stage, &initial[0], merge);
            }
            aligner
        });
        move |frontiers| {
            let mut results_out = results_out.activate();
            let mut too_late_out = too_late_out.activate();

            // Message by message: grouping by stamp would sort every step's messages,
            // and the work per message (its windows, a capability check) is small.
            main_in.for_each(|cap, data| {
                let Some(time) = time_of(&cap) else {
                    return;
                };
                if let Some(at) = state.behind(time) {
                    let (event_time, watermark) = (time.event(), at.event());
                    let records = data.drain(..).map(|record| Late {
                        event_time,
                        watermark,
                        record,
                    });
                    let mut too_late = too_late_out.session(&cap);
                    // Without a late input nobody is told to read `too_late`: a record
                    // too late for its windows is dropped and reported instead, as by
                    // the operators that have no late input.
                    let mut dropped = 0u64;
                    let give = |r| match has_late {
                        true => too_late.give(r),
                        false => dropped += 1,
                    };
                    state.take_late(
                        at,
                        &cap,
                        records,
                        aligner.as_mut(),
                        give,
                        &counter,
                        (&*key, &agg),
                    );
                    if let Some(a) = aligner.as_ref().filter(|_| dropped > 0) {
                        a.checkpoints().dropped_behind(&name, dropped);
                    }
                    return;
                }
                match aligner.as_mut().filter(|a| a.later(&time)) {
                    Some(a) => {
                        let mut records = data.drain(..).map(Arrival::Main).collect();
                        a.stash(time, || cap.delayed(&time, 0), &mut records);
                    }
                    None => state.add_main(time, &cap, data, &*key, &agg),
                }
            });

            late_in.for_each_stamp(|cap, batches| {
                let Some(time) = time_of(&cap) else {
                    return;
                };
                // Read behind the restored watermark: applied at it (see `behind`).
                let at = state.behind(time).unwrap_or(time);
                let mut too_late = too_late_out.session(&cap);
                let give = |r| too_late.give(r);
                let records = batches.flat_map(|batch| batch.drain(..));
                state.take_late(
                    at,
                    &cap,
                    records,
                    aligner.as_mut(),
                    give,
                    &counter,
                    (&*key, &agg),
                );
            });

            // Each checkpoint epoch the inputs have sealed, in turn: apply what waited for it, write
            // the state, and move what it held to the next epoch.
            if let Some(a) = aligner.as_mut() {
                while let Some(epoch) = a.due(frontiers) {
                    state.apply(a.release(epoch), &*key, &agg);
                    state.checkpoint(a, epoch);
                    state.lift(epoch);
                    // Records up to the new next checkpoint epoch need not wait any more.
                    let next = a.next();
                    state.apply(a.release(next), &*key, &agg);
                }
                state.apply(a.release_if_done(frontiers), &*key, &agg);
            }

            // Records waiting for a checkpoint may still fall in windows the frontier
            // alone would close.
            let frontier = watermark(frontiers);
            let watermark = aligner
                .as_ref()
                .map_or(frontier, |a| frontier.min(a.stashed_from()));
            state.close(watermark, &agg, &mut results_out);
            state.fire_early(watermark, &agg, &mut results_out);
            state.correct(watermark, &*key, &agg, &mut results_out);
            state.expire(watermark);
            if let Some(a) = aligner.as_mut() {
                a.settle(frontier);
            }
        }
    });

    WindowStreams {
        results,
        too_late,
        too_late_count,
    }
}
