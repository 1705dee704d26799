//! Keyed session windows: a key's records closer than `gap` ms in event time form one
//! session `[first, last + gap)`; a record that bridges two sessions merges them.
//!
//! A session is emitted (`Final`) once the event-time watermark reaches its end
//! `last + gap` (no record can extend it any more). While open it holds a capability
//! at `(end - 1, e)` for each least epoch `e` among its records (usually one, the
//! earliest), moved up as the session grows, and emits there, at `(end - 1, e_min)`.
//!
//! With early results (`WindowPolicy::early(period)`), each time the watermark
//! crosses a multiple of `period`, every open session changed since its last early
//! result is emitted (`Early`) at its capability. A session's bounds move as it grows
//! or merges: an early result whose `(start, end)` stops existing is retracted
//! (`Retract`) at once, at the time of the record that moved the bounds, so an early
//! result always names a session that exists.
//!
//! With a late input, emitted sessions are kept (without a capability) and late
//! records are applied in event-time order: a late batch at `(t', e')` waits, holding
//! its capability, until the watermark passes `t'`; sessions ending at or before `t'`
//! are emitted first; then each late record joins the sessions it touches like any
//! record. A session already emitted whose bounds stay the same gets a correction
//! (`Late`, next revision); one that grows or merges is retracted (`Retract`, next
//! revision, carrying its last emitted value) and the session it became is emitted
//! as new (`Late`, revision 0, if it ends at or before `t'`; otherwise `Final` when it
//! ends). A late record is too late, and goes to the too-late output, if
//! `t' >= event_time + gap + lateness`: lateness counts from the end of the record's
//! own one-record session. Emitted sessions are dropped when the watermark reaches
//! `end + gap + lateness`, after which no late record that is not too late can touch
//! them.
//!
//! Under checkpoints (see [`crate::checkpoint`]) records of epochs after the next
//! checkpoint epoch wait in the operator's [`Aligner`] until that epoch is sealed; then
//! the part — the early-result boundary and the late batches waiting, whole, and the
//! sessions (open and emitted) of each key whose sessions changed since the operator's
//! previous part (of every key in a full part; a key left without sessions as a
//! removed entry) — is written and, once durable, every capability held for open
//! sessions moves to the epoch after the checkpoint. The part also records the
//! watermark sessions were emitted through: after a restore, a record read behind it,
//! or touching a restored emitted session, is applied as a late record at it (see
//! [`crate::checkpoint::restored_through`]).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::hash::Hash;
use std::rc::Rc;

use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::operator::empty;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::{Capability, CapabilitySet};
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use crate::aggregate::{Aggregator, Count};
use crate::capability::{
    advance_caps, emission_cap, hold, time_of, watermark, Mint, VecOutput, Waiting,
};
use crate::checkpoint::{
    behind, by_event, lift_epoch, lift_epochs, restore_pending, restored_through, Aligner, Arrival,
    Checkpoints, LateQueues,
};
use crate::hash::{by_key, hash};
use crate::late::Late;
use crate::time::EventTime;
use crate::window::{Emit, WindowPolicy, WindowStreams, Windowed};

/// One open session of one key.
struct Open<T: EventTime, A, O> {
    start: u64,
    last: u64,
    caps: CapabilitySet<T>,
    acc: A,
    /// Its last early result, if any: always for the session's current bounds (an
    /// early result whose bounds stop existing is retracted at once).
    shown: Option<Shown<O>>,
    /// Changed since its last early result.
    changed: bool,
    /// Its key is listed in [`Sessions::changed`] since the last checkpoint (a key's
    /// other changes list it without looking here; the list is deduplicated when
    /// written).
    logged: bool,
}

impl<T: EventTime, A, O> Open<T, A, O> {
    fn new(start: u64, last: u64, acc: A) -> Self {
        Open {
            start,
            last,
            caps: CapabilitySet::new(),
            acc,
            shown: None,
            changed: true,
            logged: false,
        }
    }

    /// Grows the session to cover `start..=last`. If that moves its bounds, its early
    /// result no longer names a session that exists: it is retracted at `cap` (with the
    /// next revision of those bounds), and the next emission starts a new revision
    /// sequence for the new bounds.
    fn stretch<K: Clone>(
        &mut self,
        k: &K,
        (start, last): (u64, u64),
        gap: u64,
        cap: &Capability<T>,
        emit: &mut Emitter<T, K, O>,
    ) {
        self.start = self.start.min(start);
        self.last = self.last.max(last);
        let bounds = (self.start, self.last + gap);
        if let Some(old) = self.shown.take_if(|o| (o.start, o.end) != bounds) {
            emit(cap, old.retraction(k));
        }
    }
}

impl<O> Shown<O> {
    /// The `Retract` that says these bounds no longer exist: the next revision, with
    /// the value last emitted.
    fn retraction<K: Clone>(self, k: &K) -> Windowed<K, O> {
        Windowed::new(
            k.clone(),
            self.start,
            self.end,
            self.value,
            self.revision + 1,
            Emit::Retract,
        )
    }
}

/// An emitted result: its window, revision and value.
#[derive(Serialize, Deserialize)]
struct Shown<O> {
    start: u64,
    end: u64,
    revision: u32,
    value: O,
}

/// One emitted (or, within a late batch, about to be emitted) session of one key.
#[derive(Serialize, Deserialize)]
struct Closed<A, O> {
    start: u64,
    last: u64,
    acc: A,
    /// The revision of its next emission.
    revision: u32,
    /// The value last emitted, if any.
    shown: Option<O>,
    /// Changed by the current late batch.
    dirty: bool,
}

/// Where a session's results go: `(capability, result)`.
type Emitter<'a, T, K, O> = dyn FnMut(&Capability<T>, Windowed<K, O>) + 'a;

/// Extension trait: keyed, gap-based session windows.
pub trait Session<'scope, T: EventTime, D> {
    /// Aggregates each key's sessions (records less than `gap` ms apart) with `agg`,
    /// which must merge: a record bridging two sessions merges their accumulators.
    ///
    /// Emit-final, or with early results if `policy` asks; late records from `late`
    /// within `policy.lateness` update emitted sessions (see the module documentation
    /// for corrections and retractions).
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, Emit, Late, Session, WindowPolicy};
    /// use freshet_operators::aggregate::Count;
    ///
    /// let out = timely::example(|scope| {
    ///     // 1 and 12 start two sessions (gap 7): [1, 8) and [12, 19).
    ///     let main = vec![1u64, 12].to_stream(scope).assign_event_time("at", |r: &u64| *r);
    ///     // At event time 30, a late 6 bridges them: both are retracted, [1, 19) is new.
    ///     let late = vec![Late { event_time: 6, watermark: 30, record: 6u64 }]
    ///         .to_stream(scope)
    ///         .assign_event_time("late at", |_| 30);
    ///     main.session("visits", 7, WindowPolicy::new().lateness(20), Some(late),
    ///         |_: &u64| 'u', Count)
    ///         .results
    ///         .capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v)
    ///     .map(|w| (w.start, w.end, w.value, w.revision, w.kind)).collect();
    /// got.sort();
    /// assert_eq!(got, vec![
    ///     (1, 8, 1, 0, Emit::Final), (1, 8, 1, 1, Emit::Retract),
    ///     (1, 19, 3, 0, Emit::Late),
    ///     (12, 19, 1, 0, Emit::Final), (12, 19, 1, 1, Emit::Retract),
    /// ]);
    /// ```
    #[allow(clippy::too_many_arguments)]
    fn session<K, G, KF>(
        self,
        name: &str,
        gap: u64,
        policy: WindowPolicy,
        late: Option<StreamVec<'scope, T, Late<D>>>,
        key: KF,
        agg: G,
    ) -> WindowStreams<'scope, T, K, G::Out, D>
    where
        K: ExchangeData + Hash + Eq + Clone,
        G: Aggregator<D>,
        G::Out: Clone + crate::aggregate::State,
        KF: Fn(&D) -> K + 'static;

    /// Aggregates each key's sessions with `agg`, without a late input.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, Session};
    /// use freshet_operators::aggregate::Sum;
    ///
    /// let out = timely::example(|scope| {
    ///     vec![(1u8, 10u64), (1, 12), (2, 11)].to_stream(scope)
    ///         .assign_event_time("at", |r: &(u8, u64)| r.1)
    ///         .session_aggregate("sum", 5, |r: &(u8, u64)| r.0, Sum::new(|r: &(u8, u64)| r.1))
    ///         .capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v)
    ///     .map(|w| (w.key, w.start, w.end, w.value)).collect();
    /// got.sort();
    /// assert_eq!(got, vec![(1, 10, 17, 22), (2, 11, 16, 11)]);
    /// ```
    fn session_aggregate<K, G, KF>(
        self,
        name: &str,
        gap: u64,
        key: KF,
        agg: G,
    ) -> StreamVec<'scope, T, Windowed<K, G::Out>>
    where
        Self: Sized,
        K: ExchangeData + Hash + Eq + Clone,
        G: Aggregator<D>,
        G::Out: Clone + crate::aggregate::State,
        KF: Fn(&D) -> K + 'static,
    {
        self.session(name, gap, WindowPolicy::new(), None, key, agg)
            .results
    }

    /// Counts each key's records per session.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, Session};
    ///
    /// let out = timely::example(|scope| {
    ///     vec![0u64, 2, 4, 20].to_stream(scope).assign_event_time("at", |r: &u64| *r)
    ///         .session_count("count", 3, |_: &u64| ())
    ///         .capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v)
    ///     .map(|w| (w.start, w.value)).collect();
    /// got.sort();
    /// assert_eq!(got, vec![(0, 3), (20, 1)]);
    /// ```
    fn session_count<K, KF>(
        self,
        name: &str,
        gap: u64,
        key: KF,
    ) -> StreamVec<'scope, T, Windowed<K, u64>>
    where
        Self: Sized,
        K: ExchangeData + Hash + Eq + Clone,
        KF: Fn(&D) -> K + 'static,
    {
        self.session_aggregate(name, gap, key, Count)
    }
}

/// All of one operator's sessions.
struct Sessions<T: EventTime, K, A, O> {
    gap: u64,
    lateness: u64,
    /// The early-result period, if any, and the next boundary to fire at.
    early: Option<u64>,
    next_early: u64,
    /// Whether emitted sessions are kept for late records.
    keep: bool,
    /// Per key, its open sessions, sorted and at least `gap` apart.
    open: FxHashMap<K, Vec<Open<T, A, O>>>,
    /// Keys by the end of a session they had: at or before the end of each of the
    /// key's open sessions. Entries go stale as sessions grow; when the watermark
    /// reaches one, the key's ended sessions are emitted and the key is filed again
    /// under its earliest open session's end.
    ends: BTreeMap<u64, Vec<K>>,
    /// Per key, its emitted sessions kept for late records, sorted.
    closed: FxHashMap<K, Vec<Closed<A, O>>>,
    /// Keys by the watermark at which an emitted session of theirs may be dropped.
    expiry: BTreeMap<u64, Vec<K>>,
    /// Keys changed by the current late batch.
    dirty: Vec<K>,
    /// Whether changes are tracked for incremental checkpoints.
    logging: bool,
    /// Keys whose sessions changed since the last checkpoint (maybe more than once).
    changed: Vec<K>,
    /// The watermark every session ending at or before it was emitted at (written in
    /// checkpoints).
    closed_through: u64,
    /// After a restore, the watermark the restored state had emitted sessions at (see
    /// [`Sessions::behind`]); 0 otherwise.
    restored_through: u64,
    /// After a restore, the latest end of a restored emitted session; 0 otherwise.
    restored_ends: u64,
}

impl<T: EventTime, K: Hash + Eq + Clone, A, O: Clone> Sessions<T, K, A, O> {
    fn new(gap: u64, policy: WindowPolicy, keep: bool) -> Self {
        Sessions {
            gap,
            lateness: policy.lateness,
            early: policy.early,
            next_early: policy.early.unwrap_or(u64::MAX),
            keep,
            open: FxHashMap::default(),
            ends: BTreeMap::new(),
            closed: FxHashMap::default(),
            expiry: BTreeMap::new(),
            dirty: Vec::new(),
            logging: false,
            changed: Vec::new(),
            closed_through: 0,
            restored_through: 0,
            restored_ends: 0,
        }
    }

    /// Where a record read at `time` is applied after a restore. A restarted source
    /// resumes at the watermark it had when the checkpoint's epoch ended, which may be
    /// behind the watermark this operator had already emitted sessions at (it sees the
    /// next epoch's progress before writing its part): records then arrive behind
    /// sessions already emitted. Such a record is late, as it was for the run before
    /// the crash — read behind the restored watermark, or (a main record of key `k`)
    /// touching a restored emitted session — and is applied as a late record at the
    /// restored watermark: `Some(that time)`; `None` for a record in time. One
    /// comparison unless the record is behind some restored session's end.
    fn behind(&self, time: T, k: Option<&K>) -> Option<T> {
        let t = time.event();
        let touches = |k: &K| {
            t < self.restored_ends
                && self.closed.get(k).is_some_and(|closed| {
                    let gap = self.gap;
                    closed
                        .iter()
                        .any(|c| c.start < t.saturating_add(gap) && t < c.last.saturating_add(gap))
                })
        };
        match behind(time, self.restored_through) {
            Some(at) => Some(at),
            None => k.is_some_and(touches).then_some(time),
        }
    }

    /// Adds a record at `time` (held under `cap`) to key `k`'s open sessions. `rekey`
    /// gives the key again, needed only when the record starts a new session. Early
    /// results of sessions whose bounds it moves are retracted at once, at `time`.
    #[allow(clippy::too_many_arguments)]
    fn add<D, G>(
        &mut self,
        k: K,
        time: T,
        cap: &impl Mint<T>,
        record: &D,
        agg: &G,
        rekey: impl Fn() -> K,
        emit: &mut Emitter<T, K, O>,
    ) where
        G: Aggregator<D, Acc = A, Out = O>,
    {
        let gap = self.gap;
        let t = time.event();
        let open = self.open.entry(k).or_default();
        // Sessions this record touches: a contiguous run.
        let from = open.partition_point(|s| s.last.saturating_add(gap) <= t);
        let to = open.partition_point(|s| s.start < t.saturating_add(gap));
        if to == from + 1 {
            // Touches one session: the common case, updated in place.
            let s = &mut open[from];
            if s.start > t || s.last < t {
                if s.shown.is_some() {
                    let k = rekey();
                    s.stretch(&k, (t, t), gap, &cap.mint(&time, 0), emit);
                } else {
                    s.start = s.start.min(t);
                    s.last = s.last.max(t);
                }
            }
            let end = s.last + gap;
            hold(&mut s.caps, cap, time.with_event(end - 1), 0);
            // Move the capabilities up with the session's end once they lag it by a
            // gap: not per record, yet a long session does not hold event time back.
            let lag = s.caps.iter().map(|c| c.time().event()).min();
            if lag.is_some_and(|e| e.saturating_add(gap) < end) {
                advance_caps(&mut s.caps, end - 1);
            }
            agg.add(&mut s.acc, record);
            s.changed = true;
            if self.logging && !s.logged {
                s.logged = true;
                self.changed.push(rekey());
            }
            return;
        }
        // A new session, or one merging several: the merged parts' bounds stop
        // existing, so their early results are retracted.
        let k = rekey();
        let mut merged = Open::new(t, t, agg.create());
        let new = from == to;
        let mut retract_at = None;
        for s in open.drain(from..to).collect::<Vec<_>>() {
            if let Some(old) = merge_open(&mut merged, s, agg) {
                let at = retract_at.get_or_insert_with(|| cap.mint(&time, 0));
                emit(at, old.retraction(&k));
            }
        }
        let end = merged.last + gap;
        hold(&mut merged.caps, cap, time.with_event(end - 1), 0);
        advance_caps(&mut merged.caps, end - 1);
        agg.add(&mut merged.acc, record);
        if self.logging {
            merged.logged = true;
            self.changed.push(k.clone());
        }
        open.insert(from, merged);
        // A merged session's parts have entries in `ends`, at or before its end; a
        // new session needs one.
        if new {
            self.ends.entry(end).or_default().push(k);
        }
    }

    /// Emits every open session that ends at or before `upto`, keeping it if late
    /// records may still touch it.
    fn close<D, G>(
        &mut self,
        upto: u64,
        agg: &G,
        emit: &mut impl FnMut(&Capability<T>, Windowed<K, O>),
    ) where
        G: Aggregator<D, Acc = A, Out = O>,
    {
        let gap = self.gap;
        self.closed_through = self.closed_through.max(upto);
        while let Some(entry) = self.ends.first_entry() {
            if *entry.key() > upto {
                break;
            }
            for k in entry.remove() {
                let Some(open) = self.open.get_mut(&k) else {
                    continue;
                };
                let ended = open.partition_point(|s| s.last + gap <= upto);
                if self.logging && ended > 0 {
                    self.changed.push(k.clone());
                }
                for mut s in open.drain(..ended) {
                    let end = s.last + gap;
                    let Some(cap) = emission_cap(&s.caps, end - 1) else {
                        continue;
                    };
                    let (revision, value) =
                        emit_open(&k, &mut s, gap, Emit::Final, &cap, agg, emit);
                    if self.keep {
                        let drop_at = end.saturating_add(gap).saturating_add(self.lateness);
                        self.expiry.entry(drop_at).or_default().push(k.clone());
                        let closed = self.closed.entry(k.clone()).or_default();
                        let at = closed.partition_point(|c| c.start < s.start);
                        closed.insert(
                            at,
                            Closed {
                                start: s.start,
                                last: s.last,
                                acc: s.acc,
                                revision: revision + 1,
                                shown: Some(value),
                                dirty: false,
                            },
                        );
                    }
                }
                match open.first() {
                    // Look again when the earliest open session may end.
                    Some(s) => self.ends.entry(s.last + gap).or_default().push(k),
                    None => {
                        self.open.remove(&k);
                    }
                }
            }
        }
    }

    /// Applies a batch of late records at `time` (every session ending at or before
    /// it emitted, none ending later), emitting retractions and corrections at `cap`.
    fn apply_late<D, G>(
        &mut self,
        time: T,
        cap: &Capability<T>,
        records: Vec<Late<D>>,
        key: &impl Fn(&D) -> K,
        agg: &G,
        emit: &mut impl FnMut(&Capability<T>, Windowed<K, O>),
    ) where
        G: Aggregator<D, Acc = A, Out = O>,
    {
        let (gap, now) = (self.gap, time.event());
        for Late {
            event_time: et,
            record,
            ..
        } in records
        {
            let k = key(&record);
            if self.logging {
                self.changed.push(k.clone());
            }
            let closed = self.closed.entry(k.clone()).or_default();
            let open = self.open.entry(k.clone()).or_default();
            // The sessions the record touches, emitted and open: contiguous runs.
            let cf = closed.partition_point(|c| c.last.saturating_add(gap) <= et);
            let ct = closed.partition_point(|c| c.start < et.saturating_add(gap));
            let of = open.partition_point(|s| s.last.saturating_add(gap) <= et);
            let ot = open.partition_point(|s| s.start < et.saturating_add(gap));
            let (mut start, mut last) = (et, et);
            for (s, l) in closed[cf..ct]
                .iter()
                .map(|c| (c.start, c.last))
                .chain(open[of..ot].iter().map(|s| (s.start, s.last)))
            {
                start = start.min(s);
                last = last.max(l);
            }
            let end = last + gap;
            let retract = |c: Closed<A, O>, emit: &mut Emitter<T, K, O>| {
                if let Some(value) = c.shown {
                    let end = c.last + gap;
                    emit(
                        cap,
                        Windowed::new(k.clone(), c.start, end, value, c.revision, Emit::Retract),
                    );
                }
                c.acc
            };
            let same_bounds = ct == cf + 1 && (closed[cf].start, closed[cf].last) == (start, last);
            if of == ot && (end <= now || same_bounds) {
                // The record's session has ended (or, after a restore, was emitted
                // beyond `now` and keeps its bounds): a correction, now.
                if same_bounds {
                    agg.add(&mut closed[cf].acc, &record);
                    closed[cf].dirty = true;
                } else {
                    let mut acc = agg.create();
                    for c in closed.drain(cf..ct).collect::<Vec<_>>() {
                        agg.merge(&mut acc, retract(c, emit));
                    }
                    agg.add(&mut acc, &record);
                    let drop_at = end.saturating_add(gap).saturating_add(self.lateness);
                    self.expiry.entry(drop_at).or_default().push(k.clone());
                    closed.insert(
                        cf,
                        Closed {
                            start,
                            last,
                            acc,
                            revision: 0,
                            shown: None,
                            dirty: true,
                        },
                    );
                }
                if open.is_empty() {
                    self.open.remove(&k);
                }
                self.dirty.push(k);
            } else {
                // The record's session is open (or reopens emitted ones): it will be
                // emitted when it ends. The first open session it touches carries on
                // (with its early result, if its bounds do not move); the others and
                // the emitted ones merge into it, and their bounds are retracted.
                let closed_parts: Vec<_> = closed.drain(cf..ct).collect();
                let mut parts = open.drain(of..ot).collect::<Vec<_>>().into_iter();
                let new = of == ot;
                let mut merged = parts
                    .next()
                    .unwrap_or_else(|| Open::new(et, et, agg.create()));
                for s in parts {
                    if let Some(old) = merge_open(&mut merged, s, agg) {
                        emit(cap, old.retraction(&k));
                    }
                }
                for c in closed_parts {
                    agg.merge(&mut merged.acc, retract(c, emit));
                }
                merged.stretch(&k, (start, last), gap, cap, emit);
                merged.changed = true;
                // The batch's capability, moved to the session's end, covers its epoch.
                merged.caps.insert(cap.delayed(&time.with_event(end - 1)));
                advance_caps(&mut merged.caps, end - 1);
                agg.add(&mut merged.acc, &record);
                open.insert(of, merged);
                if closed.is_empty() {
                    self.closed.remove(&k);
                }
                if new {
                    self.ends.entry(end).or_default().push(k);
                }
            }
        }
        for k in self.dirty.drain(..) {
            for c in self.closed.get_mut(&k).into_iter().flatten() {
                if c.dirty {
                    let value = agg.finish(&c.acc);
                    let end = c.last + gap;
                    emit(
                        cap,
                        Windowed::new(
                            k.clone(),
                            c.start,
                            end,
                            value.clone(),
                            c.revision,
                            Emit::Late,
                        ),
                    );
                    c.revision += 1;
                    c.shown = Some(value);
                    c.dirty = false;
                }
            }
        }
    }

    /// Emits early results of changed open sessions when the watermark has crossed a
    /// multiple of the early period since the last time.
    fn fire_early<D, G>(
        &mut self,
        watermark: u64,
        agg: &G,
        emit: &mut impl FnMut(&Capability<T>, Windowed<K, O>),
    ) where
        G: Aggregator<D, Acc = A, Out = O>,
    {
        let Some(period) = self.early else {
            return;
        };
        if watermark < self.next_early || watermark == u64::MAX {
            return;
        }
        self.next_early = (watermark / period + 1).saturating_mul(period);
        for (k, open) in self.open.iter_mut() {
            for s in open.iter_mut().filter(|s| s.changed) {
                if let Some(cap) = emission_cap(&s.caps, s.last + self.gap - 1) {
                    emit_open(k, s, self.gap, Emit::Early, &cap, agg, emit);
                    if self.logging {
                        self.changed.push(k.clone());
                    }
                }
            }
        }
    }

    /// Drops emitted sessions no late record that is not too late can touch.
    fn expire(&mut self, watermark: u64) {
        let horizon = self
            .gap
            .saturating_add(self.gap)
            .saturating_add(self.lateness);
        while let Some(entry) = self.expiry.first_entry() {
            if *entry.key() > watermark {
                break;
            }
            for k in entry.remove() {
                if let Some(closed) = self.closed.get_mut(&k) {
                    let before = closed.len();
                    closed.retain(|c| c.last.saturating_add(horizon) > watermark);
                    let dropped = closed.len() < before;
                    if closed.is_empty() {
                        self.closed.remove(&k);
                    }
                    if self.logging && dropped {
                        self.changed.push(k);
                    }
                }
            }
        }
    }
}

/// One key's open session as written in a checkpoint: `(start, last, accumulator, its
/// early result, changed since)`.
type OpenPart<A, O> = (u64, u64, A, Option<Shown<O>>, bool);

/// The state that is not keyed, written whole in every part: the early-result boundary,
/// the watermark sessions were emitted through, and the late batches waiting (at their
/// time).
type Extra<T, D> = (u64, u64, Vec<(T, Vec<Late<D>>)>);

/// One key's sessions as a checkpoint entry: keyed by the key, valued by its open and
/// its emitted sessions.
type SessionsEntry<K, A, O> = (K, (Vec<OpenPart<A, O>>, Vec<Closed<A, O>>));

impl<T: EventTime, K: Hash + Eq + Clone + Serialize, A: Serialize, O: Clone + Serialize>
    Sessions<T, K, A, O>
{
    /// Writes this worker's part of checkpoint `epoch`: the sessions of the keys changed
    /// since the last part (or of every key), and the late batches waiting.
    fn checkpoint<D: Serialize>(
        &mut self,
        aligner: &mut Aligner<T, Arrival<D>>,
        epoch: u64,
        pending: &Waiting<T, Late<D>>,
    ) {
        type OpenRef<'a, A, O> = (u64, u64, &'a A, &'a Option<Shown<O>>, bool);
        type View<'a, A, O> = (Vec<OpenRef<'a, A, O>>, &'a [Closed<A, O>]);
        let extra = (
            self.next_early,
            self.closed_through,
            pending
                .iter()
                .map(|((_, t), (_, r))| (*t, r))
                .collect::<Vec<_>>(),
        );
        let changed = std::mem::take(&mut self.changed);
        let (open, closed) = (&self.open, &self.closed);
        let view = |k: &K| -> Option<View<'_, A, O>> {
            let (o, c) = (open.get(k), closed.get(k));
            if o.is_none() && c.is_none() {
                return None;
            }
            let sessions = o
                .into_iter()
                .flatten()
                .map(|s| (s.start, s.last, &s.acc, &s.shown, s.changed))
                .collect();
            Some((sessions, c.map_or(&[][..], |c| &c[..])))
        };
        aligner.write_log(epoch, extra, |want| {
            let only_closed = closed.keys().filter(|k| !open.contains_key(*k));
            let mut seen = rustc_hash::FxHashSet::default();
            let changed = changed.iter().filter(move |k| seen.insert(*k));
            want.pick_by_key(open.keys().chain(only_closed), changed, |k| view(k))
        });
        for k in &changed {
            for s in self.open.get_mut(k).into_iter().flatten() {
                s.logged = false;
            }
        }
        self.changed = changed;
        self.changed.clear();
    }
}

impl<T: EventTime, K: Hash + Eq + Clone, A, O: Clone> Sessions<T, K, A, O> {
    /// Applies records that waited for a checkpoint, in time order: main records join
    /// their sessions, late ones wait for the watermark like any late batch.
    fn apply_waiting<D, G>(
        &mut self,
        pending: &mut Waiting<T, Late<D>>,
        released: Vec<(Capability<T>, Vec<Arrival<D>>)>,
        key: &impl Fn(&D) -> K,
        agg: &G,
        emit: &mut Emitter<T, K, O>,
    ) where
        G: Aggregator<D, Acc = A, Out = O>,
    {
        for (cap, records) in released {
            let time = *cap.time();
            for record in records {
                match record {
                    Arrival::Main(d) => self.add(key(&d), time, &cap, &d, agg, || key(&d), emit),
                    Arrival::Late(l) => pending
                        .entry((time.event(), time))
                        .or_insert_with(|| (cap.delayed(&time), Vec::new()))
                        .1
                        .push(l),
                }
            }
        }
    }

    /// Every capability held for open sessions, at epochs `<= epoch`, moved to
    /// `epoch + 1`: the checkpoint of `epoch` answers for them.
    fn lift(&mut self, epoch: u64) {
        for list in self.open.values_mut() {
            for s in list.iter_mut() {
                lift_epochs(&mut s.caps, epoch);
            }
        }
    }

    /// Loads the restored checkpoint's parts, keeping the keys this worker owns, with
    /// capabilities (minted from `initial`) at the epoch after the checkpoint.
    fn restore<D: DeserializeOwned>(
        &mut self,
        aligner: &Aligner<T, Arrival<D>>,
        initial: &Capability<T>,
        pending: &mut Waiting<T, Late<D>>,
        key: &impl Fn(&D) -> K,
    ) where
        K: DeserializeOwned,
        A: DeserializeOwned,
        O: DeserializeOwned,
    {
        let ctx = aligner.checkpoints();
        let Some((epoch, parts)) =
            aligner.restored_log::<Extra<T, D>, K, (Vec<OpenPart<A, O>>, Vec<Closed<A, O>>)>()
        else {
            return;
        };
        let at = |event: u64| initial.time().with_event(event).with_epoch(epoch);
        let gap = self.gap;
        // At another worker count the least of all parts': the restored sessions, kept
        // with a late input, answer for each key (see `behind`).
        let through: Vec<u64> = parts.iter().map(|(extra, _)| extra.1).collect();
        self.restored_through = restored_through(ctx, &through);
        self.closed_through = self.restored_through;
        for ((next_early, _, waiting), entries) in parts {
            self.next_early = self.next_early.min(next_early);
            let entries: Vec<SessionsEntry<K, A, O>> = entries;
            for (k, (sessions, closed)) in entries {
                if !ctx.owns(hash(&k)) {
                    continue;
                }
                if let Some(first) = sessions.first() {
                    let first_end = first.1 + gap;
                    let list = sessions
                        .into_iter()
                        .map(|(start, last, acc, shown, changed)| {
                            let mut caps = CapabilitySet::new();
                            caps.insert(initial.delayed(&at(last + gap - 1)));
                            Open {
                                start,
                                last,
                                caps,
                                acc,
                                shown,
                                changed,
                                logged: false,
                            }
                        })
                        .collect();
                    self.ends.entry(first_end).or_default().push(k.clone());
                    self.open.insert(k.clone(), list);
                }
                if !closed.is_empty() {
                    for c in &closed {
                        self.restored_ends = self.restored_ends.max(c.last + gap);
                        let drop_at = (c.last + gap)
                            .saturating_add(gap)
                            .saturating_add(self.lateness);
                        self.expiry.entry(drop_at).or_default().push(k.clone());
                    }
                    self.closed.insert(k, closed);
                }
            }
            restore_pending(
                pending,
                by_event(waiting),
                ctx,
                initial,
                epoch,
                &|l: &Late<D>| key(&l.record),
            );
        }
    }
}

/// Sends the late records applied at `time` that are too late — the watermark `reach`
/// or more past their event time — to `too_late` (counted), and puts the others where
/// they wait: stashed for the next checkpoint if `time` is of a later epoch, else with
/// the batches waiting for the watermark, under a capability from `delayed`.
fn queue_late<T: EventTime, D>(
    time: T,
    delayed: impl FnOnce(&T) -> Capability<T>,
    records: impl IntoIterator<Item = Late<D>>,
    reach: u64,
    mut too_late: impl FnMut(Late<D>),
    counter: &Cell<u64>,
    (aligner, pending): LateQueues<'_, T, D, Late<D>>,
) {
    let now = time.event();
    let mut kept = Vec::new();
    for record in records {
        if now >= record.event_time.saturating_add(reach) {
            counter.set(counter.get() + 1);
            too_late(record);
        } else {
            kept.push(record);
        }
    }
    if kept.is_empty() {
        return;
    }
    match aligner.filter(|a| a.later(&time)) {
        Some(a) => {
            let mut records = kept.into_iter().map(Arrival::Late).collect();
            a.stash(time, || delayed(&time), &mut records);
        }
        None => pending
            .entry((now, time))
            .or_insert_with(|| (delayed(&time), Vec::new()))
            .1
            .append(&mut kept),
    }
}

/// Merges `other` into `into` (bounds, capabilities, accumulator) and returns
/// `other`'s early result, whose bounds no longer exist, for the caller to retract.
fn merge_open<T: EventTime, D, G: Aggregator<D>>(
    into: &mut Open<T, G::Acc, G::Out>,
    other: Open<T, G::Acc, G::Out>,
    agg: &G,
) -> Option<Shown<G::Out>> {
    into.start = into.start.min(other.start);
    into.last = into.last.max(other.last);
    for c in other.caps.iter() {
        into.caps.insert(c.clone());
    }
    agg.merge(&mut into.acc, other.acc);
    into.changed = true;
    other.shown
}

/// Emits an open session's current value as `kind` at `cap`: the next revision of its
/// bounds (its early result, if any, is always for the current bounds). Returns the
/// revision emitted and the value.
fn emit_open<T: EventTime, K: Clone, D, G: Aggregator<D>>(
    k: &K,
    s: &mut Open<T, G::Acc, G::Out>,
    gap: u64,
    kind: Emit,
    cap: &Capability<T>,
    agg: &G,
    emit: &mut impl FnMut(&Capability<T>, Windowed<K, G::Out>),
) -> (u32, G::Out)
where
    G::Out: Clone,
{
    let (start, end) = (s.start, s.last + gap);
    let revision = match s.shown.take() {
        Some(old) => {
            debug_assert_eq!((old.start, old.end), (start, end), "stale early result");
            old.revision + 1
        }
        None => 0,
    };
    let value = agg.finish(&s.acc);
    emit(
        cap,
        Windowed::new(k.clone(), start, end, value.clone(), revision, kind),
    );
    s.shown = Some(Shown {
        start,
        end,
        revision,
        value: value.clone(),
    });
    s.changed = false;
    (revision, value)
}

impl<'scope, T: EventTime, D: ExchangeData + Clone> Session<'scope, T, D>
    for StreamVec<'scope, T, D>
{
    fn session<K, G, KF>(
        self,
        name: &str,
        gap: u64,
        policy: WindowPolicy,
        late: Option<StreamVec<'scope, T, Late<D>>>,
        key: KF,
        agg: G,
    ) -> WindowStreams<'scope, T, K, G::Out, D>
    where
        K: ExchangeData + Hash + Eq + Clone,
        G: Aggregator<D>,
        G::Out: Clone + crate::aggregate::State,
        KF: Fn(&D) -> K + 'static,
    {
        assert!(gap > 0, "session gap must be at least 1 ms");
        let scope = self.scope();
        let mut state: Sessions<T, K, G::Acc, G::Out> = Sessions::new(gap, policy, late.is_some());
        // A late record is too late once the watermark is this far past its event time.
        let reach = gap.saturating_add(policy.lateness);
        let has_late = late.is_some();
        let late = late.unwrap_or_else(|| empty(scope));
        let key = Rc::new(key);
        let (k1, k2) = (key.clone(), key.clone());
        let pact = by_key(move |d: &D| k1(d));
        let late_pact = by_key(move |d: &Late<D>| k2(&d.record));

        let op_name = format!("Session({name}, gap {gap}ms)");
        let mut builder = OperatorBuilder::new(op_name.clone(), scope);
        let wake = crate::checkpoint::waker(&scope, &builder);
        let mut main_in = builder.new_input(self, pact);
        let mut late_in = builder.new_input(late, late_pact);
        let (results_out, results) = builder.new_output();
        let (too_late_out, too_late) = builder.new_output();
        if has_late {
            let holds = "late records beyond the session's lateness";
            crate::unconnected::declare(&too_late, &op_name, "too_late", holds);
        }
        let mut results_out: VecOutput<T, Windowed<K, G::Out>> = OutputBuilder::from(results_out);
        let mut too_late_out: VecOutput<T, Late<D>> = OutputBuilder::from(too_late_out);
        let too_late_count = Rc::new(Cell::new(0u64));
        let counter = too_late_count.clone();
        // Late batches waiting, at their time, for the watermark to pass it.
        let mut pending: Waiting<T, Late<D>> = BTreeMap::new();

        let checkpoints = Checkpoints::current();
        let held = crate::checkpoint::hold_output(checkpoints.as_ref(), &mut builder);
        builder.build(move |initial| {
            let mut aligner = checkpoints.map(|ctx| {
                let aligner = Aligner::new(ctx, &op_name, &initial[held]).waking(wake);
                state.logging = true;
                state.restore(&aligner, &initial[0], &mut pending, &*key);
                aligner
            });
            move |frontiers| {
                let mut results_out = results_out.activate();
                let mut too_late_out = too_late_out.activate();
                let mut emit = |cap: &Capability<T>, w| results_out.session(cap).give(w);

                main_in.for_each_stamp(|cap, batches| {
                    let Some(time) = time_of(&cap) else {
                        return;
                    };
                    let later = aligner.as_ref().is_some_and(|a| a.later(&time));
                    // Records behind the restored state all apply at one time.
                    let (mut waiting, mut behind, mut at) = (Vec::new(), Vec::new(), time);
                    for batch in batches {
                        for record in batch.drain(..) {
                            let k = key(&record);
                            if let Some(t) = state.behind(time, Some(&k)) {
                                at = t;
                                let (event_time, watermark) = (time.event(), t.event());
                                behind.push(Late {
                                    event_time,
                                    watermark,
                                    record,
                                });
                            } else if later {
                                waiting.push(Arrival::Main(record));
                            } else {
                                state.add(k, time, &cap, &record, &agg, || key(&record), &mut emit);
                            }
                        }
                    }
                    if let Some(a) = aligner.as_mut().filter(|_| !waiting.is_empty()) {
                        a.stash(time, || cap.delayed(&time, 0), &mut waiting);
                    }
                    if !behind.is_empty() {
                        let mut too_late = too_late_out.session(&cap);
                        let waits = (aligner.as_mut(), &mut pending);
                        let delayed = |t: &T| cap.delayed(t, 0);
                        let give = |r| too_late.give(r);
                        queue_late(at, delayed, behind, reach, give, &counter, waits);
                    }
                });

                late_in.for_each_stamp(|cap, batches| {
                    let Some(time) = time_of(&cap) else {
                        return;
                    };
                    // Read behind the restored watermark: applied at it (see `behind`).
                    let at = state.behind(time, None).unwrap_or(time);
                    let mut too_late = too_late_out.session(&cap);
                    let records = batches.flat_map(|batch| batch.drain(..));
                    let waits = (aligner.as_mut(), &mut pending);
                    let delayed = |t: &T| cap.delayed(t, 0);
                    queue_late(
                        at,
                        delayed,
                        records,
                        reach,
                        |r| too_late.give(r),
                        &counter,
                        waits,
                    );
                });

                // Each checkpoint epoch the inputs have sealed, in turn: apply what waited for it,
                // write the state, and move what it held to the next epoch.
                if let Some(a) = aligner.as_mut() {
                    while let Some(epoch) = a.due(frontiers) {
                        let released = a.release(epoch);
                        state.apply_waiting(&mut pending, released, &*key, &agg, &mut emit);
                        state.checkpoint(a, epoch, &pending);
                        state.lift(epoch);
                        for (cap, _) in pending.values_mut() {
                            lift_epoch(cap, epoch);
                        }
                        let released = a.release(a.next());
                        state.apply_waiting(&mut pending, released, &*key, &agg, &mut emit);
                    }
                    let released = a.release_if_done(frontiers);
                    state.apply_waiting(&mut pending, released, &*key, &agg, &mut emit);
                }

                // In event-time order: sessions ending at or before a late batch's time,
                // then the batch; finally sessions ending at or before the watermark.
                // Records waiting for a checkpoint may still extend sessions the frontier
                // alone would end.
                let frontier = watermark(frontiers);
                let watermark = aligner
                    .as_ref()
                    .map_or(frontier, |a| frontier.min(a.stashed_from()));
                while let Some(entry) = pending.first_entry() {
                    let (now, _) = *entry.key();
                    if now >= watermark {
                        break;
                    }
                    let (cap, records) = entry.remove();
                    // The capability's time, not the key's: a checkpoint may have moved
                    // the batch's capability to a later epoch.
                    let time = *cap.time();
                    state.close(now, &agg, &mut emit);
                    state.apply_late(time, &cap, records, &*key, &agg, &mut emit);
                }
                state.close(watermark, &agg, &mut emit);
                state.fire_early(watermark, &agg, &mut emit);
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
}
