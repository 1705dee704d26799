//! Keyed window joins: records of two streams with the same key in the same tumbling
//! event-time window are paired.
//!
//! Both inputs are exchanged by key. Per window the operator keeps each key's records
//! of both sides and holds a capability at `(end - 1, e_min)` over both inputs' records
//! (like [`crate::tumble`]); when the event-time watermark over both inputs reaches the
//! window's end it emits every pair there (and, for a left join, each left record
//! without a partner once, with `None`), then drops the window.
//!
//! **A cap on rows.** A hot key under one `(key, window)` makes `n × m` rows. With
//! [`WindowJoin::window_join_capped`] each `(key, window)` emits at most `max_rows`
//! rows — the first ones in arrival order, left-major — and keeps at most `max_rows`
//! records of each side (a record past that could only make rows past the cap: a left
//! record at index `i ≥ max_rows` starts at row `i · m ≥ max_rows`); a `(key, window)`
//! over the cap is reported once, at the window's close, as a [`JoinOverflow`] on its
//! own output (how many records each side had, the rows it would have made, the rows
//! emitted), counted in [`JoinStreams::overflow_count`]. The overflow output holds a
//! capability for a window only once a key of it is over the cap.
//!
//! Under checkpoints (see [`crate::checkpoint`]) records of epochs after the next
//! checkpoint epoch wait in the operator's [`Aligner`] until that epoch is sealed; then
//! the part — the open windows' starts, whole, and each `(window, key)` whose records
//! changed since the operator's previous part (every one in a full part) — is written
//! and, once durable, every window's capability moves to the epoch after the
//! checkpoint. A closed window's entries are not removed one by one: on restore an
//! entry of a window not listed as open belongs to a window closed since (no record
//! can fall in a closed window again: its end is at or below the watermark, and after a
//! restore a record falling in a window emitted before it is dropped, as it was late
//! for the run before the crash: see [`crate::checkpoint::restored_through`]). Restored
//! windows hold `(end - 1, C + 1)`.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hash;
use std::rc::Rc;

use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::{Capability, CapabilitySet};
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use crate::capability::{emission_cap, hold, time_of, watermark, Mint, VecOutput};
use crate::checkpoint::{lift_epochs, restored_through, Aligner, Checkpoints};
use crate::hash::{by_key, hash};
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

/// A `(key, window)` of a capped window join ([`WindowJoin::window_join_capped`]) whose
/// rows were over the cap, reported at the window's close.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JoinOverflow<K> {
    /// The key.
    pub key: K,
    /// Inclusive start of the window, event-time ms.
    pub start: u64,
    /// Exclusive end of the window, event-time ms.
    pub end: u64,
    /// Left records of the key in the window (kept or not).
    pub left: u64,
    /// Right records of the key in the window (kept or not).
    pub right: u64,
    /// Rows the join would have emitted without the cap.
    pub rows: u64,
    /// Rows it emitted: the cap.
    pub emitted: u64,
}

/// The outputs of a capped window join.
pub struct JoinStreams<'scope, T: EventTime, K, R> {
    /// The join's rows, at most the cap per `(key, window)`.
    pub rows: StreamVec<'scope, T, Windowed<K, R>>,
    /// One report per `(key, window)` whose rows were over the cap.
    pub overflow: StreamVec<'scope, T, JoinOverflow<K>>,
    /// How many reports this worker emitted on `overflow`.
    pub overflow_count: Rc<Cell<u64>>,
}

/// One key's records of one window: left and right.
struct Sides<A, B> {
    left: Vec<A>,
    right: Vec<B>,
    /// Records not kept, left and right: the side was at the cap.
    dropped: [u64; 2],
    /// Listed in [`Windows::changed`] since the last checkpoint.
    logged: bool,
}

impl<A, B> Default for Sides<A, B> {
    fn default() -> Self {
        Sides {
            left: Vec::new(),
            right: Vec::new(),
            dropped: [0, 0],
            logged: false,
        }
    }
}

impl<A, B> Sides<A, B> {
    /// Records of each side, kept or not.
    fn counts(&self) -> (u64, u64) {
        let left = self.left.len() as u64 + self.dropped[0];
        (left, self.right.len() as u64 + self.dropped[1])
    }

    /// The rows the key's records make, without a cap.
    fn rows(&self, kind: JoinKind) -> u64 {
        match self.counts() {
            (n, 0) if kind == JoinKind::Left => n,
            (n, m) => n.saturating_mul(m),
        }
    }
}

/// An open window: the capability for its rows, per key the records of the left and
/// the right side, and (once a key is over the cap) the capability for its overflow
/// reports.
type Window<T, K, A, B> = (
    CapabilitySet<T>,
    FxHashMap<K, Sides<A, B>>,
    CapabilitySet<T>,
);

/// Open windows by start.
type Open<T, K, A, B> = BTreeMap<u64, Window<T, K, A, B>>;

/// The open windows, and which of their entries changed since the last checkpoint.
struct Windows<T: EventTime, K, A, B> {
    open: Open<T, K, A, B>,
    /// Most rows per `(key, window)`, and most records kept per side.
    max_rows: usize,
    kind: JoinKind,
    /// Whether changes are tracked for incremental checkpoints.
    logging: bool,
    /// `(start, key)` of the entries changed since the last checkpoint.
    changed: Vec<(u64, K)>,
    /// The watermark every window ending at or before it was emitted at.
    closed_through: u64,
    /// After a restore, the restored `closed_through` (see
    /// [`crate::checkpoint::restored_through`]); 0 otherwise.
    restored_through: u64,
}

impl<T: EventTime, K, A, B> Windows<T, K, A, B> {
    /// Whether a record read at `time` falls in a window emitted before a restore: it
    /// was late for the run before the crash (see [`crate::checkpoint::restored_through`])
    /// and, without a late input, is dropped.
    fn behind(&self, time: &T, size: u64) -> bool {
        tumbling_start(time.event(), size).saturating_add(size) <= self.restored_through
    }
}

/// A record of one of a join's two inputs, kept while it waits for a checkpoint.
#[derive(Serialize, Deserialize)]
pub(crate) enum Side<A, B> {
    /// From the left input.
    Left(A),
    /// From the right input.
    Right(B),
}

/// Records of both inputs that waited for a checkpoint, with their capabilities.
pub(crate) type Released<T, A, B> = Vec<(Capability<T>, Vec<Side<A, B>>)>;

/// Picks one side's records of a key, and its count of records not kept.
type PickSide<A, B, X> = fn(&mut Sides<A, B>) -> (&mut Vec<X>, &mut u64);

/// Mints a capability for the overflow output at a time, if it can.
type MintOver<'a, T> = &'a dyn Fn(&T) -> Option<Capability<T>>;

/// Files one side's records of a message at `time` (`side` picks the side) under their
/// key in the message's tumbling window, holding the window's capability at
/// `(end - 1, e)` (and, once a key is over the cap, one for the overflow output,
/// from `over_cap`).
#[allow(clippy::too_many_arguments)]
fn file<T: EventTime, K: Hash + Eq, A, B, X>(
    windows: &mut Windows<T, K, A, B>,
    cap: &impl Mint<T>,
    over_cap: MintOver<'_, T>,
    time: T,
    records: impl IntoIterator<Item = X>,
    size: u64,
    key: impl Fn(&X) -> K,
    side: PickSide<A, B, X>,
) {
    let start = tumbling_start(time.event(), size);
    let (caps, sides, over) = windows.open.entry(start).or_default();
    let at = time.with_event(start.saturating_add(size) - 1);
    hold(caps, cap, at, 0);
    let (max_rows, kind) = (windows.max_rows, windows.kind);
    for record in records {
        let kept = sides.entry(key(&record)).or_default();
        if windows.logging && !kept.logged {
            kept.logged = true;
            windows.changed.push((start, key(&record)));
        }
        let (list, dropped) = side(kept);
        if list.len() < max_rows {
            list.push(record);
        } else {
            *dropped += 1;
        }
        if over.is_empty() && kept.rows(kind) > max_rows as u64 {
            if let Some(c) = over_cap(&at) {
                over.insert(c);
            }
        }
    }
}

/// The left records of a key, and how many were not kept.
fn left_side<A, B>(s: &mut Sides<A, B>) -> (&mut Vec<A>, &mut u64) {
    (&mut s.left, &mut s.dropped[0])
}

/// The right records of a key, and how many were not kept.
fn right_side<A, B>(s: &mut Sides<A, B>) -> (&mut Vec<B>, &mut u64) {
    (&mut s.right, &mut s.dropped[1])
}

/// Files records that waited for a checkpoint, in time order; `over_caps` holds, per
/// time of a capped join's waiting records, a capability for the overflow output
/// (taken out here).
fn file_released<T: EventTime, K: Hash + Eq, A, B>(
    windows: &mut Windows<T, K, A, B>,
    released: Released<T, A, B>,
    over_caps: &mut BTreeMap<T, Capability<T>>,
    size: u64,
    key_a: &impl Fn(&A) -> K,
    key_b: &impl Fn(&B) -> K,
) {
    let times: Vec<T> = released.iter().map(|(cap, _)| *cap.time()).collect();
    for (cap, records) in released {
        let time = *cap.time();
        let over = over_caps.get(&time).cloned();
        let over_cap = |t: &T| over.as_ref().map(|c| c.delayed(t));
        let (mut left, mut right) = (Vec::new(), Vec::new());
        for record in records {
            match record {
                Side::Left(a) => left.push(a),
                Side::Right(b) => right.push(b),
            }
        }
        file(windows, &cap, &over_cap, time, left, size, key_a, left_side);
        file(
            windows, &cap, &over_cap, time, right, size, key_b, right_side,
        );
    }
    for time in times {
        over_caps.remove(&time);
    }
}

/// One `(window, key)` as a checkpoint entry: keyed by `(start, key)`, valued by the
/// key's records of both sides and how many of each were not kept.
type SidesEntry<K, A, B> = ((u64, K), (Vec<A>, Vec<B>, [u64; 2]));

/// Writes this worker's part of checkpoint `epoch`: the open windows' starts, and the
/// entries changed since the last part (or every entry).
fn checkpoint<T: EventTime, K, A, B>(
    windows: &mut Windows<T, K, A, B>,
    aligner: &mut Aligner<T, Side<A, B>>,
    epoch: u64,
) where
    K: Hash + Eq + Serialize,
    A: Serialize,
    B: Serialize,
{
    let starts: Vec<u64> = windows.open.keys().copied().collect();
    let extra = (starts, windows.closed_through);
    let changed = std::mem::take(&mut windows.changed);
    let open = &windows.open;
    fn view<A, B>(s: &Sides<A, B>) -> (&Vec<A>, &Vec<B>, [u64; 2]) {
        (&s.left, &s.right, s.dropped)
    }
    aligner.write_log(epoch, extra, |want| {
        let all = open.iter().flat_map(|(start, (_, keys, _))| {
            keys.iter().map(move |(k, s)| ((*start, k), Some(view(s))))
        });
        let changed = changed.iter().map(|(start, k)| {
            let sides = open.get(start).and_then(|(_, keys, _)| keys.get(k));
            ((*start, k), sides.map(view))
        });
        want.pick(all, changed)
    });
    for (start, k) in &changed {
        if let Some(s) = windows
            .open
            .get_mut(start)
            .and_then(|(_, keys, _)| keys.get_mut(k))
        {
            s.logged = false;
        }
    }
    windows.changed = changed;
    windows.changed.clear();
}

/// Loads the restored checkpoint's parts, keeping the keys this worker owns in the
/// windows open at the checkpoint, each window holding `(end - 1, C + 1)` (minted from
/// `initial`, for the rows and, once a key is over the cap, the overflow).
fn restore<T: EventTime, K, A, B>(
    windows: &mut Windows<T, K, A, B>,
    aligner: &mut Aligner<T, Side<A, B>>,
    initial: &[Capability<T>],
    size: u64,
) where
    K: Hash + Eq + DeserializeOwned + 'static,
    A: DeserializeOwned,
    B: DeserializeOwned,
{
    // A compacted part keeps the entries of the windows its extra lists as open.
    aligner.compact_keeping::<(Vec<u64>, u64), (u64, K)>(|(starts, _), (start, _)| {
        starts.contains(start)
    });
    let Some((epoch, parts)) =
        aligner.restored_log::<(Vec<u64>, u64), (u64, K), (Vec<A>, Vec<B>, [u64; 2])>()
    else {
        return;
    };
    let ctx = aligner.checkpoints();
    let through: Vec<u64> = parts.iter().map(|((_, through), _)| *through).collect();
    windows.restored_through = restored_through(ctx, &through);
    windows.closed_through = windows.restored_through;
    let (max_rows, kind) = (windows.max_rows as u64, windows.kind);
    for ((starts, _), entries) in parts {
        let starts: BTreeSet<u64> = starts.into_iter().collect();
        let entries: Vec<SidesEntry<K, A, B>> = entries;
        for ((start, k), (left, right, dropped)) in entries {
            // An entry of a window closed since, or of a key another worker owns.
            if !starts.contains(&start) || !ctx.owns(hash(&k)) {
                continue;
            }
            let (caps, sides, over) = windows.open.entry(start).or_default();
            let kept = sides.entry(k).or_default();
            kept.left.extend(left);
            kept.right.extend(right);
            kept.dropped[0] += dropped[0];
            kept.dropped[1] += dropped[1];
            let end = start.saturating_add(size);
            let at = initial[0].time().with_event(end - 1).with_epoch(epoch);
            if caps.is_empty() {
                caps.insert(initial[0].delayed(&at));
            }
            if over.is_empty() && kept.rows(kind) > max_rows {
                over.insert(initial[1].delayed(&at));
            }
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
        Self: Sized,
        B: ExchangeData,
        K: ExchangeData + Hash + Eq + Clone,
        R: 'static,
        KA: Fn(&A) -> K + 'static,
        KB: Fn(&B) -> K + 'static,
        F: Fn(&K, &A, Option<&B>) -> R + 'static,
    {
        let (size, max) = (size, usize::MAX);
        self.window_join_capped(other, name, size, kind, max, key_a, key_b, result)
            .rows
    }

    /// [`WindowJoin::window_join_with`] with at most `max_rows` rows per `(key,
    /// window)` (at least 1): the first rows in arrival order, left-major; at most
    /// `max_rows` records of each side are kept. A `(key, window)` over the cap is
    /// reported on [`JoinStreams::overflow`] at the window's close (records per side,
    /// rows it would have made, rows emitted) and counted; a job that leaves that
    /// stream unconnected is told so at start.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, JoinKind, WindowJoin};
    ///
    /// let (rows, over) = timely::example(|scope| {
    ///     // Key 1: 3 left and 2 right records in window [0, 10): 6 rows, cap 4.
    ///     let a = vec![(1u8, 1u64), (1, 2), (1, 3)].to_stream(scope)
    ///         .assign_event_time("at", |r: &(u8, u64)| r.1);
    ///     let b = vec![(1u8, 4u64), (1, 5)].to_stream(scope)
    ///         .assign_event_time("at", |r: &(u8, u64)| r.1);
    ///     let j = a.window_join_capped(b, "ab", 10, JoinKind::Inner, 4,
    ///         |a: &(u8, u64)| a.0, |b: &(u8, u64)| b.0, |_k, a, b| (a.1, b.unwrap().1));
    ///     (j.rows.capture(), j.overflow.capture())
    /// });
    /// let rows: Vec<_> = rows.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// assert_eq!(rows.len(), 4);
    /// let over: Vec<_> = over.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// assert_eq!((over[0].left, over[0].right, over[0].rows, over[0].emitted), (3, 2, 6, 4));
    /// ```
    #[allow(clippy::too_many_arguments)]
    fn window_join_capped<B, K, R, KA, KB, F>(
        self,
        other: StreamVec<'scope, T, B>,
        name: &str,
        size: u64,
        kind: JoinKind,
        max_rows: usize,
        key_a: KA,
        key_b: KB,
        result: F,
    ) -> JoinStreams<'scope, T, K, R>
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
    fn window_join_capped<B, K, R, KA, KB, F>(
        self,
        other: StreamVec<'scope, T, B>,
        name: &str,
        size: u64,
        kind: JoinKind,
        max_rows: usize,
        key_a: KA,
        key_b: KB,
        result: F,
    ) -> JoinStreams<'scope, T, K, R>
    where
        B: ExchangeData,
        K: ExchangeData + Hash + Eq + Clone,
        R: 'static,
        KA: Fn(&A) -> K + 'static,
        KB: Fn(&B) -> K + 'static,
        F: Fn(&K, &A, Option<&B>) -> R + 'static,
    {
        assert!(size > 0, "window size must be at least 1 ms");
        assert!(max_rows > 0, "a window join's row cap must be at least 1");
        let (key_a, key_b) = (Rc::new(key_a), Rc::new(key_b));
        let (route_a, route_b) = (key_a.clone(), key_b.clone());
        let pact_a = by_key(move |d: &A| route_a(d));
        let pact_b = by_key(move |d: &B| route_b(d));

        let name = format!("WindowJoin({name}, {size}ms)");
        let mut builder = OperatorBuilder::new(name.clone(), self.scope());
        let wake = crate::checkpoint::waker(&self.scope(), &builder);
        let mut input_a = builder.new_input(self, pact_a);
        let mut input_b = builder.new_input(other, pact_b);
        let (output, stream) = builder.new_output();
        let mut output: VecOutput<T, Windowed<K, R>> = OutputBuilder::from(output);
        let (overflow_out, overflow) = builder.new_output();
        let mut overflow_out: VecOutput<T, JoinOverflow<K>> = OutputBuilder::from(overflow_out);
        if max_rows < usize::MAX {
            let holds = "(key, window)s whose rows were over the cap";
            crate::unconnected::declare(&overflow, &name, "overflow", holds);
        }
        let overflow_count = Rc::new(Cell::new(0u64));
        let counter = overflow_count.clone();
        let capped = max_rows < usize::MAX;
        // A capped join's records waiting for a checkpoint: an overflow capability per time.
        let mut over_caps: BTreeMap<T, Capability<T>> = BTreeMap::new();

        let mut windows: Windows<T, K, A, B> = Windows {
            open: BTreeMap::new(),
            max_rows,
            kind,
            logging: false,
            changed: Vec::new(),
            closed_through: 0,
            restored_through: 0,
        };
        let checkpoints = Checkpoints::current();

        let held = crate::checkpoint::hold_output(checkpoints.as_ref(), &mut builder);
        builder.build(move |initial| {
            let mut aligner = checkpoints.map(|ctx| {
                let mut aligner = Aligner::new(ctx, &name, &initial[held]).waking(wake);
                windows.logging = true;
                restore(&mut windows, &mut aligner, &initial, size);
                aligner
            });
            move |frontiers| {
                let mut output = output.activate();
                let mut overflow_out = overflow_out.activate();
                input_a.for_each_stamp(|cap, batches| {
                    let Some(time) = time_of(&cap) else {
                        return;
                    };
                    let records = batches.flat_map(|b| b.drain(..));
                    if windows.behind(&time, size) {
                        if let Some(a) = aligner.as_ref() {
                            a.checkpoints()
                                .dropped_behind(&name, records.count() as u64);
                        }
                        return;
                    }
                    match aligner.as_mut().filter(|a| a.later(&time)) {
                        Some(a) => {
                            let mut records = records.map(Side::Left).collect();
                            a.stash(time, || cap.delayed(&time, 0), &mut records);
                            if capped {
                                over_caps
                                    .entry(time)
                                    .or_insert_with(|| cap.delayed(&time, 1));
                            }
                        }
                        None => {
                            let over_cap = |t: &T| Some(cap.delayed(t, 1));
                            let w = &mut windows;
                            file(w, &cap, &over_cap, time, records, size, &*key_a, left_side)
                        }
                    }
                });
                input_b.for_each_stamp(|cap, batches| {
                    let Some(time) = time_of(&cap) else {
                        return;
                    };
                    let records = batches.flat_map(|b| b.drain(..));
                    if windows.behind(&time, size) {
                        if let Some(a) = aligner.as_ref() {
                            a.checkpoints()
                                .dropped_behind(&name, records.count() as u64);
                        }
                        return;
                    }
                    match aligner.as_mut().filter(|a| a.later(&time)) {
                        Some(a) => {
                            let mut records = records.map(Side::Right).collect();
                            a.stash(time, || cap.delayed(&time, 0), &mut records);
                            if capped {
                                over_caps
                                    .entry(time)
                                    .or_insert_with(|| cap.delayed(&time, 1));
                            }
                        }
                        None => {
                            let over_cap = |t: &T| Some(cap.delayed(t, 1));
                            let w = &mut windows;
                            file(w, &cap, &over_cap, time, records, size, &*key_b, right_side)
                        }
                    }
                });

                // Each checkpoint epoch the inputs have sealed, in turn: file what waited for it,
                // write the open windows, and move what they hold to the next epoch.
                if let Some(a) = aligner.as_mut() {
                    let file = |windows: &mut _, released, over_caps: &mut _| {
                        file_released(windows, released, over_caps, size, &*key_a, &*key_b)
                    };
                    while let Some(epoch) = a.due(frontiers) {
                        file(&mut windows, a.release(epoch), &mut over_caps);
                        checkpoint(&mut windows, a, epoch);
                        for (caps, _, over) in windows.open.values_mut() {
                            lift_epochs(caps, epoch);
                            lift_epochs(over, epoch);
                        }
                        let next = a.next();
                        file(&mut windows, a.release(next), &mut over_caps);
                    }
                    file(&mut windows, a.release_if_done(frontiers), &mut over_caps);
                }

                // Records waiting for a checkpoint may still fall in windows the
                // frontier alone would close.
                let frontier = watermark(frontiers);
                let watermark = aligner
                    .as_ref()
                    .map_or(frontier, |a| frontier.min(a.stashed_from()));
                if let Some(a) = aligner.as_mut() {
                    a.settle(frontier);
                }
                windows.closed_through = windows.closed_through.max(watermark);
                while let Some(entry) = windows.open.first_entry() {
                    let start = *entry.key();
                    let end = start.saturating_add(size);
                    if end > watermark {
                        break;
                    }
                    let (caps, sides, over) = entry.remove();
                    let Some(cap) = emission_cap(&caps, end - 1) else {
                        continue;
                    };
                    let mut session = output.session(&cap);
                    let mut reports = Vec::new();
                    let row =
                        |k: &K, value| Windowed::new(k.clone(), start, end, value, 0, Emit::Final);
                    for (k, sides) in sides {
                        let limit = max_rows as u64;
                        let mut emitted = 0u64;
                        'rows: for a in &sides.left {
                            if sides.right.is_empty() && kind == JoinKind::Left {
                                if emitted == limit {
                                    break 'rows;
                                }
                                session.give(row(&k, result(&k, a, None)));
                                emitted += 1;
                            }
                            for b in &sides.right {
                                if emitted == limit {
                                    break 'rows;
                                }
                                session.give(row(&k, result(&k, a, Some(b))));
                                emitted += 1;
                            }
                        }
                        let rows = sides.rows(kind);
                        if rows > emitted {
                            let (left, right) = sides.counts();
                            reports.push(JoinOverflow {
                                key: k,
                                start,
                                end,
                                left,
                                right,
                                rows,
                                emitted,
                            });
                        }
                    }
                    drop(session);
                    if let Some(cap) = emission_cap(&over, end - 1) {
                        counter.set(counter.get() + reports.len() as u64);
                        overflow_out
                            .session(&cap)
                            .give_iterator(reports.into_iter());
                    } else {
                        debug_assert!(reports.is_empty(), "an overflow without its capability");
                    }
                }
            }
        });
        JoinStreams {
            rows: stream,
            overflow,
            overflow_count,
        }
    }
}
