//! Rolling (OVER) windows: for each record, an aggregate over the records of its key
//! whose event time is in the `range` ms that end at it, `(t - range, t]`, emitted with
//! the record.
//!
//! This is SQL's `OVER (PARTITION BY key ORDER BY time RANGE BETWEEN INTERVAL range
//! PRECEDING AND CURRENT ROW)`: one output per input record, not one per window. Two
//! modes ([`RollingMode`]):
//!
//! * **Exact**: a record at `t` waits, holding its capability, until the watermark
//!   passes `t`, then is emitted at its own time with the aggregate over *every*
//!   on-time record of its key in `(t - range, t]`. Records of a key at the same event
//!   time count each other (SQL's peers), so the result depends on timestamps only.
//!   Latency is bounded below by the source's out-of-orderness.
//! * **On arrival**: a record is emitted at once, at its own time, with the aggregate
//!   over the records of its key in `(t - range, t]` that reached the operator before
//!   it, and itself. No waiting; a record that arrives after a later-stamped one is
//!   not counted by it.
//!
//! Late records (on the second input, see [`Late`]) arriving at `t'` with event time
//! `t_l`: if `t_l + lateness < t'` they go to `too_late`; otherwise, in both modes,
//! each is emitted at `t'` (flagged [`Rolled::late`]) with the aggregate over every
//! on-time record of its key in `(t_l - range, t_l]` and itself, once the main input's
//! watermark has passed `t_l` (in practice at once). A late record is never added to
//! the state: it changes no other record's result.
//!
//! State is kept per key in blocks of about `√range` ms (an accumulator per block and
//! one per distinct event time), so a result merges `O(√range)` accumulators whatever
//! the key's rate; a key whose results span many blocks also keeps, per block, the
//! merge of a run of blocks, and then merges four accumulators plus the panes of the
//! range's first block. Blocks are dropped once the watermark is `range + lateness` past
//! their end. While a block derived from epoch `e` lives, the operator holds a
//! capability at `(watermark, e)`: commits wait for the state, downstream event time
//! does not. See `docs/operators.md`, "Rolling windows".
//!
//! Under checkpoints (see [`crate::checkpoint`]) records of either input of epochs
//! after the next checkpoint epoch wait in the operator's [`Aligner`] until that epoch
//! is sealed (in on-arrival mode too: a record of a later epoch is scored when the
//! checkpoint is taken, not on arrival); then the blocks changed since the last part
//! (or every block), the records waiting for the watermark and the late records
//! waiting make the part, every epoch held for them moves to the epoch after the
//! checkpoint, and the next epoch's records are applied. The changed blocks are
//! collected in steps after that (`docs/architecture.md`, "Rolling windows capture in
//! steps"), and the part shares them with the checkpoint writer thread, which
//! serializes it off the worker (a block written to meanwhile is copied first). Accumulators must therefore be serializable
//! (`Acc: Serialize + DeserializeOwned`) and `Send + Sync`. After a restore, a record
//! read behind the main watermark the restored state had acted on is scored as a late
//! record (see [`crate::checkpoint::restored_through`]).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::hash::Hash;
use std::rc::Rc;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::operator::empty;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use crate::aggregate::{Aggregator, Count};
use crate::capability::{keep, stash, time_of, Mint, VecOutput, Waiting};
use crate::checkpoint::{
    behind, by_event, lift_epoch, lift_time, restore_pending, restored_through, Aligner, Arrival,
    Checkpoints, LateQueues, LogStart, Want,
};
use crate::hash::{by_key, hash};
use crate::held_epochs::HeldEpochs;
use crate::late::Late;
use crate::time::{event_frontier, EventTime};

/// When a rolling window's result is emitted, and from which records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RollingMode {
    /// Once the watermark passes the record's event time: every on-time record of the
    /// key in the range is counted, including all those at the same event time.
    Exact,
    /// At once, from the records of the key that reached the operator before it.
    OnArrival,
}

/// A rolling window's mode and how late a late record may be and still be scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RollingPolicy {
    /// Exact or on arrival.
    pub mode: RollingMode,
    /// A late record with event time `t_l` arriving at `t'` is scored if
    /// `t_l + lateness >= t'`, and goes to `too_late` otherwise (0: all do).
    pub lateness: u64,
}

impl RollingPolicy {
    /// Exact mode, no lateness.
    pub const fn exact() -> Self {
        RollingPolicy {
            mode: RollingMode::Exact,
            lateness: 0,
        }
    }

    /// On-arrival mode, no lateness.
    pub const fn on_arrival() -> Self {
        RollingPolicy {
            mode: RollingMode::OnArrival,
            lateness: 0,
        }
    }

    /// Scores late records up to `ms` behind the time they arrive at (state is kept
    /// `ms` longer for them).
    pub const fn lateness(mut self, ms: u64) -> Self {
        self.lateness = ms;
        self
    }
}

/// A record with the aggregate of its rolling window.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rolled<D, V> {
    /// The record.
    pub record: D,
    /// The aggregate over its key's records in `(t - range, t]`.
    pub value: V,
    /// Whether the record came on the late input (emitted at the time it arrived).
    pub late: bool,
}

/// The outputs of a rolling window.
pub struct RollingStreams<'scope, T: EventTime, D, V> {
    /// One result per record (and per late record not too late).
    pub results: StreamVec<'scope, T, Rolled<D, V>>,
    /// Late records more than `lateness` behind the time they arrived at, emitted then.
    pub too_late: StreamVec<'scope, T, Late<D>>,
    /// How many records this worker emitted on `too_late`.
    pub too_late_count: Rc<Cell<u64>>,
}

/// Extension trait: rolling (OVER) windows over a stream of records.
pub trait Rolling<'scope, T: EventTime, D> {
    /// Emits each record with `agg` over its key's records with event time in
    /// `(t - range, t]`, as `policy` says, scoring late records from `late`.
    ///
    /// Records (and late records) are exchanged by the hash of `key`. `agg` needs a
    /// real [`Aggregator::merge`] and a cloneable accumulator: every built-in
    /// aggregator but `Fold`. A result is read with [`Aggregator::merge_from`]:
    /// override it if your accumulator can be merged without a copy. Results are emitted at the record's own time; late
    /// results at the time the late record arrived.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, Late, Rolling, RollingPolicy};
    /// use freshet_operators::aggregate::Sum;
    ///
    /// let (results, too_late) = timely::example(|scope| {
    ///     let main = vec![('a', 1u64), ('a', 5), ('a', 12)].to_stream(scope)
    ///         .assign_event_time("at", |r: &(char, u64)| r.1);
    ///     // Arriving at event time 20: one 10 ms late (scored), one 16 ms (too late).
    ///     let late = vec![
    ///         Late { event_time: 10, watermark: 20, record: ('a', 10) },
    ///         Late { event_time: 4, watermark: 20, record: ('a', 4) },
    ///     ].to_stream(scope).assign_event_time("late at", |_| 20);
    ///     let r = main.rolling("sum", 10, RollingPolicy::exact().lateness(10), Some(late),
    ///         |r: &(char, u64)| r.0, Sum::new(|r: &(char, u64)| r.1));
    ///     (r.results.capture(), r.too_late.capture())
    /// });
    /// let mut got: Vec<_> = results.extract().into_iter().flat_map(|(_, v)| v)
    ///     .map(|r| (r.record.1, r.value, r.late)).collect();
    /// got.sort();
    /// assert_eq!(got, vec![
    ///     (1, 1, false),
    ///     (5, 1 + 5, false),
    ///     (10, 1 + 5 + 10, true), // (0, 10]: 1, 5 and itself; never counted by others
    ///     (12, 5 + 12, false),    // (2, 12]
    /// ]);
    /// assert_eq!(too_late.extract()[0].1[0].event_time, 4);
    /// ```
    fn rolling<K, G, KF>(
        self,
        name: &str,
        range: u64,
        policy: RollingPolicy,
        late: Option<StreamVec<'scope, T, Late<D>>>,
        key: KF,
        agg: G,
    ) -> RollingStreams<'scope, T, D, G::Out>
    where
        K: ExchangeData + Hash + Eq + Clone,
        G: Aggregator<D>,
        G::Acc: Clone + Send + Sync + Serialize + DeserializeOwned,
        G::Out: 'static,
        KF: Fn(&D) -> K + 'static;

    /// [`Rolling::rolling`] without late input.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, Rolling, RollingMode};
    /// use freshet_operators::aggregate::Max;
    ///
    /// // The largest payment of the same user in the 10 ms up to each payment.
    /// let out = timely::example(|scope| {
    ///     vec![(7u8, 30u64, 1u64), (7, 50, 4), (7, 20, 9), (7, 10, 15), (8, 99, 15)]
    ///         .to_stream(scope)
    ///         .assign_event_time("at", |r: &(u8, u64, u64)| r.2)
    ///         .rolling_aggregate("max", 10, RollingMode::OnArrival,
    ///             |r: &(u8, u64, u64)| r.0, Max::new(|r: &(u8, u64, u64)| r.1))
    ///         .capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v)
    ///     .map(|r| (r.record.2, r.record.0, r.value.unwrap())).collect();
    /// got.sort();
    /// assert_eq!(got, vec![(1, 7, 30), (4, 7, 50), (9, 7, 50), (15, 7, 20), (15, 8, 99)]);
    /// ```
    fn rolling_aggregate<K, G, KF>(
        self,
        name: &str,
        range: u64,
        mode: RollingMode,
        key: KF,
        agg: G,
    ) -> StreamVec<'scope, T, Rolled<D, G::Out>>
    where
        Self: Sized,
        K: ExchangeData + Hash + Eq + Clone,
        G: Aggregator<D>,
        G::Acc: Clone + Send + Sync + Serialize + DeserializeOwned,
        G::Out: 'static,
        KF: Fn(&D) -> K + 'static,
    {
        let policy = RollingPolicy { mode, lateness: 0 };
        self.rolling(name, range, policy, None, key, agg).results
    }

    /// Counts each record's key's records in `(t - range, t]`.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, Rolling, RollingMode};
    ///
    /// let out = timely::example(|scope| {
    ///     (0..6u64).to_stream(scope).assign_event_time("at", |t: &u64| *t)
    ///         .rolling_count("count", 3, RollingMode::Exact, |_: &u64| ())
    ///         .capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v)
    ///     .map(|r| (r.record, r.value)).collect();
    /// got.sort();
    /// assert_eq!(got, vec![(0, 1), (1, 2), (2, 3), (3, 3), (4, 3), (5, 3)]);
    /// ```
    fn rolling_count<K, KF>(
        self,
        name: &str,
        range: u64,
        mode: RollingMode,
        key: KF,
    ) -> StreamVec<'scope, T, Rolled<D, u64>>
    where
        Self: Sized,
        K: ExchangeData + Hash + Eq + Clone,
        KF: Fn(&D) -> K + 'static,
    {
        self.rolling_aggregate(name, range, mode, key, Count)
    }
}

/// The accumulators of one block of `width` ms of a key's records. Shared with the
/// checkpoint part that holds the block (see [`Capture`]) until the writer thread has
/// serialized it, and copied on the next write to it if it still is
/// (`Arc::make_mut`).
#[derive(Clone, Serialize)]
struct Panes<A> {
    /// All the block's records.
    acc: A,
    /// The block's records by event time.
    panes: BTreeMap<u64, A>,
}

/// A block's [`Panes`] in a part: serialized as `(acc, panes)`, the form
/// [`State::restore`] reads.
struct Shared<A>(Arc<Panes<A>>);

impl<A: Serialize> Serialize for Shared<A> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.0.acc, &self.0.panes).serialize(s)
    }
}

/// One block of `width` ms of a key's records.
struct Block<T, A> {
    /// Its accumulators.
    accs: Arc<Panes<A>>,
    /// The meet of the block's records' times, event coordinate zeroed: one debt.
    since: T,
    /// The checkpoint interval ([`State::interval`]) in which it was last listed in
    /// [`State::changed`] (0: not since its last capture). `listed` equal to the part
    /// being captured means its value as of that checkpoint is still to be captured.
    listed: u64,
    /// Its run, if its key's blocks keep runs (see [`Blocks`]). Not checkpointed.
    run: Option<A>,
}

const NO_RUN: &str = "every block has a run while its key keeps runs";

impl<T, A> Block<T, A> {
    fn run(&self) -> &A {
        self.run.as_ref().expect(NO_RUN)
    }

    fn run_mut(&mut self) -> &mut A {
        self.run.as_mut().expect(NO_RUN)
    }
}

/// The number of blocks a result must span for its key to keep runs (see [`Blocks`]):
/// fewer are merged one by one.
const RUNS_FROM: usize = 32;

/// A key's blocks, by block index in a sorted deque: a query reads a run of them from
/// contiguous memory, new blocks come at the back and old ones leave at the front.
///
/// A key whose results span at least [`RUNS_FROM`] blocks also keeps *runs*, split at
/// a block index `s`: a block at or before `s` carries the merge of the blocks from it
/// through `s`, a block after `s` the merge of the blocks after `s` through it. The
/// blocks from `a` through `b`, `a <= s < b`, are then two merges whatever their
/// number. A record added to a block is added to the runs from it to its side's end
/// (for the newest block: its own); the oldest block may leave. Anything else (a
/// restore, the last block before `s` leaving) makes the runs stale, and a query
/// that finds them stale, or its oldest block past `s`, builds them again split in the
/// middle of its blocks: about once per half range of event time per key.
struct Blocks<B> {
    list: VecDeque<(u64, B)>,
    /// Where the runs are split, if they are up to date.
    split: Option<u64>,
}

impl<B> Default for Blocks<B> {
    fn default() -> Self {
        Blocks {
            list: VecDeque::new(),
            split: None,
        }
    }
}

impl<B> Blocks<B> {
    /// Where block `index` is (`Ok`), or would go (`Err`).
    #[inline]
    fn search(&self, index: u64) -> Result<usize, usize> {
        // Most lookups are for the newest blocks.
        if self.list.back().is_some_and(|(last, _)| *last < index) {
            return Err(self.list.len());
        }
        let at = self.position(index);
        match self.list.get(at) {
            Some((i, _)) if *i == index => Ok(at),
            _ => Err(at),
        }
    }

    /// The number of blocks up to block `index`, itself included.
    #[inline]
    fn position_after(&self, index: u64) -> usize {
        match self.search(index) {
            Ok(at) => at + 1,
            Err(at) => at,
        }
    }

    /// The number of blocks before block `index`.
    #[inline]
    fn position(&self, index: u64) -> usize {
        let n = self.list.len();
        let (Some((first, _)), Some((last, _))) = (self.list.front(), self.list.back()) else {
            return 0;
        };
        if index <= *first {
            return 0;
        }
        if index > *last {
            return n;
        }
        // Galloping from the nearer end, as a window's ends are near the ends of the
        // blocks: `lo` is before `index`, `hi` is not.
        let (mut lo, mut hi) = (0, n - 1);
        let mut step = 1;
        if index - first <= last - index {
            while lo + step < hi && self.list[lo + step].0 < index {
                lo += step;
                step *= 2;
            }
            hi = hi.min(lo + step);
        } else {
            while hi - lo > step && self.list[hi - step].0 >= index {
                hi -= step;
                step *= 2;
            }
            lo = lo.max(hi.saturating_sub(step));
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.list[mid].0 < index {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    }

    fn get_mut(&mut self, index: u64) -> Option<&mut B> {
        let at = self.search(index).ok()?;
        Some(&mut self.list[at].1)
    }

    /// Adds block `index` at the back, in any order: [`Blocks::sort`] must follow.
    fn push_unsorted(&mut self, index: u64, block: B) {
        self.split = None;
        self.list.push_back((index, block));
    }

    /// Sorts blocks pushed by [`Blocks::push_unsorted`] (each index pushed once).
    fn sort(&mut self) {
        self.list
            .make_contiguous()
            .sort_unstable_by_key(|(i, _)| *i);
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut B)> {
        self.list.iter_mut().map(|(i, b)| (*i, b))
    }

    fn remove(&mut self, index: u64) -> Option<B> {
        let at = self.search(index).ok()?;
        // No run before the split includes an older block than its own: the oldest
        // block may leave them. Every run after the split includes the first one.
        if at != 0 || self.split.is_some_and(|s| index > s) {
            self.split = None;
        }
        self.list.remove(at).map(|(_, b)| b)
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

impl<T, A: Clone> Blocks<Block<T, A>> {
    /// Block `index`, made by `new` (holding `record`) if there is none, with `record`
    /// added to the runs that include it; and whether it is new. The caller adds
    /// `record` to an older block's accumulators.
    fn add_run<D, G: Aggregator<D, Acc = A>>(
        &mut self,
        agg: &G,
        index: u64,
        record: &D,
        new: impl FnOnce() -> Block<T, A>,
    ) -> (&mut Block<T, A>, bool) {
        let (at, fresh) = match self.search(index) {
            Ok(at) => (at, false),
            Err(at) => {
                let mut block = new();
                if let Some(split) = self.split {
                    // Its run before the record: its neighbour's on its side of the
                    // split, toward it.
                    let neighbour = if index > split {
                        at.checked_sub(1)
                    } else {
                        Some(at)
                    };
                    block.run = Some(match neighbour.and_then(|p| self.list.get(p)) {
                        Some((i, b)) if (*i > split) == (index > split) => b.run().clone(),
                        _ => agg.create(),
                    });
                }
                self.list.insert(at, (index, block));
                (at, true)
            }
        };
        if let Some(split) = self.split {
            let side = if index > split {
                self.list.range_mut(at..)
            } else {
                self.list.range_mut(..=at)
            };
            for (_, block) in side {
                agg.add(block.run_mut(), record);
            }
        }
        (&mut self.list[at].1, fresh)
    }

    /// Merges into `acc` the records of block `index` with event time in `[lo, hi]`.
    fn merge_edge<D, G: Aggregator<D, Acc = A>>(
        &self,
        agg: &G,
        acc: &mut A,
        index: u64,
        lo: u64,
        hi: u64,
    ) {
        let Ok(at) = self.search(index) else {
            return;
        };
        let accs = &self.list[at].1.accs;
        let whole = accs.panes.first_key_value().is_some_and(|(t, _)| lo <= *t)
            && accs.panes.last_key_value().is_some_and(|(t, _)| *t <= hi);
        if whole {
            agg.merge_from(acc, &accs.acc);
        } else {
            for (_, pane) in accs.panes.range(lo..=hi) {
                agg.merge_from(acc, pane);
            }
        }
    }

    /// Merges into `acc` all the records of the blocks with index in `[a, b]`.
    fn merge_whole<D, G: Aggregator<D, Acc = A>>(&mut self, agg: &G, acc: &mut A, a: u64, b: u64) {
        let from = self.position(a);
        let to = self.position_after(b);
        let split = match self.split {
            _ if to.saturating_sub(from) < RUNS_FROM => None,
            Some(s) if a <= s && s < b => Some(s),
            // Older than the split (a late record's, or far behind): one by one.
            Some(s) if b <= s => None,
            _ => {
                let s = a + (b - a) / 2;
                self.build_runs(agg, s);
                Some(s)
            }
        };
        let Some(split) = split else {
            for (_, block) in self.list.range(from..to) {
                agg.merge_from(acc, &block.accs.acc);
            }
            return;
        };
        let mid = self.position_after(split);
        if from < mid {
            agg.merge_from(acc, self.list[from].1.run());
        }
        if mid < to {
            agg.merge_from(acc, self.list[to - 1].1.run());
        }
    }

    /// Builds every block's run, split at `split`.
    fn build_runs<D, G: Aggregator<D, Acc = A>>(&mut self, agg: &G, split: u64) {
        let mid = self.position_after(split);
        let mut run = agg.create();
        for (_, block) in self.list.range_mut(..mid).rev() {
            agg.merge_from(&mut run, &block.accs.acc);
            block.run = Some(run.clone());
        }
        let mut run = agg.create();
        for (_, block) in self.list.range_mut(mid..) {
            agg.merge_from(&mut run, &block.accs.acc);
            block.run = Some(run.clone());
        }
        self.split = Some(split);
    }
}

/// One block as an entry of a part: `None` if it was dropped.
type PartEntry<K, A> = ((K, u64), Option<Shared<A>>);

/// A part captured: its start, its entries and the lists of blocks it no longer needs.
type Captured<K, A> = (LogStart, Vec<PartEntry<K, A>>, Vec<Vec<(K, u64)>>);

/// The part of the checkpoint ending interval `part`, captured in steps after the
/// checkpoint (see [`State::begin_capture`]) while the worker goes on: the blocks
/// changed in the interval are captured one [`Checkpoints::capture_step`] at a time,
/// and a block that is about to change or be dropped before its turn is captured
/// first, so every value is the one it had at the checkpoint.
struct Capture<K, A> {
    part: u64,
    start: LogStart,
    /// The blocks changed in the interval; those before `next` are captured.
    todo: Vec<(K, u64)>,
    next: usize,
    entries: Vec<PartEntry<K, A>>,
    /// Lists of blocks no longer needed, dropped off the worker with the part.
    spent: Vec<Vec<(K, u64)>>,
}

/// A block's `since` as lifted past checkpoint epoch `lifted` (see [`State::lift`]).
#[inline]
fn lifted<T: EventTime>(since: T, lifted: Option<u64>) -> T {
    lifted.map_or(since, |epoch| lift_time(since, epoch))
}

/// Every key's blocks, when to drop them, and the capabilities held for them.
struct State<K, T: EventTime, A> {
    width: u64,
    keys: FxHashMap<K, Blocks<Block<T, A>>>,
    /// The last checkpoint epoch the blocks' `since` was lifted past (see
    /// [`State::lift`]): a block's `since` is read through [`lifted`].
    lifted: Option<u64>,
    /// Keys with a block, by the block's last event time.
    expiry: BTreeMap<u64, Vec<K>>,
    debts: HeldEpochs<T>,
    /// Whether changes are tracked for incremental checkpoints.
    logging: bool,
    /// The number of the current checkpoint interval (from 1), one per part.
    interval: u64,
    /// `(key, index)` of the blocks changed in this interval.
    changed: Vec<(K, u64)>,
    /// `(key, index)` of the blocks dropped in this interval.
    removed: Vec<(K, u64)>,
    capture: Option<Capture<K, A>>,
    /// The main watermark the operator had acted on (written in checkpoints).
    closed_through: u64,
    /// After a restore, the restored `closed_through` (see
    /// [`crate::checkpoint::restored_through`]); 0 otherwise.
    restored_through: u64,
}

impl<K: Hash + Eq + Clone, T: EventTime, A: Clone> State<K, T, A> {
    /// Adds `record`, at event time `t` of `time`, to `key`'s state. Returns the time
    /// (at event `t`) of an epoch now owed, to be owed before the epoch it replaces,
    /// also returned, is paid.
    fn add<D, G: Aggregator<D, Acc = A>>(
        &mut self,
        agg: &G,
        key: &K,
        t: u64,
        time: &T,
        record: &D,
    ) -> (Option<T>, Option<T>) {
        let index = t / self.width;
        let blocks = match self.keys.get_mut(key) {
            Some(blocks) => blocks,
            None => self.keys.entry(key.clone()).or_default(),
        };
        let epoch = time.with_event(0);
        let listed = if self.logging { self.interval } else { 0 };
        let (block, fresh) = blocks.add_run(agg, index, record, || {
            let mut acc = agg.create();
            agg.add(&mut acc, record);
            let mut pane = agg.create();
            agg.add(&mut pane, record);
            Block {
                accs: Arc::new(Panes {
                    acc,
                    panes: BTreeMap::from([(t, pane)]),
                }),
                since: epoch,
                listed,
                run: None,
            }
        });
        if fresh {
            if self.logging {
                self.changed.push((key.clone(), index));
            }
            let last = index
                .saturating_mul(self.width)
                .saturating_add(self.width - 1);
            self.expiry.entry(last).or_default().push(key.clone());
            return (Some(epoch.with_event(t)), None);
        }
        if self.logging && block.listed != self.interval {
            // Its value at the checkpoint is still to be captured: now, first.
            if let Some(c) = self.capture.as_mut().filter(|c| block.listed == c.part) {
                c.entries
                    .push(((key.clone(), index), Some(Shared(block.accs.clone()))));
            }
            block.listed = self.interval;
            self.changed.push((key.clone(), index));
        }
        let accs = Arc::make_mut(&mut block.accs);
        agg.add(&mut accs.acc, record);
        agg.add(accs.panes.entry(t).or_insert_with(|| agg.create()), record);
        let old = lifted(block.since, self.lifted);
        let since = old.meet(&epoch);
        if since == old {
            (None, None)
        } else {
            block.since = since;
            (Some(since.with_event(t)), Some(old))
        }
    }

    /// Adds records of one message at `time` (covered by `cap`) in the order received
    /// and emits each with its range's aggregate so far (on-arrival mode).
    #[allow(clippy::too_many_arguments)]
    fn arrive<D, G: Aggregator<D, Acc = A>>(
        &mut self,
        agg: &G,
        time: T,
        cap: &impl Mint<T>,
        records: Vec<D>,
        key: &impl Fn(&D) -> K,
        range: u64,
        emit: &mut impl FnMut(Rolled<D, G::Out>),
    ) {
        let t = time.event();
        for record in records {
            let k = key(&record);
            let (owe, pay) = self.add(agg, &k, t, &time, &record);
            if let Some(at) = owe {
                // `t` is at or above the last settled watermark.
                self.debts.owe(&at, cap, 0);
            }
            if let Some(old) = pay {
                self.debts.pay(&old);
            }
            let acc = self.query(agg, &k, window_start(t, range), t);
            emit(Rolled {
                value: agg.finish(&acc),
                record,
                late: false,
            });
        }
    }

    /// `key`'s records with event time in `[lo, hi]`, aggregated.
    fn query<D, G: Aggregator<D, Acc = A>>(&mut self, agg: &G, key: &K, lo: u64, hi: u64) -> A {
        let mut acc = agg.create();
        let Some(blocks) = self.keys.get_mut(key) else {
            return acc;
        };
        let (first, last) = (lo / self.width, hi / self.width);
        blocks.merge_edge(agg, &mut acc, first, lo, hi);
        if last > first {
            blocks.merge_edge(agg, &mut acc, last, lo, hi);
        }
        if last > first + 1 {
            blocks.merge_whole(agg, &mut acc, first + 1, last - 1);
        }
        acc
    }

    /// Drops the blocks whose records are all at or before `bound`.
    fn evict(&mut self, bound: u64) {
        while let Some(entry) = self.expiry.first_entry() {
            if *entry.key() > bound {
                break;
            }
            let index = *entry.key() / self.width;
            for k in entry.remove() {
                let Some(blocks) = self.keys.get_mut(&k) else {
                    continue;
                };
                if let Some(block) = blocks.remove(index) {
                    self.debts.pay(&lifted(block.since, self.lifted));
                    if self.logging {
                        // Its value at the checkpoint is still to be captured: now.
                        if let Some(c) = self.capture.as_mut().filter(|c| block.listed == c.part) {
                            c.entries
                                .push(((k.clone(), index), Some(Shared(block.accs))));
                        }
                        self.removed.push((k.clone(), index));
                    }
                }
                if blocks.is_empty() {
                    self.keys.remove(&k);
                }
            }
        }
    }
}

impl<K: Hash + Eq + Clone, T: EventTime, A> State<K, T, A> {
    /// Every epoch `<= epoch` held for a block moves to `epoch + 1`: the checkpoint of
    /// `epoch` answers for it. The blocks are not walked: checkpoint epochs only grow,
    /// lifting past one lifts past every earlier one, and a block added since has a
    /// later epoch, so each block's `since` is lifted past the last one when it is read
    /// ([`lifted`]).
    fn lift(&mut self, epoch: u64) {
        self.lifted = Some(self.lifted.map_or(epoch, |l| l.max(epoch)));
        self.debts.lift(epoch);
    }

    /// Captures up to `budget` more of the part being captured; returns it once it is
    /// complete.
    fn capture_step(&mut self, budget: usize) -> Option<Captured<K, A>> {
        let c = self.capture.as_mut()?;
        let end = c.todo.len().min(c.next.saturating_add(budget));
        for (k, i) in &c.todo[c.next..end] {
            let Some(block) = self.keys.get_mut(k).and_then(|bs| bs.get_mut(*i)) else {
                // Dropped in the interval: among the part's dropped blocks.
                continue;
            };
            if block.listed == c.part {
                block.listed = 0;
                c.entries
                    .push(((k.clone(), *i), Some(Shared(block.accs.clone()))));
            }
        }
        c.next = end;
        if c.next < c.todo.len() {
            return None;
        }
        let mut c = self.capture.take().expect("a capture");
        c.spent.push(c.todo);
        Some((c.start, c.entries, c.spent))
    }

    /// Whether a capture still has work left.
    fn capturing(&self) -> bool {
        self.capture.is_some()
    }

    /// Begins the part `start` of the checkpoint ending this interval: a full part is
    /// captured at once and returned; else the part is captured in steps
    /// ([`State::capture_step`]). The part before must be complete.
    fn begin_capture(&mut self, start: LogStart) -> Option<Captured<K, A>> {
        assert!(self.capture.is_none(), "the last part is captured");
        let part = self.interval;
        self.interval += 1;
        let removed = std::mem::take(&mut self.removed);
        let changed = std::mem::take(&mut self.changed);
        if start.want() == Want::All {
            // A full part needs neither list: both are freed off the worker.
            let spent = vec![changed, removed];
            let mut entries = Vec::new();
            for (k, blocks) in self.keys.iter_mut() {
                for (i, block) in blocks.iter_mut() {
                    block.listed = 0;
                    entries.push(((k.clone(), i), Some(Shared(block.accs.clone()))));
                }
            }
            return Some((start, entries, spent));
        }
        let entries = removed.into_iter().map(|k| (k, None)).collect();
        self.capture = Some(Capture {
            part,
            start,
            todo: changed,
            next: 0,
            entries,
            spent: Vec::new(),
        });
        None
    }
}

/// Sends the late records read at `time` that are more than `lateness` behind it to
/// `too_late` (counted), and puts the others where they wait: stashed for the next
/// checkpoint if `time` is of a later epoch, else by their own event time until the
/// main watermark passes it, under a capability for `time` from `cap`.
fn take_late<T: EventTime, D>(
    time: T,
    cap: &impl Mint<T>,
    records: impl IntoIterator<Item = Late<D>>,
    lateness: u64,
    mut too_late: impl FnMut(Late<D>),
    counter: &Cell<u64>,
    (aligner, pending): LateQueues<'_, T, D, D>,
) {
    let now = time.event();
    let later = aligner.as_ref().is_some_and(|a| a.later(&time));
    let mut kept = Vec::new();
    for record in records {
        if record.event_time.saturating_add(lateness) < now {
            counter.set(counter.get() + 1);
            too_late(record);
        } else if later {
            kept.push(Arrival::Late(record));
        } else {
            let (_, records) = pending
                .entry((record.event_time, time))
                .or_insert_with(|| (cap.mint(&time, 0), Vec::new()));
            records.push(record.record);
        }
    }
    if let Some(a) = aligner.filter(|_| !kept.is_empty()) {
        a.stash(time, || cap.mint(&time, 0), &mut kept);
    }
}

/// The state that is not keyed, written whole in every part: the records waiting for
/// the watermark (exact mode) at their time, the late records waiting, by `(their
/// event time, time)`, and the main watermark the operator had acted on.
type Extra<T, D> = (Vec<(T, Vec<D>)>, Vec<(u64, T, Vec<D>)>, u64);

/// One block as a checkpoint entry: keyed by `(key, index)`, valued by its accumulator
/// and panes.
type BlockEntry<K, A> = ((K, u64), (A, BTreeMap<u64, A>));

/// The unkeyed part of a checkpoint: the records waiting and the watermark acted on,
/// cloned at the checkpoint.
fn extra<T: EventTime, D: Clone>(
    waiting: &Waiting<T, D>,
    pending: &Waiting<T, D>,
    closed_through: u64,
) -> Extra<T, D> {
    (
        waiting
            .iter()
            .map(|((_, t), (_, d))| (*t, d.clone()))
            .collect(),
        pending
            .iter()
            .map(|((e, t), (_, d))| (*e, *t, d.clone()))
            .collect(),
        closed_through,
    )
}

impl<K: Hash + Eq + Clone + DeserializeOwned, T: EventTime, A: DeserializeOwned> State<K, T, A> {
    /// Loads the restored checkpoint's parts, keeping the keys this worker owns, each
    /// block and waiting batch holding (from `initial`) the epoch after the checkpoint.
    fn restore<D: DeserializeOwned>(
        &mut self,
        aligner: &Aligner<T, Arrival<D>>,
        initial: &Capability<T>,
        waiting: &mut Waiting<T, D>,
        pending: &mut Waiting<T, D>,
        key: &impl Fn(&D) -> K,
    ) {
        let ctx = aligner.checkpoints();
        let Some((epoch, parts)) =
            aligner.restored_log::<Extra<T, D>, (K, u64), (A, BTreeMap<u64, A>)>()
        else {
            return;
        };
        let since = initial.time().with_epoch(epoch);
        let through: Vec<u64> = parts.iter().map(|(extra, _)| extra.2).collect();
        self.restored_through = restored_through(ctx, &through);
        self.closed_through = self.restored_through;
        for ((main, late, _), blocks) in parts {
            let blocks: Vec<BlockEntry<K, A>> = blocks;
            for ((k, index), (acc, panes)) in
                blocks.into_iter().filter(|((k, _), _)| ctx.owns(hash(k)))
            {
                self.debts.owe(&since, initial, 0);
                let last = index
                    .saturating_mul(self.width)
                    .saturating_add(self.width - 1);
                self.expiry.entry(last).or_default().push(k.clone());
                let block = Block {
                    accs: Arc::new(Panes { acc, panes }),
                    since,
                    listed: 0,
                    run: None,
                };
                // In the order the parts list them: sorted below.
                self.keys.entry(k).or_default().push_unsorted(index, block);
            }
            restore_pending(waiting, by_event(main), ctx, initial, epoch, key);
            restore_pending(pending, late, ctx, initial, epoch, key);
        }
        for blocks in self.keys.values_mut() {
            // A block is in one part only: its key's owner's when it was written.
            blocks.sort();
        }
    }
}

/// Records at one time, keyed, ready to be added and emitted under their capability.
type Ready<T, K, D> = (Capability<T>, Vec<(K, D)>);

/// The first event time of the window `(t - range, t]`.
#[inline]
fn window_start(t: u64, range: u64) -> u64 {
    t.saturating_add(1).saturating_sub(range)
}

impl<'scope, T: EventTime, D: ExchangeData + Clone> Rolling<'scope, T, D>
    for StreamVec<'scope, T, D>
{
    fn rolling<K, G, KF>(
        self,
        name: &str,
        range: u64,
        policy: RollingPolicy,
        late: Option<StreamVec<'scope, T, Late<D>>>,
        key: KF,
        agg: G,
    ) -> RollingStreams<'scope, T, D, G::Out>
    where
        K: ExchangeData + Hash + Eq + Clone,
        G: Aggregator<D>,
        G::Acc: Clone + Send + Sync + Serialize + DeserializeOwned,
        G::Out: 'static,
        KF: Fn(&D) -> K + 'static,
    {
        assert!(range > 0, "rolling range must be at least 1 ms");
        let scope = self.scope();
        // Without a late input no record can use state kept for it.
        let lateness = if late.is_some() { policy.lateness } else { 0 };
        let mode = policy.mode;
        let name = match (mode, lateness) {
            (RollingMode::Exact, 0) => format!("Rolling({name}, {range}ms exact)"),
            (RollingMode::OnArrival, 0) => format!("Rolling({name}, {range}ms on arrival)"),
            (RollingMode::Exact, l) => {
                format!("Rolling({name}, {range}ms exact, lateness {l}ms)")
            }
            (RollingMode::OnArrival, l) => {
                format!("Rolling({name}, {range}ms on arrival, lateness {l}ms)")
            }
        };
        let has_late = late.is_some();
        let late = late.unwrap_or_else(|| empty(scope));
        let key = Rc::new(key);
        let (k1, k2) = (key.clone(), key.clone());
        let main_pact = by_key(move |d: &D| k1(d));
        let late_pact = by_key(move |d: &Late<D>| k2(&d.record));

        let mut builder = OperatorBuilder::new(name.clone(), scope);
        let wake = crate::checkpoint::waker(&scope, &builder);
        let mut main_in = builder.new_input(self, main_pact);
        let mut late_in = builder.new_input(late, late_pact);
        let (results_out, results) = builder.new_output();
        let (too_late_out, too_late) = builder.new_output();
        if has_late {
            let holds = "late records beyond the rolling window's lateness";
            crate::unconnected::declare(&too_late, &name, "too_late", holds);
        }
        let mut results_out: VecOutput<T, Rolled<D, G::Out>> = OutputBuilder::from(results_out);
        let mut too_late_out: VecOutput<T, Late<D>> = OutputBuilder::from(too_late_out);
        let too_late_count = Rc::new(Cell::new(0u64));
        let counter = too_late_count.clone();

        let checkpoints = Checkpoints::current();
        let mut state: State<K, T, G::Acc> = State {
            width: range.isqrt().max(1),
            keys: FxHashMap::default(),
            lifted: None,
            expiry: BTreeMap::new(),
            debts: HeldEpochs::new(),
            logging: false,
            interval: 1,
            changed: Vec::new(),
            removed: Vec::new(),
            capture: None,
            closed_through: 0,
            restored_through: 0,
        };
        // Exact mode: records waiting for the watermark to pass their event time.
        let mut waiting: Waiting<T, D> = BTreeMap::new();
        // Late records by their own event time, waiting for the main watermark to pass it.
        let mut pending: Waiting<T, D> = BTreeMap::new();
        // The unkeyed state of the part being captured, as of its checkpoint.
        let mut part_extra: Option<Extra<T, D>> = None;
        let activator = scope.activator_for(builder.operator_info().address);

        let held = crate::checkpoint::hold_output(checkpoints.as_ref(), &mut builder);
        builder.build(move |initial| {
            let mut aligner = checkpoints.map(|ctx| {
                let aligner = Aligner::new(ctx, &name, &initial[held]).waking(wake);
                state.logging = true;
                state.restore(&aligner, &initial[0], &mut waiting, &mut pending, &*key);
                aligner
            });
            move |frontiers| {
                let mut results_out = results_out.activate();
                let mut too_late_out = too_late_out.activate();

                // Message by message, in the order received.
                main_in.for_each(|cap, data| {
                    let Some(time) = time_of(&cap) else {
                        return;
                    };
                    // Behind the watermark the restored state had acted on: late, as
                    // for the run before the crash (see `restored_through`), and
                    // applied as a late record read at that watermark.
                    if let Some(at) = behind(time, state.restored_through) {
                        let (event_time, watermark) = (time.event(), at.event());
                        let records = data.drain(..).map(|record| Late {
                            event_time,
                            watermark,
                            record,
                        });
                        let mut too_late = too_late_out.session(&cap);
                        let give = |r| too_late.give(r);
                        let waits = (aligner.as_mut(), &mut pending);
                        take_late(at, &cap, records, lateness, give, &counter, waits);
                        return;
                    }
                    if let Some(a) = aligner.as_mut().filter(|a| a.later(&time)) {
                        let mut records = data.drain(..).map(Arrival::Main).collect();
                        a.stash(time, || cap.delayed(&time, 0), &mut records);
                        return;
                    }
                    match mode {
                        RollingMode::OnArrival => {
                            let mut session = results_out.session(&cap);
                            let mut emit = |r| session.give(r);
                            let records = std::mem::take(data);
                            state.arrive(&agg, time, &cap, records, &*key, range, &mut emit);
                        }
                        RollingMode::Exact => {
                            stash(&mut waiting, cap, std::iter::once(data));
                        }
                    }
                });

                late_in.for_each_stamp(|cap, batches| {
                    let Some(time) = time_of(&cap) else {
                        return;
                    };
                    // Read behind the restored watermark: applied at it.
                    let at = behind(time, state.restored_through).unwrap_or(time);
                    let mut too_late = too_late_out.session(&cap);
                    let give = |r| too_late.give(r);
                    let records = batches.flat_map(|batch| batch.drain(..));
                    let waits = (aligner.as_mut(), &mut pending);
                    take_late(at, &cap, records, lateness, give, &counter, waits);
                });

                // Each checkpoint epoch the inputs have sealed, in turn: what waited for
                // it is applied (on arrival) or joins the records waiting, the part is
                // written, and what it held moves to the next epoch.
                if let Some(a) = aligner.as_mut() {
                    let mut apply =
                        |state: &mut State<K, T, G::Acc>,
                         waiting: &mut Waiting<T, D>,
                         pending: &mut Waiting<T, D>,
                         released: Vec<(Capability<T>, Vec<Arrival<D>>)>| {
                            for (cap, records) in released {
                                let time = *cap.time();
                                let mut main = Vec::new();
                                for record in records {
                                    match record {
                                        Arrival::Main(d) => main.push(d),
                                        Arrival::Late(l) => pending
                                            .entry((l.event_time, time))
                                            .or_insert_with(|| (cap.delayed(&time), Vec::new()))
                                            .1
                                            .push(l.record),
                                    }
                                }
                                match mode {
                                    RollingMode::OnArrival => {
                                        let mut session = results_out.session(&cap);
                                        let mut emit = |r| session.give(r);
                                        state.arrive(
                                            &agg, time, &cap, main, &*key, range, &mut emit,
                                        );
                                    }
                                    RollingMode::Exact => keep(waiting, [(cap, main)]),
                                }
                            }
                        };
                    while let Some(epoch) = a.due(frontiers) {
                        apply(&mut state, &mut waiting, &mut pending, a.release(epoch));
                        // The last part first: the aligner takes parts in order.
                        if let Some((start, entries, spent)) = state.capture_step(usize::MAX) {
                            let extra = part_extra.take().expect("the captured part's extra");
                            a.end_log_owned(start, extra, entries, spent);
                        }
                        let start = a.begin_log(epoch);
                        let now = extra(&waiting, &pending, state.closed_through);
                        match state.begin_capture(start) {
                            Some((start, entries, spent)) => {
                                a.end_log_owned(start, now, entries, spent)
                            }
                            None => part_extra = Some(now),
                        }
                        state.lift(epoch);
                        for (cap, _) in waiting.values_mut().chain(pending.values_mut()) {
                            lift_epoch(cap, epoch);
                        }
                        let next = a.next();
                        apply(&mut state, &mut waiting, &mut pending, a.release(next));
                    }
                    let released = a.release_if_done(frontiers);
                    apply(&mut state, &mut waiting, &mut pending, released);
                }

                // Records waiting for a checkpoint may still count in, or read, what
                // the frontier alone would emit or evict.
                let stashed = aligner.as_ref().map_or(u64::MAX, |a| a.stashed_from());
                let main_watermark = event_frontier(&frontiers[0].frontier()).min(stashed);
                if main_watermark < u64::MAX {
                    state.closed_through = state.closed_through.max(main_watermark);
                }
                let late_watermark = event_frontier(&frontiers[1].frontier()).min(stashed);

                // Exact: each event time the main watermark passed, in order; all the
                // records at one event time are added before any is emitted.
                let mut group: Vec<Ready<T, K, D>> = Vec::new();
                while let Some((&(t, _), _)) = waiting.first_key_value() {
                    if t >= main_watermark {
                        break;
                    }
                    while let Some(entry) = waiting.first_entry() {
                        if entry.key().0 != t {
                            break;
                        }
                        let (cap, records) = entry.remove();
                        let keyed = records.into_iter().map(|r| (key(&r), r)).collect();
                        group.push((cap, keyed));
                    }
                    for (cap, records) in &group {
                        // The capability's time, not the batch's: a checkpoint may have
                        // moved it to a later epoch.
                        let time = cap.time();
                        for (k, record) in records {
                            let (owe, pay) = state.add(&agg, k, t, time, record);
                            if let Some(at) = owe {
                                // `t` is at or above the last settled watermark.
                                state.debts.owe(&at, cap, 0);
                            }
                            if let Some(old) = pay {
                                state.debts.pay(&old);
                            }
                        }
                    }
                    for (cap, records) in group.drain(..) {
                        let mut session = results_out.session(&cap);
                        for (k, record) in records {
                            let acc = state.query(&agg, &k, window_start(t, range), t);
                            session.give(Rolled {
                                value: agg.finish(&acc),
                                record,
                                late: false,
                            });
                        }
                    }
                }

                // Late records whose event time the main watermark passed: every
                // on-time record they can count is in.
                while let Some(entry) = pending.first_entry() {
                    let t = entry.key().0;
                    if t >= main_watermark {
                        break;
                    }
                    let (cap, records) = entry.remove();
                    let mut session = results_out.session(&cap);
                    for record in records {
                        let mut acc = state.query(&agg, &key(&record), window_start(t, range), t);
                        agg.add(&mut acc, &record);
                        session.give(Rolled {
                            value: agg.finish(&acc),
                            record,
                            late: true,
                        });
                    }
                }

                // A record still to come is at or after `watermark` (a late one at most
                // `lateness` before it) and reads back `range`.
                let watermark = main_watermark.min(late_watermark);
                if watermark == u64::MAX {
                    state.evict(u64::MAX);
                } else if let Some(bound) = watermark.checked_sub(range.saturating_add(lateness)) {
                    state.evict(bound);
                }
                state.debts.settle(watermark);
                if let Some(a) = aligner.as_mut() {
                    // A step of the part being captured; the operator comes back for
                    // the rest.
                    let step = a.checkpoints().capture_step();
                    if let Some((start, entries, spent)) = state.capture_step(step) {
                        let extra = part_extra.take().expect("the captured part's extra");
                        a.end_log_owned(start, extra, entries, spent);
                    }
                    if state.capturing() {
                        activator.activate();
                    }
                    a.settle(
                        event_frontier(&frontiers[0].frontier())
                            .min(event_frontier(&frontiers[1].frontier())),
                    );
                }
            }
        });
        RollingStreams {
            results,
            too_late,
            too_late_count,
        }
    }
}

#[cfg(test)]
mod tests {
    //! A key's blocks and their runs against merging the blocks one by one, under any
    //! order of adds, drops and queries.

    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Add(u64),
        Remove(usize),
        Query(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..300).prop_map(Op::Add),
            3 => (0usize..8).prop_map(Op::Remove),
            3 => (0u64..300, 0u64..300).prop_map(|(a, b)| Op::Query(a.min(b), a.max(b))),
        ]
    }

    proptest! {
        #[test]
        fn runs_merge_what_the_blocks_hold(ops in prop::collection::vec(op(), 0..1500)) {
            let mut blocks: Blocks<Block<(), u64>> = Blocks::default();
            // The reference: records per block index.
            let mut held: BTreeMap<u64, u64> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Add(index) => {
                        let new = || Block {
                            accs: Arc::new(Panes { acc: 1, panes: BTreeMap::from([(index, 1)]) }),
                            since: (),
                            listed: 0,
                            run: None,
                        };
                        let (block, fresh) = blocks.add_run(&Count, index, &(), new);
                        if !fresh {
                            Arc::make_mut(&mut block.accs).acc += 1;
                        }
                        *held.entry(index).or_default() += 1;
                    }
                    Op::Remove(nth) => {
                        // Mostly the oldest block, as eviction does.
                        let index = held.keys().nth(nth.saturating_sub(5)).copied();
                        if let Some(index) = index {
                            prop_assert!(blocks.remove(index).is_some());
                            held.remove(&index);
                        }
                    }
                    Op::Query(a, b) => {
                        let mut got = 0;
                        blocks.merge_whole::<(), _>(&Count, &mut got, a, b);
                        let want: u64 = held.range(a..=b).map(|(_, n)| n).sum();
                        prop_assert_eq!(got, want, "blocks {}..={}", a, b);
                    }
                }
            }
        }
    }
}
