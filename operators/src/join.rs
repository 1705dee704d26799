//! Keyed window joins: records of two streams with the same key in the same tumbling
//! event-time window are paired.
//!
//! Both inputs are exchanged by key. Per window the operator keeps each key's records
//! of both sides and holds a capability at `(end - 1, e_min)` over both inputs' records
//! (like [`crate::tumble`]); when the event-time watermark over both inputs reaches the
//! window's end it emits every pair there (and, for a left join, each left record
//! without a partner once, with `None`), then drops the window.
//!
//! Under checkpoints (see [`crate::checkpoint`]) records of epochs after the next
//! checkpoint epoch wait in the operator's [`Aligner`] until that epoch is sealed; then
//! the part — the open windows' starts, whole, and each `(window, key)` whose records
//! changed since the operator's previous part (every one in a full part) — is written
//! and, once durable, every window's capability moves to the epoch after the
//! checkpoint. A closed window's entries are not removed one by one: on restore an
//! entry of a window not listed as open belongs to a window closed since (no record
//! can fall in a closed window again: its end is at or below the watermark). Restored
//! windows hold `(end - 1, C + 1)`.

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
use crate::checkpoint::{lift_epochs, Aligner, Checkpoints};
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

/// One key's records of one window: left and right.
struct Sides<A, B> {
    left: Vec<A>,
    right: Vec<B>,
    /// Listed in [`Windows::changed`] since the last checkpoint.
    logged: bool,
}

impl<A, B> Default for Sides<A, B> {
    fn default() -> Self {
        Sides {
            left: Vec::new(),
            right: Vec::new(),
            logged: false,
        }
    }
}

/// Open windows by start: the capability for the result, and per key the records of
/// the left and the right side.
type Open<T, K, A, B> = BTreeMap<u64, (CapabilitySet<T>, FxHashMap<K, Sides<A, B>>)>;

/// The open windows, and which of their entries changed since the last checkpoint.
struct Windows<T: EventTime, K, A, B> {
    open: Open<T, K, A, B>,
    /// Whether changes are tracked for incremental checkpoints.
    logging: bool,
    /// `(start, key)` of the entries changed since the last checkpoint.
    changed: Vec<(u64, K)>,
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

/// Files one side's records of a message at `time` (`side` picks the side) under their
/// key in the message's tumbling window, holding the window's capability at
/// `(end - 1, e)`.
fn file<T: EventTime, K: Hash + Eq, A, B, X>(
    windows: &mut Windows<T, K, A, B>,
    cap: &impl Mint<T>,
    time: T,
    records: impl IntoIterator<Item = X>,
    size: u64,
    key: impl Fn(&X) -> K,
    side: fn(&mut Sides<A, B>) -> &mut Vec<X>,
) {
    let start = tumbling_start(time.event(), size);
    let (caps, sides) = windows.open.entry(start).or_default();
    hold(
        caps,
        cap,
        time.with_event(start.saturating_add(size) - 1),
        0,
    );
    for record in records {
        let kept = sides.entry(key(&record)).or_default();
        if windows.logging && !kept.logged {
            kept.logged = true;
            windows.changed.push((start, key(&record)));
        }
        side(kept).push(record);
    }
}

/// Files records that waited for a checkpoint, in time order.
fn file_released<T: EventTime, K: Hash + Eq, A, B>(
    windows: &mut Windows<T, K, A, B>,
    released: Released<T, A, B>,
    size: u64,
    key_a: &impl Fn(&A) -> K,
    key_b: &impl Fn(&B) -> K,
) {
    for (cap, records) in released {
        let time = *cap.time();
        let (mut left, mut right) = (Vec::new(), Vec::new());
        for record in records {
            match record {
                Side::Left(a) => left.push(a),
                Side::Right(b) => right.push(b),
            }
        }
        file(windows, &cap, time, left, size, key_a, |s| &mut s.left);
        file(windows, &cap, time, right, size, key_b, |s| &mut s.right);
    }
}

/// One `(window, key)` as a checkpoint entry: keyed by `(start, key)`, valued by the
/// key's records of both sides.
type SidesEntry<K, A, B> = ((u64, K), (Vec<A>, Vec<B>));

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
    let changed = std::mem::take(&mut windows.changed);
    let open = &windows.open;
    fn view<A, B>(s: &Sides<A, B>) -> (&Vec<A>, &Vec<B>) {
        (&s.left, &s.right)
    }
    aligner.write_log(epoch, starts, |full| {
        if full {
            open.iter()
                .flat_map(|(start, (_, keys))| {
                    keys.iter().map(move |(k, s)| ((*start, k), Some(view(s))))
                })
                .collect()
        } else {
            changed
                .iter()
                .map(|(start, k)| {
                    let sides = open.get(start).and_then(|(_, keys)| keys.get(k));
                    ((*start, k), sides.map(view))
                })
                .collect()
        }
    });
    for (start, k) in &changed {
        if let Some(s) = windows
            .open
            .get_mut(start)
            .and_then(|(_, keys)| keys.get_mut(k))
        {
            s.logged = false;
        }
    }
    windows.changed = changed;
    windows.changed.clear();
}

/// Loads the restored checkpoint's parts, keeping the keys this worker owns in the
/// windows open at the checkpoint, each window holding `(end - 1, C + 1)` (minted from
/// `initial`).
fn restore<T: EventTime, K, A, B>(
    windows: &mut Windows<T, K, A, B>,
    aligner: &Aligner<T, Side<A, B>>,
    initial: &Capability<T>,
    size: u64,
) where
    K: Hash + Eq + DeserializeOwned,
    A: DeserializeOwned,
    B: DeserializeOwned,
{
    let ctx = aligner.checkpoints();
    let Some((epoch, parts)) = aligner.restored_log::<Vec<u64>, (u64, K), (Vec<A>, Vec<B>)>()
    else {
        return;
    };
    for (starts, entries) in parts {
        let starts: BTreeSet<u64> = starts.into_iter().collect();
        let entries: Vec<SidesEntry<K, A, B>> = entries;
        for ((start, k), (left, right)) in entries {
            // An entry of a window closed since, or of a key another worker owns.
            if !starts.contains(&start) || !ctx.owns(hash(&k)) {
                continue;
            }
            let (caps, sides) = windows.open.entry(start).or_default();
            let kept = sides.entry(k).or_default();
            kept.left.extend(left);
            kept.right.extend(right);
            if caps.is_empty() {
                let end = start.saturating_add(size);
                let at = initial.time().with_event(end - 1);
                caps.insert(initial.delayed(&at.with_epoch(epoch)));
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

        let name = format!("WindowJoin({name}, {size}ms)");
        let mut builder = OperatorBuilder::new(name.clone(), self.scope());
        let wake = self
            .scope()
            .worker()
            .sync_activator_for(builder.operator_info().address.to_vec());
        let mut input_a = builder.new_input(self, pact_a);
        let mut input_b = builder.new_input(other, pact_b);
        let (output, stream) = builder.new_output();
        let mut output: VecOutput<T, Windowed<K, R>> = OutputBuilder::from(output);

        let mut windows: Windows<T, K, A, B> = Windows {
            open: BTreeMap::new(),
            logging: false,
            changed: Vec::new(),
        };
        let checkpoints = Checkpoints::current();

        builder.build(move |initial| {
            let mut aligner = checkpoints.map(|ctx| {
                let aligner = Aligner::new(ctx, &name, &initial[0]).waking(wake);
                windows.logging = true;
                restore(&mut windows, &aligner, &initial[0], size);
                aligner
            });
            move |frontiers| {
                let mut output = output.activate();
                input_a.for_each_stamp(|cap, batches| {
                    let Some(time) = time_of(&cap) else {
                        return;
                    };
                    let records = batches.flat_map(|b| b.drain(..));
                    match aligner.as_mut().filter(|a| a.later(&time)) {
                        Some(a) => {
                            let mut records = records.map(Side::Left).collect();
                            a.stash(time, || cap.delayed(&time, 0), &mut records);
                        }
                        None => file(&mut windows, &cap, time, records, size, &*key_a, |s| {
                            &mut s.left
                        }),
                    }
                });
                input_b.for_each_stamp(|cap, batches| {
                    let Some(time) = time_of(&cap) else {
                        return;
                    };
                    let records = batches.flat_map(|b| b.drain(..));
                    match aligner.as_mut().filter(|a| a.later(&time)) {
                        Some(a) => {
                            let mut records = records.map(Side::Right).collect();
                            a.stash(time, || cap.delayed(&time, 0), &mut records);
                        }
                        None => file(&mut windows, &cap, time, records, size, &*key_b, |s| {
                            &mut s.right
                        }),
                    }
                });

                // Each checkpoint epoch the inputs have sealed, in turn: file what waited for it,
                // write the open windows, and move what they hold to the next epoch.
                if let Some(a) = aligner.as_mut() {
                    while let Some(epoch) = a.due(frontiers) {
                        file_released(&mut windows, a.release(epoch), size, &*key_a, &*key_b);
                        checkpoint(&mut windows, a, epoch);
                        for (caps, _) in windows.open.values_mut() {
                            lift_epochs(caps, epoch);
                        }
                        let released = a.release(a.next());
                        file_released(&mut windows, released, size, &*key_a, &*key_b);
                    }
                    let released = a.release_if_done(frontiers);
                    file_released(&mut windows, released, size, &*key_a, &*key_b);
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
                while let Some(entry) = windows.open.first_entry() {
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
                    for (k, Sides { left, right, .. }) in sides {
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
