//! Stream–table joins: each stream record is enriched with its key's latest table value
//! as of the record's event time.
//!
//! The table is a stream of `(key, value)` upserts (e.g. a compacted topic), or, with
//! [`Lookup::lookup_upserts_with`], of `(key, Option<value>)` where `None` is a
//! tombstone that deletes the key (a record at or after its event time finds no value,
//! until a later upsert; a Kafka table decoded with `freshet::codec::Upserts` gives
//! tombstones for null payloads). Both inputs are exchanged by key. A stream record at `(ts, e)` waits, holding its batch's
//! capability at `(ts, e)`, until the table's event-time frontier passes `ts` (every
//! upsert at or before `ts` is in); it is then joined with the upsert of greatest event
//! time `<= ts` (among upserts at the same event time, the one at the later timestamp,
//! then the greater value, wins — a value is greater than a tombstone) and emitted at
//! `(ts, e)`.
//!
//! The table is kept as a differential-dataflow arrangement, shared and compacted as
//! differential does: an operator turns each key's upserts, in event-time order once
//! the table's frontier has passed them, into updates of a collection of `(key, value)`
//! (retract the key's previous value, insert the new one; a tombstone only retracts)
//! and `arrange_by_key` indexes it. A lookup at event time `ts` reads the trace through the arrangement's frontier
//! and, for the record's key, takes the value whose updates at event times `<= ts` sum
//! to one (epochs are ignored: `ts` is an event-time point, so an upsert read in a later
//! epoch still counts). Ties at one event time are broken by the later time, then the
//! greater value, as the upserts are applied in that order.
//!
//! The table holds no capability once its upserts are applied. The trace is compacted up
//! to the least event time a waiting or future stream record can still look up, so it
//! keeps each key's value as of then and every later change.
//!
//! Under checkpoints (see [`crate::checkpoint`]) the table is checkpointed by the
//! operator that turns upserts into updates, `Lookup(name) upserts`: per key, the
//! upserts applied that a lookup may still read (a value, then every later change) and
//! the upserts still waiting for the table's frontier; upserts of epochs after the next
//! checkpoint epoch wait in its [`Aligner`]. A restore replays the histories into the
//! arrangement at the epoch after the checkpoint, and a Kafka table side resumes at the
//! checkpoint's offsets: a restart reads only the table's changes since. A history is
//! pruned only before the least event time a record read again after a restore could
//! look up (the compaction horizon, and every stream record already emitted at an epoch
//! after the checkpoint). Stream records hold their epoch until emitted, so a complete
//! checkpoint never leaves one waiting, and the lookup itself writes no part.
//!
//! How many stream records wait is published as the operator's [`crate::backlog`]: in
//! a Freshet job the sources other than table sides pause while it is over
//! `SourceConfig::max_lookup_backlog` (the stream side waits in Kafka while the table
//! is read), so the records waiting here stay bounded.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::rc::Rc;

use differential_dataflow::collection::AsCollection;
use differential_dataflow::hashable::Hashable;
use differential_dataflow::trace::cursor::{cursor_list, Cursor};
use differential_dataflow::trace::TraceReader;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::de::DeserializeOwned;
use serde::Serialize;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;
use timely::progress::Antichain;
use timely::ExchangeData;

use crate::capability::{stash, watermark, VecOutput, Waiting};
use crate::checkpoint::{by_event, restore_owned, take_in, write_due, Aligner, Checkpoints};
use crate::join::JoinKind;
use crate::time::{event_frontier, EventTime};

/// Extension trait: as-of lookups of stream records in a table of upserts.
pub trait Lookup<'scope, T: EventTime, D> {
    /// Joins each record with the value of its key in `table` as of the record's event
    /// time, emitting `result(record, Some(value))`; a record whose key has no value
    /// yet is emitted as `result(record, None)` by a [`JoinKind::Left`] lookup and
    /// dropped by an inner one.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, JoinKind, Lookup};
    ///
    /// let out = timely::example(|scope| {
    ///     // Prices: item 1 costs 10 from t=0 and 12 from t=50.
    ///     let prices = vec![(1u8, 10u32, 0u64), (1, 12, 50)].to_stream(scope)
    ///         .assign_event_time("at", |r: &(u8, u32, u64)| r.2);
    ///     let table = timely::dataflow::operators::vec::Map::map(prices, |(k, v, _)| (k, v));
    ///     vec![(1u8, 20u64), (1, 70), (2, 70)].to_stream(scope)
    ///         .assign_event_time("at", |r: &(u8, u64)| r.1)
    ///         .lookup_with(table, "price", JoinKind::Left, |r: &(u8, u64)| r.0,
    ///             |r, price: Option<&u32>| (r.1, price.copied()))
    ///         .capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// got.sort();
    /// assert_eq!(got, vec![(20, Some(10)), (70, None), (70, Some(12))]);
    /// ```
    fn lookup_with<K, V, R, KF, F>(
        self,
        table: StreamVec<'scope, T, (K, V)>,
        name: &str,
        kind: JoinKind,
        key: KF,
        result: F,
    ) -> StreamVec<'scope, T, R>
    where
        Self: Sized,
        K: ExchangeData + Hash + Ord + Clone + Debug,
        V: ExchangeData + Ord + Clone + Debug,
        R: 'static,
        KF: Fn(&D) -> K + 'static,
        F: Fn(D, Option<&V>) -> R + 'static,
    {
        let upserts = table.map(|(k, v)| (k, Some(v)));
        self.lookup_upserts_with(upserts, name, kind, key, result)
    }

    /// [`Lookup::lookup_with`] over a table of upserts and tombstones: `(key,
    /// Some(value))` sets the key's value from its event time on, `(key, None)` deletes
    /// it (a record at or after the tombstone's event time, and before the key's next
    /// upsert, finds no value). At one event time a value wins over a tombstone.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use timely::dataflow::operators::vec::Map;
    /// use freshet_operators::{AssignEventTime, JoinKind, Lookup};
    ///
    /// let out = timely::example(|scope| {
    ///     // Item 1 costs 10 from t=0 and is withdrawn (a tombstone) at t=50.
    ///     let rows = vec![(1u8, Some(10u32), 0u64), (1, None, 50)].to_stream(scope)
    ///         .assign_event_time("at", |r: &(u8, Option<u32>, u64)| r.2);
    ///     let table = rows.map(|(k, v, _)| (k, v));
    ///     vec![(1u8, 20u64), (1, 70)].to_stream(scope)
    ///         .assign_event_time("at", |r: &(u8, u64)| r.1)
    ///         .lookup_upserts_with(table, "price", JoinKind::Left, |r: &(u8, u64)| r.0,
    ///             |r, price: Option<&u32>| (r.1, price.copied()))
    ///         .capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// got.sort();
    /// assert_eq!(got, vec![(20, Some(10)), (70, None)]);
    /// ```
    fn lookup_upserts_with<K, V, R, KF, F>(
        self,
        table: StreamVec<'scope, T, (K, Option<V>)>,
        name: &str,
        kind: JoinKind,
        key: KF,
        result: F,
    ) -> StreamVec<'scope, T, R>
    where
        K: ExchangeData + Hash + Ord + Clone + Debug,
        V: ExchangeData + Ord + Clone + Debug,
        R: 'static,
        KF: Fn(&D) -> K + 'static,
        F: Fn(D, Option<&V>) -> R + 'static;

    /// Inner lookup: `(record, value)` for records whose key has a value.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, Lookup};
    ///
    /// let out = timely::example(|scope| {
    ///     let table = vec![('a', 'A')].to_stream(scope);
    ///     vec!['a', 'b'].to_stream(scope).assign_event_time("at", |_| 5)
    ///         .lookup(table, "names", |c: &char| *c)
    ///         .capture()
    /// });
    /// let got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// assert_eq!(got, vec![('a', 'A')]);
    /// ```
    fn lookup<K, V, KF>(
        self,
        table: StreamVec<'scope, T, (K, V)>,
        name: &str,
        key: KF,
    ) -> StreamVec<'scope, T, (D, V)>
    where
        Self: Sized,
        D: 'static,
        K: ExchangeData + Hash + Ord + Clone + Debug,
        V: ExchangeData + Ord + Clone + Debug,
        KF: Fn(&D) -> K + 'static,
    {
        self.lookup_with(table, name, JoinKind::Inner, key, |d, v| {
            (d, v.expect("inner lookup has a value").clone())
        })
    }

    /// Left lookup: `(record, Some(value))`, or `(record, None)` if the key has none.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::{AssignEventTime, Lookup};
    ///
    /// let out = timely::example(|scope| {
    ///     let table = vec![('a', 1u8)].to_stream(scope);
    ///     vec!['a', 'b'].to_stream(scope).assign_event_time("at", |_| 5)
    ///         .lookup_left(table, "ids", |c: &char| *c)
    ///         .capture()
    /// });
    /// let mut got: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// got.sort();
    /// assert_eq!(got, vec![('a', Some(1)), ('b', None)]);
    /// ```
    fn lookup_left<K, V, KF>(
        self,
        table: StreamVec<'scope, T, (K, V)>,
        name: &str,
        key: KF,
    ) -> StreamVec<'scope, T, (D, Option<V>)>
    where
        Self: Sized,
        D: 'static,
        K: ExchangeData + Hash + Ord + Clone + Debug,
        V: ExchangeData + Ord + Clone + Debug,
        KF: Fn(&D) -> K + 'static,
    {
        self.lookup_with(table, name, JoinKind::Left, key, |d, v| (d, v.cloned()))
    }
}

impl<'scope, T: EventTime, D: ExchangeData> Lookup<'scope, T, D> for StreamVec<'scope, T, D> {
    fn lookup_upserts_with<K, V, R, KF, F>(
        self,
        table: StreamVec<'scope, T, (K, Option<V>)>,
        name: &str,
        kind: JoinKind,
        key: KF,
        result: F,
    ) -> StreamVec<'scope, T, R>
    where
        K: ExchangeData + Hash + Ord + Clone + Debug,
        V: ExchangeData + Ord + Clone + Debug,
        R: 'static,
        KF: Fn(&D) -> K + 'static,
        F: Fn(D, Option<&V>) -> R + 'static,
    {
        let scope = self.scope();
        let reach = Rc::new(RefCell::new(Reach::default()));
        // Under checkpoints the lookup notes the epochs it emitted at (see `Reach`).
        let noting = Checkpoints::current().is_some();
        let arranged = upsert_updates(table, name, reach.clone())
            .as_collection()
            .arrange_by_key_named(&format!("Lookup({name}) table"));
        let mut trace = arranged.trace.clone();

        let key = Rc::new(key);
        let route = key.clone();
        // The same routing as the arrangement's, so a record meets its key's updates.
        let pact = Exchange::new(move |d: &D| route(d).hashed());
        let mut builder = OperatorBuilder::new(format!("Lookup({name})"), scope);
        let mut stream_in = builder.new_input(self, pact);
        let mut table_in = builder.new_input(arranged.stream, Pipeline);
        let (output, stream) = builder.new_output();
        let mut output: VecOutput<T, R> = OutputBuilder::from(output);

        let mut waiting: Waiting<T, D> = BTreeMap::new();
        // How many records wait, published for the sources' flow control.
        let mut held = 0usize;
        let backlog = crate::backlog::register(&format!("Lookup({name})"));
        // The trace is complete through this frontier (its last span's upper).
        let mut through: Antichain<T> = Antichain::from_elem(T::minimum());
        // The logical compaction frontier last set: `(least event time still looked up, ·)`.
        let mut compacted = 0u64;

        builder.build(move |_initial| {
            move |frontiers| {
                let mut output = output.activate();
                stream_in.for_each_stamp(|cap, batches| {
                    let batches = batches.inspect(|b| held += b.len());
                    stash(&mut waiting, cap, batches)
                });
                // The batches are read from the trace; this input tells when it moved.
                table_in.for_each(|_, spans| spans.clear());
                trace.read_upper(&mut through);

                let table_frontier = event_frontier(&through.borrow());
                let ready = waiting
                    .first_key_value()
                    .is_some_and(|((ts, _), _)| *ts < table_frontier);
                if ready {
                    let spans = trace
                        .spans_through(through.borrow())
                        .expect("the trace is not compacted past its last batch");
                    let (mut cursor, storage) =
                        cursor_list(spans.into_iter().filter_map(|s| s.inner).collect());
                    while let Some(entry) = waiting.first_entry() {
                        let (ts, _) = *entry.key();
                        if ts >= table_frontier {
                            break;
                        }
                        let (cap, records) = entry.remove();
                        held -= records.len();
                        if noting {
                            reach.borrow_mut().emitted((ts, cap.time().epoch()));
                        }
                        let mut session = output.session(&cap);
                        for record in records {
                            let k = key(&record);
                            cursor.rewind_keys(&storage);
                            cursor.seek_key(&storage, &k);
                            let mut value = None;
                            if cursor.get_key(&storage) == Some(&k) {
                                while let Some(v) = cursor.get_val(&storage) {
                                    let mut count = 0isize;
                                    cursor.map_times(&storage, |t, d| {
                                        if t.event() <= ts {
                                            count += *d;
                                        }
                                    });
                                    if count > 0 {
                                        value = Some(v);
                                        break;
                                    }
                                    cursor.step_val(&storage);
                                }
                            }
                            if value.is_some() || kind == JoinKind::Left {
                                session.give(result(record, value));
                            }
                        }
                    }
                }

                // No stream record below `horizon` can still be looked up: updates below
                // it may be merged (logically) and batches read (physically).
                let stream_frontier = event_frontier(&frontiers[0].frontier());
                let horizon = waiting
                    .first_key_value()
                    .map_or(stream_frontier, |((ts, _), _)| stream_frontier.min(*ts));
                if horizon > compacted && horizon < u64::MAX {
                    compacted = horizon;
                    reach.borrow_mut().horizon = horizon;
                    let floor = T::minimum().with_event(horizon);
                    trace.set_logical_compaction(Antichain::from_elem(floor).borrow());
                }
                if !through.is_empty() {
                    trace.set_physical_compaction(through.borrow());
                }
                if let Some(b) = &backlog {
                    b.set(held, table_frontier);
                }
            }
        });
        stream
    }
}

/// Turns a table's upserts into updates of the collection of each key's current value:
/// per key, in order of event time, then time, then value (a tombstone first), once the
/// table's event-time frontier has passed them, the previous value is retracted and the
/// new one, if any (not for a tombstone), inserted, at the upsert's time. Exchanged by
/// the key's differential hash (as the arrangement).
///
/// Under checkpoints the table is this operator's part: every key's [`History`] (pruned
/// to what the lookup's stream records may still read, see [`Reach`]) and the upserts
/// still waiting for the frontier. A restore replays each restored history through
/// [`Table::apply`] at the epoch after the checkpoint, so the arrangement holds what it
/// held (lookups compare event times only).
fn upsert_updates<'scope, T, K, V>(
    table: StreamVec<'scope, T, (K, Option<V>)>,
    name: &str,
    reach: Rc<RefCell<Reach>>,
) -> StreamVec<'scope, T, ((K, V), T, isize)>
where
    T: EventTime,
    K: ExchangeData + Hash + Ord + Clone + Debug,
    V: ExchangeData + Ord + Clone + Debug,
{
    let scope = table.scope();
    let name = format!("Lookup({name}) upserts");
    let pact = Exchange::new(|(k, _): &(K, Option<V>)| k.hashed());
    let mut builder = OperatorBuilder::new(name.clone(), scope);
    let wake = crate::checkpoint::waker(&scope, &builder);
    let mut input = builder.new_input(table, pact);
    let (output, stream) = builder.new_output();
    let mut output: VecOutput<T, ((K, V), T, isize)> = OutputBuilder::from(output);

    let mut pending: Waiting<T, (K, Option<V>)> = BTreeMap::new();
    let mut table = Table {
        rows: FxHashMap::default(),
        logging: false,
        changed: FxHashSet::default(),
    };
    let checkpoints = Checkpoints::current();

    let held = crate::checkpoint::hold_output(checkpoints.as_ref(), &mut builder);
    builder.build(move |initial| {
        let mut replay = None;
        let mut aligner = checkpoints.map(|ctx| {
            let aligner = Aligner::new(ctx, &name, &initial[held]).waking(wake);
            table.logging = true;
            replay = table.restore(&aligner, &initial[0], &mut pending);
            aligner
        });
        move |frontiers| {
            let mut output = output.activate();
            if let Some((cap, updates)) = replay.take() {
                output.session(&cap).give_iterator(updates.into_iter());
            }
            input.for_each_stamp(|cap, batches| {
                take_in(aligner.as_mut(), &mut pending, cap, batches)
            });

            // Each checkpoint epoch the input has sealed, in turn: what waited for it
            // joins the pending upserts, the part is written, and what is pending moves
            // to the next epoch.
            if let Some(a) = aligner.as_mut() {
                write_due(a, frontiers, &mut pending, |a, epoch, pending| {
                    let below = reach.borrow_mut().prunable_in(epoch);
                    table.checkpoint(a, epoch, pending, below);
                });
            }

            // Upserts waiting for a checkpoint are applied in event-time order too.
            let frontier = watermark(frontiers);
            let applied_below = aligner
                .as_ref()
                .map_or(frontier, |a| frontier.min(a.stashed_from()));
            // Under checkpoints histories are pruned as parts are written.
            let prune_below = if aligner.is_some() {
                0
            } else {
                reach.borrow().horizon
            };
            while let Some(entry) = pending.first_entry() {
                if entry.key().0 >= applied_below {
                    break;
                }
                let ((event, _), (cap, mut upserts)) = entry.remove_entry();
                upserts.sort_by(|a, b| a.1.cmp(&b.1));
                let time = *cap.time();
                let mut session = output.session(&cap);
                for (k, v) in upserts {
                    table.apply(k, event, v, prune_below, |k, v, diff| {
                        session.give(((k.clone(), v.clone()), time, diff))
                    });
                }
            }
            if let Some(a) = aligner.as_mut() {
                a.settle(frontier);
            }
        }
    });
    stream
}

/// What a lookup tells its table's operator (on the same worker, for the same keys):
/// how far back its stream records can still look, so the table's history before that
/// can be pruned.
#[derive(Default)]
struct Reach {
    /// The least event time a waiting or future stream record can look up (the trace's
    /// logical compaction).
    horizon: u64,
    /// Under checkpoints, per epoch, the least event time of a stream record emitted
    /// at it: after a restore, the records of epochs after the checkpoint are read
    /// again and must find the history they found before.
    emitted: BTreeMap<u64, u64>,
}

impl Reach {
    /// Notes a stream record emitted at `time`.
    fn emitted(&mut self, time: (u64, u64)) {
        let (event, epoch) = time;
        let least = self.emitted.entry(epoch).or_insert(event);
        *least = (*least).min(event);
    }

    /// The event time before which the table's history may be pruned in the
    /// checkpoint of `epoch` (and from then on): no stream record a restore from it
    /// reads again looks up before it.
    fn prunable_in(&mut self, epoch: u64) -> u64 {
        self.emitted = self.emitted.split_off(&(epoch + 1));
        self.emitted.values().copied().fold(self.horizon, u64::min)
    }
}

/// A key's upserts applied that a lookup may still read, in the order applied: `(event
/// time, value)`, `None` a tombstone. The last one holds the key's current value.
type History<V> = Vec<(u64, Option<V>)>;

/// The table of a lookup's worker: every key's [`History`], and which keys changed
/// since the last checkpoint part.
struct Table<K, V> {
    rows: FxHashMap<K, History<V>>,
    /// Whether changes are tracked for incremental checkpoints.
    logging: bool,
    changed: FxHashSet<K>,
}

impl<K: Hash + Eq + Clone, V: Clone> Table<K, V> {
    /// Applies an upsert at event time `event`: `emit`s the new value's insertion (if
    /// any) and the previous value's retraction (if any), then prunes the key's history
    /// before `prune_below`.
    fn apply(
        &mut self,
        key: K,
        event: u64,
        value: Option<V>,
        prune_below: u64,
        mut emit: impl FnMut(&K, &V, isize),
    ) {
        let history = self.rows.entry(key.clone()).or_default();
        if let Some(v) = &value {
            emit(&key, v, 1);
        }
        if let Some((_, Some(old))) = history.last() {
            emit(&key, old, -1);
        }
        history.push((event, value));
        self.prune(&key, prune_below);
        if self.logging {
            self.changed.insert(key);
        }
    }

    /// Forgets what no lookup at or after `below` can tell apart: an upsert followed by
    /// another, both before `below` (at or after it, the first one's insertion and
    /// retraction cancel), and a key whose only upsert left is a tombstone before it.
    fn prune(&mut self, key: &K, below: u64) {
        let Some(history) = self.rows.get_mut(key) else {
            return;
        };
        let old = history
            .windows(2)
            .take_while(|w| w[0].0 < below && w[1].0 < below)
            .count();
        history.drain(..old);
        if matches!(history[..], [(event, None)] if event < below) {
            self.rows.remove(key);
        }
    }
}

/// A table's upsert: `(key, value)`, `None` a tombstone.
type Upsert<K, V> = (K, Option<V>);

/// The part's unkeyed state: the upserts waiting for the frontier, at their time.
type Pending<T, K, V> = Vec<(T, Vec<Upsert<K, V>>)>;

impl<K: Hash + Eq + Clone + Serialize, V: Clone + Serialize> Table<K, V> {
    /// Writes this worker's part of checkpoint `epoch`: the histories changed since the
    /// last part (pruned before `below` first) or every history, and the upserts
    /// pending.
    fn checkpoint<T: EventTime>(
        &mut self,
        aligner: &mut Aligner<T, (K, Option<V>)>,
        epoch: u64,
        pending: &Waiting<T, (K, Option<V>)>,
        below: u64,
    ) {
        let extra: Vec<(T, &Vec<Upsert<K, V>>)> =
            pending.iter().map(|((_, t), (_, d))| (*t, d)).collect();
        let mut changed = std::mem::take(&mut self.changed);
        for k in &changed {
            self.prune(k, below);
        }
        let rows = &self.rows;
        aligner.write_log(epoch, extra, |want| {
            let all = rows.iter().map(|(k, h)| (k, Some(h)));
            want.pick(all, changed.iter().map(|k| (k, rows.get(k))))
        });
        changed.clear();
        self.changed = changed;
    }
}

impl<K, V> Table<K, V>
where
    K: Hash + Eq + Clone + DeserializeOwned,
    V: Clone + DeserializeOwned,
{
    /// Loads the restored checkpoint's histories of the keys this worker owns (by the
    /// exchange's routing, `hash % workers`) and its pending upserts. Returns the
    /// updates that rebuild the arrangement, under a capability (minted from `initial`)
    /// at the epoch after the checkpoint; `None` if nothing is restored.
    #[allow(clippy::type_complexity)]
    fn restore<T: EventTime>(
        &mut self,
        aligner: &Aligner<T, (K, Option<V>)>,
        initial: &Capability<T>,
        pending: &mut Waiting<T, (K, Option<V>)>,
    ) -> Option<(Capability<T>, Vec<((K, V), T, isize)>)> {
        let ctx = aligner.checkpoints();
        let (epoch, parts) = aligner.restored_log::<Pending<T, K, V>, K, History<V>>()?;
        let owns = |k: &K| k.hashed() % ctx.workers() as u64 == ctx.worker() as u64;
        let cap = initial.delayed(&initial.time().with_epoch(epoch));
        let mut updates = Vec::new();
        for (waiting, rows) in parts {
            for (k, history) in rows {
                if !owns(&k) {
                    continue;
                }
                for (event, value) in history {
                    let time = cap.time().with_event(event);
                    self.apply(k.clone(), event, value, 0, |k, v, diff| {
                        updates.push(((k.clone(), v.clone()), time, diff))
                    });
                }
            }
            restore_owned(pending, by_event(waiting), initial, epoch, |(k, _)| owns(k));
        }
        self.changed.clear();
        Some((cap, updates))
    }
}
