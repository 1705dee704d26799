//! Durable state: how stateful operators take part in epoch-aligned checkpoints.
//!
//! A checkpoint at epoch `C` is a consistent cut: every checkpointing operator's state
//! reflecting exactly the records of epochs `<= C`, written as one *part* per operator
//! and worker. Checkpoints are taken at the epochs of a fixed grid, every `every`
//! epochs (`(C + 1) % every == 0`), which every worker of every process computes alike.
//!
//! The framework installs a [`Checkpoints`] context on each worker while the job's
//! dataflow is built ([`Checkpoints::install`]); an operator built then finds it with
//! [`Checkpoints::current`] and registers its unique name. Built without a context
//! (plain timely, tests, benchmarks), operators keep their state in memory only.
//!
//! Per operator, an [`Aligner`] does the epoch bookkeeping:
//! - records of epochs after the next checkpoint epoch are kept apart (stashed, with
//!   their capability) until the input frontier has passed that epoch;
//! - once it has, the operator applies the stash up to the checkpoint epoch, writes its
//!   state, and moves every capability it held for state of epochs `<= C` to epoch
//!   `C + 1`: whatever it emits from that state from now on is after the cut, and the
//!   checkpoint answers for the state, so commits no longer wait for windows to close;
//! - the aligner holds one capability at `(watermark, C)` until the part of `C` is
//!   durable, so the job cannot see epoch `C` complete (and commit it) before then.
//!
//! With [`Checkpoints::with_async_writes`] (what jobs use) a part is serialized on the
//! worker and written by a thread of its own, which wakes the operator when it is
//! durable: the worker goes on processing while the store syncs. An operator that can
//! snapshot its state cheaply (rolling windows share their blocks behind `Arc`s) hands
//! the writer thread the snapshot instead ([`Aligner::end_log_owned`]), which
//! serializes it too. A failed write leaves
//! the held capability where it was (commits stop), is reported, and makes the next
//! part a full one; the next checkpoint epoch is tried.
//!
//! Operators with keyed state write it as a [`LogPart`]: a full part (every entry) at
//! an operator's first checkpoint and after a failed write, and otherwise an
//! incremental part naming the previous one as its base and holding only the entries
//! changed since. The worker's cost of a part therefore follows the rate of change,
//! not the size of the state. Every [`Checkpoints::full_every`]-th part of a chain is
//! *compacted* off the worker and off the part's acknowledgement: once the part is
//! written, a compaction thread reads the chain back from the store, replays it, and
//! writes the result beside the part as its *image* ([`Checkpoints::image_path`]), the
//! full part the chain stands for (keeping the entries [`Aligner::compact_keeping`]
//! says are live). Once the image is durable, later parts start their chain there: a
//! restore reads the newest part, follows the bases back to the chain's start (its
//! `from`) and reads the image there. A chain never holds more than `2 * full_every`
//! parts (an operator whose compaction is still running then waits for it), so every
//! part a checkpoint needs is at most `(2 * full_every - 1) * every` epochs older than
//! it ([`chain_from`]), which is what retention keeps.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::sync::{mpsc, Arc};

use serde::de::DeserializeOwned;
use serde::Serialize;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::{Capability, CapabilitySet, InputCapability, Probe};
use timely::progress::frontier::MutableAntichain;
use timely::scheduling::SyncActivator;

use crate::time::EventTime;

mod log;

use log::Live;
pub use log::LogPart;

/// The number of key groups keyed state is split into. A key belongs to group
/// `hash(key) % KEY_GROUPS`, and group `g` to worker `g % workers`, so a checkpoint
/// taken at one number of workers restores at another (up to `KEY_GROUPS` workers).
pub const KEY_GROUPS: u64 = 256;

/// How many parts of a chain (from a full part or an image, and the incremental ones
/// building on it) are compacted into an image, unless told; a chain holds at most
/// twice as many.
pub const DEFAULT_FULL_EVERY: u64 = 10;

/// What an image's path adds to its part's (see [`Checkpoints::image_path`]).
const IMAGE_SUFFIX: &str = ".full";

/// How many entries an operator capturing its part in steps captures per activation,
/// unless told: a few hundred microseconds of the worker at a time.
pub const DEFAULT_CAPTURE_STEP: usize = 512;

/// A keyed part begun and not yet ended (see [`Aligner::begin_log`]).
#[derive(Debug)]
pub struct LogStart {
    epoch: u64,
    base: Option<u64>,
    from: u64,
    want: Want,
    /// Once written, the part's chain is compacted into its image.
    compact: bool,
}

impl LogStart {
    /// Which entries the part must hold: [`Want::All`] for a full part, else the
    /// entries changed since the last part.
    pub fn want(&self) -> Want {
        self.want
    }
}

/// Which entries a keyed part holds (see [`Aligner::write_log`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// Every entry: a full part.
    All,
    /// The entries changed since the last part (`None` for those removed).
    Changed,
}

impl Want {
    /// The entries the part holds, from an operator's `all` entries and the `changed`
    /// ones: `all` for a full part, else `changed`.
    pub fn pick<K, V>(
        self,
        all: impl Iterator<Item = (K, Option<V>)>,
        changed: impl Iterator<Item = (K, Option<V>)>,
    ) -> Vec<(K, Option<V>)> {
        match self {
            Want::All => all.collect(),
            Want::Changed => changed.collect(),
        }
    }

    /// [`Want::pick`] for entries whose value costs something to make: `value` is asked
    /// only for the keys the part holds.
    pub fn pick_by_key<K, V>(
        self,
        all: impl Iterator<Item = K>,
        changed: impl Iterator<Item = K>,
        value: impl Fn(&K) -> Option<V>,
    ) -> Vec<(K, Option<V>)> {
        let keys: Box<dyn Iterator<Item = K>> = match self {
            Want::All => Box::new(all),
            Want::Changed => Box::new(changed),
        };
        keys.map(|k| {
            let v = value(&k);
            (k, v)
        })
        .collect()
    }
}

/// The oldest epoch whose parts checkpoint `epoch` may need (taken every `every`
/// epochs, with chains compacted every `full_every` parts): a chain holds at most
/// `2 * full_every` parts (see [`Aligner`]), so retention keeps every part from
/// `(2 * full_every - 1) * every` epochs back on.
pub fn chain_from(epoch: u64, every: u64, full_every: u64) -> u64 {
    epoch.saturating_sub(
        full_every
            .max(1)
            .saturating_mul(2)
            .saturating_sub(1)
            .saturating_mul(every.max(1)),
    )
}

/// Where checkpoint parts are written and read back: a local directory, an object
/// store. `put` returns only once the bytes are durable, and replaces atomically.
pub trait StateStore: Send + Sync + 'static {
    /// Writes `bytes` at `path`, durably.
    fn put(&self, path: &str, bytes: &[u8]) -> std::io::Result<()>;
    /// Reads `path`, or `None` if nothing is there.
    fn get(&self, path: &str) -> std::io::Result<Option<Vec<u8>>>;
}

/// The checkpoint a job restores from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restore {
    /// Its epoch: state reflects the records of epochs `<= epoch`.
    pub epoch: u64,
    /// How many workers wrote it (each wrote one part per operator).
    pub workers: usize,
}

/// What an operator reports when a part could not be written.
pub type FailureHook = Box<dyn Fn(&str, u64, &std::io::Error)>;

/// What an operator without a late input reports when it drops records read behind its
/// restored state (see [`restored_through`]): its name and how many.
pub type DroppedHook = Box<dyn Fn(&str, u64)>;

struct Inner {
    store: Arc<dyn StateStore>,
    every: u64,
    worker: usize,
    workers: usize,
    restore: Option<Restore>,
    floor: std::cell::Cell<u64>,
    full_every: std::cell::Cell<u64>,
    capture_step: std::cell::Cell<usize>,
    /// The writer thread's queue and the thread, if parts are written off the worker
    /// thread.
    writer: RefCell<Option<mpsc::Sender<Job>>>,
    writer_thread: RefCell<Option<std::thread::JoinHandle<()>>>,
    /// The compaction thread, fed by the writer thread (see [`compact_images`]).
    compactor_thread: RefCell<Option<std::thread::JoinHandle<()>>>,
    names: RefCell<BTreeSet<String>>,
    /// Names whose restored parts an operator reads without writing parts of its own
    /// (see [`Checkpoints::adopt`]).
    adopted: RefCell<BTreeSet<String>>,
    on_failure: FailureHook,
    on_dropped: RefCell<Option<DroppedHook>>,
    /// The probe (a `ProbeHandle<T>`) that tells the job which epochs are complete, if
    /// operators hold their checkpoint epochs on outputs of their own feeding it.
    durability: RefCell<Option<Rc<dyn std::any::Any>>>,
}

impl Drop for Inner {
    /// Waits for the writer thread to write every part given to it: a worker that
    /// ends (a bounded job, a benchmark run) leaves its parts in the store.
    fn drop(&mut self) {
        self.writer.borrow_mut().take();
        if let Some(thread) = self.writer_thread.borrow_mut().take() {
            let _ = thread.join();
        }
        // The writer thread held its queue: it ends with it.
        if let Some(thread) = self.compactor_thread.borrow_mut().take() {
            let _ = thread.join();
        }
    }
}

/// One worker's checkpoint settings, shared by the operators built on it.
#[derive(Clone)]
pub struct Checkpoints(Rc<Inner>);

thread_local! {
    static CURRENT: RefCell<Option<Checkpoints>> = const { RefCell::new(None) };
}

/// Uninstalls the context when dropped.
pub struct Installed(());

impl Drop for Installed {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

impl Checkpoints {
    /// Settings for worker `worker` of `workers`: a checkpoint every `every` epochs
    /// into `store`, restoring from `restore` if given; `on_failure` hears of every
    /// part that could not be written.
    pub fn new(
        store: Arc<dyn StateStore>,
        every: u64,
        worker: usize,
        workers: usize,
        restore: Option<Restore>,
        on_failure: FailureHook,
    ) -> Self {
        Checkpoints(Rc::new(Inner {
            store,
            every: every.max(1),
            worker,
            workers,
            floor: std::cell::Cell::new(restore.map_or(0, |r| r.epoch + 1)),
            restore,
            full_every: std::cell::Cell::new(DEFAULT_FULL_EVERY),
            capture_step: std::cell::Cell::new(DEFAULT_CAPTURE_STEP),
            writer: RefCell::new(None),
            writer_thread: RefCell::new(None),
            compactor_thread: RefCell::new(None),
            names: RefCell::new(BTreeSet::new()),
            adopted: RefCell::new(BTreeSet::new()),
            on_failure,
            on_dropped: RefCell::new(None),
            durability: RefCell::new(None),
        }))
    }

    /// `on_dropped` hears of the records operators without a late input drop after a
    /// restore because they were read behind the restored state (late for the run
    /// before the crash: see [`restored_through`]).
    pub fn with_dropped_hook(self, on_dropped: DroppedHook) -> Self {
        *self.0.on_dropped.borrow_mut() = Some(on_dropped);
        self
    }

    /// Reports `count` records `operator` dropped as behind its restored state.
    pub fn dropped_behind(&self, operator: &str, count: u64) {
        if let Some(hook) = self.0.on_dropped.borrow().as_ref() {
            hook(operator, count);
        }
    }

    /// Makes these settings the ones operators built on this thread find, until the
    /// returned guard is dropped.
    pub fn install(&self) -> Installed {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
        Installed(())
    }

    /// The settings installed on this thread, if any.
    pub fn current() -> Option<Checkpoints> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// The greatest checkpoint epoch at or below `epoch`, if any.
    pub fn at_or_before(&self, epoch: u64) -> Option<u64> {
        grid_at_or_before(epoch, self.0.every)
    }

    /// The least checkpoint epoch at or above `epoch`.
    pub fn at_or_after(&self, epoch: u64) -> u64 {
        epoch
            .saturating_add(1)
            .div_ceil(self.0.every)
            .saturating_mul(self.0.every)
            .saturating_sub(1)
    }

    /// The path of the part of operator `name` written by `worker` at `epoch`.
    pub fn part_path(epoch: u64, name: &str, worker: usize) -> String {
        format!("epoch-{epoch:020}/{}/{worker}", sanitize(name))
    }

    /// The path of the compacted image of that part: the full part its chain stands
    /// for, written later by the compaction thread.
    pub fn image_path(epoch: u64, name: &str, worker: usize) -> String {
        format!("{}{IMAGE_SUFFIX}", Self::part_path(epoch, name, worker))
    }

    /// Whether `path` is that of an image ([`Checkpoints::image_path`]), not a part.
    pub fn is_image_path(path: &str) -> bool {
        path.ends_with(IMAGE_SUFFIX)
    }

    /// A checkpoint is taken every this many epochs.
    pub fn every(&self) -> u64 {
        self.0.every
    }

    /// This worker's index.
    pub fn worker(&self) -> usize {
        self.0.worker
    }

    /// How many workers the job runs.
    pub fn workers(&self) -> usize {
        self.0.workers
    }

    /// This run's epochs start at or after `floor` (and after the restored checkpoint):
    /// a crashed run may have left parts of checkpoints it never completed, and a new
    /// part must never land beside them under the same epoch.
    pub fn with_floor(self, floor: u64) -> Self {
        self.0.floor.set(self.0.floor.get().max(floor));
        self
    }

    /// Operators' chains of parts are compacted every `full_every` parts (at least 1:
    /// every part full), incremental parts in between.
    pub fn with_full_every(self, full_every: u64) -> Self {
        self.0.full_every.set(full_every.max(1));
        self
    }

    /// Operators' parts are written on a thread of this worker's own (serialized on
    /// the worker, or by the thread for [`Aligner::end_log_owned`], then written and
    /// acknowledged in order): the worker goes on while the store syncs, and an
    /// operator's aligner holds the checkpoint's epoch until its part is acknowledged.
    /// Chains are compacted on another thread, so that neither the worker nor the
    /// parts after waits for it. Without it, parts are written and compacted inline.
    pub fn with_async_writes(self) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (compactions, compaction_queue) = mpsc::channel::<Compaction>();
        let store = self.0.store.clone();
        let thread = std::thread::Builder::new()
            .name(format!("freshet-checkpoint-{}", self.0.worker))
            .spawn(move || write_parts(&*store, queue, Some(compactions)))
            .expect("a checkpoint writer thread starts");
        let store = self.0.store.clone();
        let compactor = std::thread::Builder::new()
            .name(format!("freshet-compact-{}", self.0.worker))
            .spawn(move || compact_images(&*store, compaction_queue))
            .expect("a checkpoint compaction thread starts");
        *self.0.writer.borrow_mut() = Some(jobs);
        *self.0.writer_thread.borrow_mut() = Some(thread);
        *self.0.compactor_thread.borrow_mut() = Some(compactor);
        self
    }

    /// `probe` is what the job watches to know which epochs are complete (its sinks'
    /// acknowledgements): operators built on this context hold each checkpoint epoch
    /// until their part is durable on an output of their own feeding it
    /// ([`hold_output`]), not on their data output. An operator downstream of another
    /// then takes its part as soon as its input has sealed the epoch, without waiting
    /// for the upstream part to be written. Without a probe (or with one of another
    /// timestamp type) the hold is on the operator's first output.
    pub fn with_durability_probe<T: timely::progress::Timestamp>(
        self,
        probe: ProbeHandle<T>,
    ) -> Self {
        *self.0.durability.borrow_mut() = Some(Rc::new(probe));
        self
    }

    /// Operators that capture their parts in steps after the checkpoint (rolling
    /// windows) capture at most `entries` entries per activation (at least 1).
    pub fn with_capture_step(self, entries: usize) -> Self {
        self.0.capture_step.set(entries.max(1));
        self
    }

    /// How many entries an operator that captures its part in steps captures per
    /// activation.
    pub fn capture_step(&self) -> usize {
        self.0.capture_step.get()
    }

    /// Every this many parts, an operator's chain is compacted into a full image, off
    /// the worker; a chain holds at most twice as many.
    pub fn full_every(&self) -> u64 {
        self.0.full_every.get()
    }

    /// The least epoch this run may take a checkpoint at.
    pub fn floor(&self) -> u64 {
        self.0.floor.get()
    }

    /// The checkpoint this run restores from, if any.
    pub fn restore(&self) -> Option<Restore> {
        self.0.restore
    }

    /// Whether this run restores a checkpoint written at its own number of workers:
    /// then each worker's restored part is its own.
    pub fn restored_at_same_scale(&self) -> bool {
        self.0.restore.is_some_and(|r| r.workers == self.0.workers)
    }

    /// The names of the checkpointing operators built so far.
    pub fn names(&self) -> Vec<String> {
        self.0.names.borrow().iter().cloned().collect()
    }

    /// Registers a checkpointing operator's name.
    ///
    /// # Panics
    /// If another operator of the job registered the same name: their parts would
    /// overwrite each other.
    pub fn register(&self, name: &str) {
        if !self.0.names.borrow_mut().insert(name.to_string()) {
            panic!(
                "two stateful operators are named {name:?}: checkpoints key state by the \
                 operator's name, so each needs a unique one"
            );
        }
    }

    /// Claims the restored parts of `name` without writing parts under it: an operator
    /// that stands in for another one (at one worker, a pre-aggregated window runs its
    /// two stages as one operator) reads them at its restore, so they are not state
    /// without an owner.
    pub fn adopt(&self, name: &str) {
        self.0.adopted.borrow_mut().insert(name.to_string());
    }

    /// The names adopted so far (see [`Checkpoints::adopt`]).
    pub fn adopted(&self) -> Vec<String> {
        self.0.adopted.borrow().iter().cloned().collect()
    }

    /// Whether the key with hash `hash` belongs to this worker.
    pub fn owns(&self, hash: u64) -> bool {
        ((hash % KEY_GROUPS) as usize) % self.0.workers == self.0.worker
    }

    /// Writes this worker's part of `name` at `epoch`; true once it is durable.
    pub fn write<S: Serialize>(&self, name: &str, epoch: u64, state: &S) -> bool {
        self.put(name, epoch, encode(state))
    }

    /// Writes `bytes` (unless they could not be made) as this worker's part of `name`
    /// at `epoch`; true once it is durable.
    fn put(&self, name: &str, epoch: u64, bytes: std::io::Result<Vec<u8>>) -> bool {
        let path = Self::part_path(epoch, name, self.0.worker);
        let result = bytes.and_then(|bytes| self.0.store.put(&path, &bytes));
        match result {
            Ok(()) => true,
            Err(e) => {
                (self.0.on_failure)(name, epoch, &e);
                false
            }
        }
    }

    /// Every part of `name` in the checkpoint restored from (one per worker that wrote
    /// it; none if the operator is new or nothing is restored).
    ///
    /// # Panics
    /// If a part exists but cannot be read or decoded: the job must not start from
    /// state it cannot trust.
    pub fn read_all<S: DeserializeOwned>(&self, name: &str) -> Vec<S> {
        let Some(restore) = self.0.restore else {
            return Vec::new();
        };
        let parts: Vec<S> = (0..restore.workers)
            .filter_map(|worker| self.read_part(&Self::part_path(restore.epoch, name, worker)))
            .collect();
        Self::all_or_none(restore, name, parts.len());
        parts
    }

    /// A checkpoint holds a part of an operator from every worker or from none (an
    /// operator new to the job): a restore that finds `found` of them otherwise would
    /// start some workers' keys empty without a word.
    ///
    /// # Panics
    /// If some but not all of `restore`'s workers wrote a part of `name`.
    fn all_or_none(restore: Restore, name: &str, found: usize) {
        assert!(
            found == 0 || found == restore.workers,
            "checkpoint {} holds parts of {name:?} from {found} of its {} workers: the \
             others are missing, and their state cannot be restored",
            restore.epoch,
            restore.workers
        );
    }

    /// The part at `path`, `None` if there is none.
    ///
    /// # Panics
    /// If it exists but cannot be read or decoded: the job must not start from state it
    /// cannot trust.
    fn read_part<S: DeserializeOwned>(&self, path: &str) -> Option<S> {
        match self.0.store.get(path) {
            Ok(Some(bytes)) => Some(
                bincode::deserialize(&bytes)
                    .unwrap_or_else(|e| panic!("checkpoint part {path} cannot be decoded: {e}")),
            ),
            Ok(None) => None,
            Err(e) => panic!("checkpoint part {path} cannot be read: {e}"),
        }
    }
}

impl Checkpoints {
    /// The keyed state of `name` in the checkpoint restored from, one `(extra, entries)`
    /// per worker that wrote a part: each worker's log read back from the restored
    /// part through its bases to the oldest part it needs (its `from`), and replayed.
    ///
    /// # Panics
    /// If a part or a base it names cannot be read or decoded.
    pub fn read_log<E, K, V>(&self, name: &str) -> Vec<(E, Vec<(K, V)>)>
    where
        E: DeserializeOwned,
        K: DeserializeOwned,
        V: DeserializeOwned,
    {
        let Some(restore) = self.0.restore else {
            return Vec::new();
        };
        let mut logs = Vec::new();
        for worker in 0..restore.workers {
            let path = Self::part_path(restore.epoch, name, worker);
            let newest = self
                .0
                .store
                .get(&path)
                .unwrap_or_else(|e| panic!("checkpoint part {path} cannot be read: {e}"));
            // None: the operator wrote no part (it is new), it starts empty.
            let Some(newest) = newest else {
                continue;
            };
            let store = &*self.0.store;
            let state = read_chain(store, name, worker, restore.epoch, newest)
                .and_then(|chain| log::decode_state(log::replay(&chain)?));
            let log = state.unwrap_or_else(|e| {
                panic!("checkpoint part {path} and its bases cannot be restored: {e}")
            });
            logs.push(log);
        }
        Self::all_or_none(restore, name, logs.len());
        logs
    }
}

/// A part for the writer thread.
struct Job {
    path: String,
    name: String,
    worker: usize,
    epoch: u64,
    /// Complete by itself (not building on an earlier part).
    full: bool,
    /// Once written, the chain it ends is compacted into its image, keeping the
    /// entries `live` says are (every one without it).
    compact: bool,
    live: Option<Live>,
    part: Encoded,
    reply: mpsc::Sender<Written>,
    /// Wakes the operator to hear the answer.
    wake: Option<SyncActivator>,
}

/// A part's bytes, or what makes them: an operator that hands over a snapshot of its
/// state it owns (see [`Aligner::end_log_owned`]) has it serialized by the writer
/// thread, off the worker.
enum Encoded {
    Bytes(Vec<u8>),
    Later(Box<dyn FnOnce() -> std::io::Result<Vec<u8>> + Send>),
}

impl Encoded {
    fn bytes(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoded::Bytes(bytes) => Ok(bytes),
            Encoded::Later(encode) => encode(),
        }
    }
}

/// `state` as a part's bytes.
fn encode<S: Serialize + ?Sized>(state: &S) -> std::io::Result<Vec<u8>> {
    bincode::serialize(state).map_err(std::io::Error::other)
}

/// The writer thread's answer: the part of `epoch` (or its image, from the compaction
/// thread) is durable, or why not.
struct Written {
    epoch: u64,
    image: bool,
    result: std::io::Result<()>,
}

/// The writer thread: writes parts in the order given, and hands those marked for
/// compaction to the compaction thread once written (to `compactions`; compacted at
/// once, on this thread, without it). After a failed part, the incremental parts of
/// the same operator that build on it fail too, unwritten, until its next full part:
/// a part whose base is missing must never be found complete.
fn write_parts(
    store: &dyn StateStore,
    queue: mpsc::Receiver<Job>,
    compactions: Option<mpsc::Sender<Compaction>>,
) {
    let mut broken = BTreeSet::new();
    for job in queue {
        let written = if !job.full && broken.contains(&job.name) {
            Err(std::io::Error::other(
                "the earlier part it builds on was not written",
            ))
        } else {
            job.part
                .bytes()
                .and_then(|bytes| store.put(&job.path, &bytes).map(|()| bytes))
        };
        let mut compaction = None;
        let result = match written {
            Ok(bytes) => {
                if job.full {
                    broken.remove(&job.name);
                }
                if job.compact {
                    compaction = Some(Compaction {
                        name: job.name.clone(),
                        worker: job.worker,
                        epoch: job.epoch,
                        newest: bytes,
                        live: job.live,
                        reply: job.reply.clone(),
                        wake: job.wake.clone(),
                    });
                }
                Ok(())
            }
            Err(e) => {
                broken.insert(job.name.clone());
                Err(e)
            }
        };
        // The operator is gone (its dataflow was dropped): nobody waits for the answer.
        let _ = job.reply.send(Written {
            epoch: job.epoch,
            image: false,
            result,
        });
        if let Some(wake) = &job.wake {
            let _ = wake.activate();
        }
        match (compaction, &compactions) {
            (None, _) => {}
            // Gone only if the worker is: nobody waits for it then.
            (Some(c), Some(queue)) => drop(queue.send(c)),
            (Some(c), None) => compact_image(store, c),
        }
    }
}

/// A chain to compact: the part that ends it, once written.
struct Compaction {
    name: String,
    worker: usize,
    epoch: u64,
    /// The part's bytes.
    newest: Vec<u8>,
    live: Option<Live>,
    reply: mpsc::Sender<Written>,
    wake: Option<SyncActivator>,
}

/// The compaction thread: writes the image of each chain it is given, and answers.
fn compact_images(store: &dyn StateStore, queue: mpsc::Receiver<Compaction>) {
    for compaction in queue {
        compact_image(store, compaction);
    }
}

/// Writes the image of the chain `compaction` names and answers the operator.
fn compact_image(store: &dyn StateStore, c: Compaction) {
    let (name, worker, epoch) = (&c.name, c.worker, c.epoch);
    let result = write_image(store, name, worker, epoch, c.newest, c.live.as_ref());
    let _ = c.reply.send(Written {
        epoch,
        image: true,
        result,
    });
    if let Some(wake) = &c.wake {
        let _ = wake.activate();
    }
}

/// Writes the image of operator `name`'s part of `epoch` at `worker`, `newest`: the
/// full part its chain stands for, replayed and kept as `live` says (see
/// [`log::compact`]).
fn write_image(
    store: &dyn StateStore,
    name: &str,
    worker: usize,
    epoch: u64,
    newest: Vec<u8>,
    live: Option<&Live>,
) -> std::io::Result<()> {
    let chain = read_chain(store, name, worker, epoch, newest)?;
    let image = log::compact(epoch, &chain, live)?;
    store.put(&Checkpoints::image_path(epoch, name, worker), &image)
}

/// The chain of operator `name`'s parts at `worker` that ends in `newest`, its part of
/// `epoch`: read back from `store` (see [`log::chain`]).
fn read_chain(
    store: &dyn StateStore,
    name: &str,
    worker: usize,
    epoch: u64,
    newest: Vec<u8>,
) -> std::io::Result<Vec<Vec<u8>>> {
    let read = |at, image| {
        let path = match image {
            false => Checkpoints::part_path(at, name, worker),
            true => Checkpoints::image_path(at, name, worker),
        };
        store.get(&path)?.ok_or_else(|| {
            std::io::Error::other(format!(
                "checkpoint part {path}, which a later part builds on, is missing"
            ))
        })
    };
    log::chain(epoch, newest, read)
}

/// The greatest checkpoint epoch at or below `epoch` on the grid of a checkpoint every
/// `every` epochs (`(C + 1) % every == 0`), if any: the one grid rule, for operators,
/// sources and the manifest writer.
pub fn grid_at_or_before(epoch: u64, every: u64) -> Option<u64> {
    let every = every.max(1);
    (epoch.checked_add(1)? / every)
        .checked_mul(every)?
        .checked_sub(1)
}

/// An operator name as a path component: letters, digits and `-_.()` kept, anything
/// else as `~xx` (its bytes in hex), so distinct names give distinct paths.
pub fn sanitize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'(' | b')' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("~{b:02x}")),
        }
    }
    out
}

/// The least epoch any input may still deliver: every record of an earlier epoch has
/// arrived.
pub fn sealed_below<T: EventTime>(frontiers: &[MutableAntichain<T>]) -> u64 {
    frontiers
        .iter()
        .filter_map(|f| f.frontier().iter().map(|t| t.epoch()).min())
        .min()
        .unwrap_or(u64::MAX)
}

/// Where an operator's late records wait: stashed in its [`Aligner`] for the next
/// checkpoint, or with the batches waiting for the watermark (`W`: what those keep of a
/// late record).
pub(crate) type LateQueues<'a, T, D, W> = (
    Option<&'a mut Aligner<T, Arrival<D>>>,
    &'a mut crate::capability::Waiting<T, W>,
);

/// The watermark an operator's restored state had closed windows (or emitted sessions)
/// through, from each restored part's, in worker order: this worker's own part's at the
/// same worker count, else the least of all; 0 if nothing is restored.
///
/// A restarted source resumes at the watermark it had when the checkpoint's epoch
/// ended. An operator writes its part when it sees that epoch sealed, and by then it may
/// have used the next epoch's progress to close windows (the next epoch's records wait
/// apart, so its state is still exactly the epoch's, but what was closed is closed). A
/// record read after the restore behind this watermark was therefore late for the run
/// before the crash — read behind a watermark its source had passed — and an operator
/// treats it as late again, never re-opening what it had closed.
pub fn restored_through(ctx: &Checkpoints, parts: &[u64]) -> u64 {
    match parts.get(ctx.worker()) {
        Some(own) if ctx.restored_at_same_scale() => *own,
        _ => parts.iter().copied().min().unwrap_or(0),
    }
}

/// A record read at `time` behind `through` (an operator's [`restored_through`]) is
/// applied as a late record read at `through`: `Some(that time)`; `None` if it is not
/// behind.
#[inline]
pub fn behind<T: EventTime>(time: T, through: u64) -> Option<T> {
    (time.event() < through).then(|| time.with_event(through))
}

/// `time` moved up to epoch `epoch + 1` if its epoch is at or below `epoch`: the one
/// rule by which state a checkpoint of `epoch` answers for leaves its epoch.
#[inline]
pub fn lift_time<T: EventTime>(time: T, epoch: u64) -> T {
    if time.epoch() <= epoch {
        time.with_epoch(epoch + 1)
    } else {
        time
    }
}

/// Moves every capability in `caps` of an epoch at or below `epoch` up to `epoch + 1`.
pub fn lift_epochs<T: EventTime>(caps: &mut CapabilitySet<T>, epoch: u64) {
    if caps.iter().any(|c| c.time().epoch() <= epoch) {
        let mut times = timely::progress::Antichain::new();
        for c in caps.iter() {
            times.insert(lift_time(*c.time(), epoch));
        }
        caps.downgrade(times.iter());
    }
}

/// Moves a capability of an epoch at or below `epoch` up to `epoch + 1`.
pub fn lift_epoch<T: EventTime>(cap: &mut Capability<T>, epoch: u64) {
    let t = *cap.time();
    if t.epoch() <= epoch {
        cap.downgrade(&lift_time(t, epoch));
    }
}

/// Puts the waiting batches of a restored part (late records of windows, records of
/// keyed state waiting for the watermark, ...) back among an operator's waiting
/// batches, keeping the records whose key this worker owns, with capabilities (minted
/// from `initial`) at `epoch`, the epoch after the checkpoint. A batch is `(the event
/// time it waits for, its time, records)`.
pub(crate) fn restore_pending<T: EventTime, R, K: std::hash::Hash>(
    pending: &mut crate::capability::Waiting<T, R>,
    batches: impl IntoIterator<Item = (u64, T, Vec<R>)>,
    ctx: &Checkpoints,
    initial: &Capability<T>,
    epoch: u64,
    key: &impl Fn(&R) -> K,
) {
    let owns = |r: &R| ctx.owns(crate::hash::hash(&key(r)));
    restore_owned(pending, batches, initial, epoch, owns);
}

/// [`restore_pending`] for an operator whose keys are routed by another rule: keeps the
/// records `owns` says this worker holds.
pub(crate) fn restore_owned<T: EventTime, R>(
    pending: &mut crate::capability::Waiting<T, R>,
    batches: impl IntoIterator<Item = (u64, T, Vec<R>)>,
    initial: &Capability<T>,
    epoch: u64,
    owns: impl Fn(&R) -> bool,
) {
    for (event, time, records) in batches {
        let owned: Vec<_> = records.into_iter().filter(|r| owns(r)).collect();
        if !owned.is_empty() {
            // Keyed by the batch's own time, as before the checkpoint (only its
            // capability moves to `epoch`): batches of different epochs stay apart, and
            // apart from the batches read after the restore, so each is applied as one
            // batch, in the same order and with the same revisions as in the first run.
            pending
                .entry((event, time))
                .or_insert_with(|| (initial.delayed(&time.with_epoch(epoch)), Vec::new()))
                .1
                .extend(owned);
        }
    }
}

/// Takes a message's records in: kept apart in `aligner` if their epoch is after its
/// next checkpoint, else added to `waiting` (as [`crate::capability::stash`] does).
pub(crate) fn take_in<'a, T: EventTime, D: 'a>(
    aligner: Option<&mut Aligner<T, D>>,
    waiting: &mut crate::capability::Waiting<T, D>,
    cap: InputCapability<T>,
    batches: impl Iterator<Item = &'a mut Vec<D>>,
) {
    let Some(time) = crate::capability::time_of(&cap) else {
        return;
    };
    match aligner.filter(|a| a.later(&time)) {
        Some(a) => {
            for batch in batches {
                a.stash(time, || cap.delayed(&time, 0), batch);
            }
        }
        None => crate::capability::stash(waiting, cap, batches),
    }
}

/// Writes a part at each checkpoint epoch the inputs have sealed (see
/// [`Aligner::due`]), for an operator whose records wait in `waiting` for the
/// watermark: what waited for the epoch joins `waiting`, `write` writes the part, and
/// the capabilities in `waiting` move past the epoch; then what waited for the next
/// checkpoint epoch joins too. Once the inputs are done, every record joins.
pub(crate) fn write_due<T: EventTime, D>(
    aligner: &mut Aligner<T, D>,
    frontiers: &[MutableAntichain<T>],
    waiting: &mut crate::capability::Waiting<T, D>,
    mut write: impl FnMut(&mut Aligner<T, D>, u64, &crate::capability::Waiting<T, D>),
) {
    use crate::capability::keep;
    while let Some(epoch) = aligner.due(frontiers) {
        keep(waiting, aligner.release(epoch));
        write(aligner, epoch, waiting);
        for (cap, _) in waiting.values_mut() {
            lift_epoch(cap, epoch);
        }
        let next = aligner.next();
        keep(waiting, aligner.release(next));
    }
    keep(waiting, aligner.release_if_done(frontiers));
}

/// Batches written as `(time, records)`, waiting for their own time's event time, as
/// [`restore_pending`] takes them.
pub(crate) fn by_event<T: EventTime, R>(
    batches: Vec<(T, Vec<R>)>,
) -> impl Iterator<Item = (u64, T, Vec<R>)> {
    batches.into_iter().map(|(t, r)| (t.event(), t, r))
}

/// A record an operator could not apply yet (its epoch is after the next checkpoint),
/// from its main or its late input.
pub enum Arrival<D> {
    /// From the main input.
    Main(D),
    /// From the late input.
    Late(crate::late::Late<D>),
}

/// An operator's checkpoint bookkeeping (see the module documentation): the next
/// checkpoint epoch, the records of later epochs kept apart, and the capability that
/// keeps that epoch from completing before the part is written.
pub struct Aligner<T: EventTime, D> {
    ctx: Checkpoints,
    name: String,
    next: u64,
    /// By `(event time, time)`: the first entry has the least event time.
    stash: BTreeMap<(u64, T), (Capability<T>, Vec<D>)>,
    hold: Option<Capability<T>>,
    /// Whether a part was written yet (the first checkpoint epoch is the newest sealed).
    started: bool,
    /// The epoch of this run's last part, unless it failed: the base of the next
    /// incremental part.
    last: Option<u64>,
    /// The epochs of the chain's parts, oldest first: the first is full or has a
    /// durable image (the `from` of the next incremental part).
    chain: VecDeque<u64>,
    /// The part whose chain is being compacted into its image, if any.
    compacting: Option<u64>,
    /// Which entries the compaction thread keeps when it compacts this operator's chains
    /// (see [`Aligner::compact_keeping`]); every one if `None`.
    live: Option<Live>,
    /// Answers of the writer thread, and how many parts it still has of this operator.
    acks: (mpsc::Sender<Written>, mpsc::Receiver<Written>),
    outstanding: usize,
    /// Wakes the operator when the writer thread answers.
    wake: Option<SyncActivator>,
}

/// What wakes the operator `builder` builds when the writer thread acknowledges one of
/// its parts: for [`Aligner::waking`].
pub fn waker<T: timely::progress::Timestamp>(
    scope: &timely::dataflow::Scope<'_, T>,
    builder: &OperatorBuilder<'_, T>,
) -> SyncActivator {
    scope
        .worker()
        .sync_activator_for(builder.operator_info().address.to_vec())
}

/// The output whose capability an operator's [`Aligner`] holds (see
/// [`Checkpoints::with_durability_probe`]): a new output of `builder`, feeding the
/// context's probe, if it has one; its index among the operator's outputs (0, the first
/// data output, otherwise). Called after the operator's data outputs are made.
pub fn hold_output<T: timely::progress::Timestamp>(
    ctx: Option<&Checkpoints>,
    builder: &mut OperatorBuilder<'_, T>,
) -> usize {
    let probe = ctx.and_then(|c| {
        let probe = c.0.durability.borrow();
        probe
            .as_ref()
            .and_then(|p| p.downcast_ref::<ProbeHandle<T>>())
            .cloned()
    });
    let Some(probe) = probe else {
        return 0;
    };
    // Nothing is ever sent on it: only its frontier matters.
    let (_, held) = builder.new_output::<Vec<()>>();
    held.probe_with(&probe);
    builder.shape().outputs() - 1
}

/// An operator waits for the writer thread once it has this many parts unacknowledged:
/// a store slower than the checkpoint interval slows the job instead of filling memory.
const MAX_OUTSTANDING: usize = 2;

impl<T: EventTime, D> Aligner<T, D> {
    /// Bookkeeping for operator `name` (registered with `ctx`), holding `cap` (an
    /// initial capability of the operator's first output) for its first checkpoint.
    pub fn new(ctx: Checkpoints, name: &str, cap: &Capability<T>) -> Self {
        ctx.register(name);
        let first = ctx.at_or_after(ctx.floor());
        let hold = cap.delayed(&cap.time().with_epoch(first));
        Aligner {
            ctx,
            name: name.to_string(),
            next: first,
            stash: BTreeMap::new(),
            hold: Some(hold),
            started: false,
            last: None,
            chain: VecDeque::new(),
            compacting: None,
            live: None,
            acks: mpsc::channel(),
            outstanding: 0,
            wake: None,
        }
    }

    /// Has `wake` activate the operator when the writer thread acknowledges one of its
    /// parts (see [`Checkpoints::with_async_writes`]), so it lifts its capabilities
    /// without waiting for its next input.
    pub fn waking(mut self, wake: SyncActivator) -> Self {
        self.wake = Some(wake);
        self
    }

    /// The operator's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The context.
    pub fn checkpoints(&self) -> &Checkpoints {
        &self.ctx
    }

    /// The next checkpoint epoch this operator writes.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Whether a record at `time` must wait: its epoch is after the next checkpoint.
    #[inline]
    pub fn later(&self, time: &T) -> bool {
        time.epoch() > self.next
    }

    /// Keeps `records` at `time` apart, under `cap`, until the checkpoint is taken.
    pub fn stash(&mut self, time: T, cap: impl FnOnce() -> Capability<T>, records: &mut Vec<D>) {
        self.stash
            .entry((time.event(), time))
            .or_insert_with(|| (cap(), Vec::new()))
            .1
            .append(records);
    }

    /// The least event time among stashed records (they may still fall in windows the
    /// watermark alone would close).
    pub fn stashed_from(&self) -> u64 {
        self.stash
            .keys()
            .next()
            .map_or(u64::MAX, |(event, _)| *event)
    }

    /// If the inputs have sealed a checkpoint epoch not yet written, returns the least
    /// one (the next): the operator then applies [`Aligner::release`]d records, writes
    /// its state with [`Aligner::write_log`] and lifts the capabilities it holds for
    /// state to the epoch after — and asks again, until no sealed epoch is left
    /// unwritten.
    ///
    /// Once the operator has written its first part, no checkpoint epoch is skipped,
    /// even by a worker that sees the frontier jump several epochs at once: the records
    /// of epochs after the next checkpoint epoch are still stashed, so its state is
    /// exactly that epoch's, and every worker writes a part of every checkpoint epoch (a
    /// worker that skipped one would leave that checkpoint without its part, so that no
    /// checkpoint any worker wrote might be complete). The first part is written at the
    /// newest sealed checkpoint epoch: a Kafka source's epochs follow the wall clock, so
    /// the first sealed epoch is far from the grid's start, and walking there one
    /// checkpoint epoch at a time would never catch up.
    pub fn due(&mut self, frontiers: &[MutableAntichain<T>]) -> Option<u64> {
        self.hear();
        let sealed = sealed_below(frontiers);
        // The inputs are done: there is no epoch left to checkpoint.
        if sealed == u64::MAX {
            return None;
        }
        let c = self.ctx.at_or_before(sealed.checked_sub(1)?)?;
        let due = if self.started { self.next } else { c };
        (c >= self.next).then_some(due)
    }

    /// Once the inputs are done, every record still waiting: there is no epoch left to
    /// checkpoint, and they must be applied (and their windows flushed) all the same.
    pub fn release_if_done(
        &mut self,
        frontiers: &[MutableAntichain<T>],
    ) -> Vec<(Capability<T>, Vec<D>)> {
        if sealed_below(frontiers) == u64::MAX && !self.stash.is_empty() {
            self.release(u64::MAX)
        } else {
            Vec::new()
        }
    }

    /// The stashed records of epochs `<= epoch`, in time order, with their capability.
    pub fn release(&mut self, epoch: u64) -> Vec<(Capability<T>, Vec<D>)> {
        let (now, later) = std::mem::take(&mut self.stash)
            .into_iter()
            .partition(|((_, t), _)| t.epoch() <= epoch);
        self.stash = later;
        now.into_values().collect()
    }

    /// Writes the part `start` began, `state`, which it owns, and drops `spent` after
    /// it: serialized (and dropped) by the writer thread if there is one, so the worker
    /// only pays for the snapshot. The held capability stays at the part's epoch until
    /// it is durable.
    fn write_owned<E, K, V, X>(&mut self, start: &LogStart, part: LogPart<E, K, V>, spent: X)
    where
        E: Serialize + Send + 'static,
        K: Serialize + Send + 'static,
        V: Serialize + Send + 'static,
        X: Send + 'static,
    {
        let later = Encoded::Later(Box::new(move || {
            let bytes = part.encode();
            drop((part, spent));
            bytes
        }));
        let full = start.base.is_none();
        self.hand_over(start.epoch, full, start.compact, Ok(later));
    }

    /// Gives the part of `epoch` (or why it could not be made) to the writer thread,
    /// or writes it inline if there is none; `compact`: once written, its chain is
    /// compacted into its image.
    fn hand_over(&mut self, epoch: u64, full: bool, compact: bool, part: std::io::Result<Encoded>) {
        let writer = self.ctx.0.writer.borrow().clone();
        let Some(writer) = writer else {
            // Inline: written (or reported as failed), and compacted, on the worker.
            let bytes = part.and_then(Encoded::bytes);
            let newest = bytes.as_ref().ok().filter(|_| compact).cloned();
            if self.ctx.put(&self.name, epoch, bytes) {
                self.durable(epoch);
                if let Some(newest) = newest {
                    let (store, worker) = (&*self.ctx.0.store, self.ctx.worker());
                    let live = self.live.as_ref();
                    let result = write_image(store, &self.name, worker, epoch, newest, live);
                    self.compacted(epoch, result);
                }
            } else {
                self.last = None;
            }
            return;
        };
        let part = match part {
            Ok(part) => part,
            Err(e) => return self.failed(epoch, e),
        };
        let path = Checkpoints::part_path(epoch, &self.name, self.ctx.worker());
        while self.outstanding >= MAX_OUTSTANDING {
            match self.acks.1.recv() {
                Ok(written) => self.answer(written),
                Err(_) => break,
            }
        }
        let job = Job {
            path,
            name: self.name.clone(),
            worker: self.ctx.worker(),
            epoch,
            full,
            compact,
            live: self.live.clone(),
            part,
            reply: self.acks.0.clone(),
            wake: self.wake.clone(),
        };
        match writer.send(job) {
            Ok(()) => self.outstanding += 1,
            Err(_) => self.failed(epoch, std::io::Error::other("the writer thread is gone")),
        }
    }

    /// The part of `epoch` is durable: the held capability moves to the next
    /// checkpoint epoch after it.
    fn durable(&mut self, epoch: u64) {
        let next = self.ctx.at_or_after(epoch + 1);
        if let Some(hold) = self.hold.as_mut() {
            let t = *hold.time();
            if t.epoch() < next {
                hold.downgrade(&t.with_epoch(next));
            }
        }
    }

    /// The part of `epoch` (or its image) could not be written: reported, and the next
    /// part is full.
    fn failed(&mut self, epoch: u64, e: std::io::Error) {
        (self.ctx.0.on_failure)(&self.name, epoch, &e);
        self.last = None;
        if self.compacting == Some(epoch) {
            self.compacting = None;
        }
    }

    /// The image of the chain ending at `epoch` is durable (or why not): the chain now
    /// starts there.
    fn compacted(&mut self, epoch: u64, result: std::io::Result<()>) {
        if self.compacting == Some(epoch) {
            self.compacting = None;
        }
        match result {
            // Unless a full part began a new chain meanwhile.
            Ok(()) if self.chain.contains(&epoch) => {
                while self.chain.front() != Some(&epoch) {
                    self.chain.pop_front();
                }
            }
            Ok(()) => {}
            Err(e) => {
                let e = std::io::Error::other(format!(
                    "compacting the chain of parts ending here failed: {e}; the next part is \
                     full"
                ));
                self.failed(epoch, e);
            }
        }
    }

    fn answer(&mut self, written: Written) {
        if written.image {
            return self.compacted(written.epoch, written.result);
        }
        self.outstanding = self.outstanding.saturating_sub(1);
        match written.result {
            Ok(()) => self.durable(written.epoch),
            Err(e) => self.failed(written.epoch, e),
        }
    }

    /// Hears the writer thread's answers: the hold moves past each durable part's
    /// epoch, and failures are reported.
    fn hear(&mut self) {
        while let Ok(written) = self.acks.1.try_recv() {
            self.answer(written);
        }
    }

    /// Writes keyed state as this worker's [`LogPart`] at checkpoint `epoch` and moves
    /// on to the next checkpoint epoch; the held capability stays at `epoch` until the
    /// part is durable. The caller then lifts the capabilities it holds for state.
    ///
    /// `entries(want)` gives the entries `want` asks for (`None`: removed), usually
    /// through [`Want::pick`]: every entry for a full part — at the operator's first
    /// part and after a failed write — else those changed since the last part. Every
    /// [`Checkpoints::full_every`]-th part of a chain is compacted into a full one by
    /// the compaction thread (see [`Aligner::compact_keeping`]). Either way the operator
    /// then forgets what changed: after a failure the next part is full.
    pub fn write_log<E: Serialize, K: Serialize, V: Serialize>(
        &mut self,
        epoch: u64,
        extra: E,
        entries: impl FnOnce(Want) -> Vec<(K, Option<V>)>,
    ) {
        self.write_log_full_if(epoch, extra, false, entries);
    }

    /// [`Aligner::write_log`], and a full part also if `mostly_changed`: when most of the
    /// state changed since the last part, a full one is hardly larger, needs no lookup
    /// per changed entry, and shortens the chain a restore reads. Returns whether the
    /// part written is full.
    pub fn write_log_full_if<E: Serialize, K: Serialize, V: Serialize>(
        &mut self,
        epoch: u64,
        extra: E,
        mostly_changed: bool,
        entries: impl FnOnce(Want) -> Vec<(K, Option<V>)>,
    ) -> bool {
        let (part, compact) = self.log_part(epoch, extra, mostly_changed, entries);
        let full = part.base.is_none();
        self.hand_over(epoch, full, compact, part.encode().map(Encoded::Bytes));
        full
    }

    /// Starts the part of checkpoint `epoch` for an operator that captures it in steps
    /// (see [`Aligner::end_log_owned`]): whether it is full or building on the last
    /// part, and so which entries it must hold ([`LogStart::want`]). The aligner moves
    /// on to the next checkpoint epoch; the part must be ended before the next begins.
    pub fn begin_log(&mut self, epoch: u64) -> LogStart {
        self.begin(epoch, false)
    }

    /// Ends the part `start` began: `entries` (owned: keys cloned, values shared with
    /// the operator's state, e.g. behind an `Arc`, as they were at the checkpoint) are
    /// serialized by the writer thread, so a large part costs the worker only the
    /// snapshot. `spent` is what the operator no longer needs (lists of keys), dropped
    /// by the writer thread after the part too: freeing many small allocations costs
    /// the worker about what making them did.
    pub fn end_log_owned<E, K, V, X>(
        &mut self,
        start: LogStart,
        extra: E,
        entries: Vec<(K, Option<V>)>,
        spent: X,
    ) where
        E: Serialize + Send + 'static,
        K: Serialize + Send + 'static,
        V: Serialize + Send + 'static,
        X: Send + 'static,
    {
        let part = LogPart {
            base: start.base,
            from: start.from,
            extra,
            entries,
        };
        self.write_owned(&start, part, spent);
    }

    /// The next part: full or building on the last, with the entries `entries` picks
    /// for it (see [`Aligner::write_log_full_if`]).
    fn log_part<E, K, V>(
        &mut self,
        epoch: u64,
        extra: E,
        mostly_changed: bool,
        entries: impl FnOnce(Want) -> Vec<(K, Option<V>)>,
    ) -> (LogPart<E, K, V>, bool) {
        let start = self.begin(epoch, mostly_changed);
        let part = LogPart {
            base: start.base,
            from: start.from,
            extra,
            entries: entries(start.want),
        };
        (part, start.compact)
    }

    /// The bookkeeping of a part at `epoch`: full, or building on the last part and
    /// then whether its chain is to be compacted; the oldest part a restore
    /// reads with it. The aligner moves on to the next checkpoint epoch.
    fn begin(&mut self, epoch: u64, mostly_changed: bool) -> LogStart {
        self.started = true;
        self.next = self.ctx.at_or_after(epoch + 1);
        let n = self.ctx.full_every().max(1) as usize;
        let too_long = |chain: &VecDeque<u64>| chain.len() + 1 >= 2 * n;
        if self.last.is_some() && too_long(&self.chain) {
            // The chain may grow no longer: its compaction must be done first.
            while self.compacting.is_some() {
                match self.acks.1.recv() {
                    Ok(written) => self.answer(written),
                    Err(_) => break,
                }
            }
        }
        // Still too long if the compaction failed: a full part then.
        let base = self
            .last
            .filter(|_| !mostly_changed && n > 1 && !too_long(&self.chain));
        // Every `n` parts the chain is compacted (one compaction at a time).
        let compact = base.is_some() && self.compacting.is_none() && self.chain.len() >= n;
        // The base of the next part, unless this one fails (`hand_over` then forgets
        // it).
        self.last = Some(epoch);
        if base.is_none() {
            self.chain.clear();
            self.compacting = None;
        }
        let from = self.chain.front().copied().unwrap_or(epoch);
        self.chain.push_back(epoch);
        if compact {
            self.compacting = Some(epoch);
        }
        LogStart {
            epoch,
            base,
            from,
            want: if base.is_some() {
                Want::Changed
            } else {
                Want::All
            },
            compact,
        }
    }

    /// The epoch after the restored checkpoint (where restored state holds its
    /// capabilities) and each worker's `(extra, entries)` of this operator's
    /// [`LogPart`]s as of that checkpoint; `None` if nothing is restored.
    #[allow(clippy::type_complexity)]
    pub fn restored_log<E, K, V>(&self) -> Option<(u64, Vec<(E, Vec<(K, V)>)>)>
    where
        E: DeserializeOwned,
        K: DeserializeOwned,
        V: DeserializeOwned,
    {
        let restore = self.ctx.restore()?;
        Some((restore.epoch + 1, self.ctx.read_log(&self.name)))
    }

    /// Has the compaction thread keep, when it compacts this operator's chains of parts,
    /// only the entries `live` says are, given the newest part's extra (read as an
    /// `E`; keys as `K`): an operator whose restore ignores some entries, such as
    /// those of windows closed since, rather than removing them one by one, must, or
    /// its compacted parts keep every entry ever written. Without it every entry a
    /// chain holds at its end is kept.
    pub fn compact_keeping<E, K>(&mut self, live: fn(&E, &K) -> bool)
    where
        E: DeserializeOwned + 'static,
        K: DeserializeOwned + 'static,
    {
        self.live = Some(log::live(live));
    }

    /// Moves the held capability's event time up to `watermark` (it holds only the
    /// epoch back), or drops it once the inputs are done.
    pub fn settle(&mut self, watermark: u64) {
        self.hear();
        if watermark == u64::MAX {
            self.hold = None;
            return;
        }
        if let Some(hold) = self.hold.as_mut() {
            let t = *hold.time();
            if t.event() < watermark {
                hold.downgrade(&t.with_event(watermark));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nowhere;
    impl StateStore for Nowhere {
        fn put(&self, _: &str, _: &[u8]) -> std::io::Result<()> {
            Ok(())
        }
        fn get(&self, _: &str) -> std::io::Result<Option<Vec<u8>>> {
            Ok(None)
        }
    }

    fn every(k: u64) -> Checkpoints {
        Checkpoints::new(Arc::new(Nowhere), k, 0, 1, None, Box::new(|_, _, _| {}))
    }

    #[test]
    fn the_grid_is_every_kth_epoch() {
        for k in 1..7u64 {
            let c = every(k);
            for e in 0..60u64 {
                let grid = |x: u64| (x + 1).is_multiple_of(k);
                let before = (0..=e).rev().find(|x| grid(*x));
                let after = (e..).find(|x| grid(*x)).unwrap();
                assert_eq!(c.at_or_before(e), before, "k {k} e {e}");
                assert_eq!(c.at_or_after(e), after, "k {k} e {e}");
            }
        }
    }

    #[test]
    fn names_become_distinct_paths() {
        assert_eq!(
            sanitize("Tumble(clicks, 1000ms)"),
            "Tumble(clicks~2c~201000ms)"
        );
        assert_ne!(sanitize("a/b"), sanitize("a_b"));
        assert_eq!(
            Checkpoints::part_path(7, "x", 1),
            "epoch-00000000000000000007/x/1"
        );
    }

    /// A store that refuses one path and records what it wrote.
    #[derive(Default)]
    struct Refusing(std::sync::Mutex<Vec<String>>);
    impl StateStore for Refusing {
        fn put(&self, path: &str, _: &[u8]) -> std::io::Result<()> {
            if path.contains("epoch-1/") {
                return Err(std::io::Error::other("disk full"));
            }
            self.0.lock().unwrap().push(path.to_string());
            Ok(())
        }
        fn get(&self, _: &str) -> std::io::Result<Option<Vec<u8>>> {
            Ok(None)
        }
    }

    /// After a failed part, the writer fails the operator's incremental parts that
    /// build on it without writing them, until its next full part; other operators'
    /// parts are written.
    #[test]
    fn no_part_is_written_on_top_of_a_failed_one() {
        let (reply, answers) = mpsc::channel();
        let (jobs, queue) = mpsc::channel();
        let job = |path: &str, name: &str, epoch: u64, full: bool| Job {
            path: path.to_string(),
            name: name.to_string(),
            worker: 0,
            epoch,
            full,
            compact: false,
            live: None,
            part: Encoded::Bytes(Vec::new()),
            reply: reply.clone(),
            wake: None,
        };
        jobs.send(job("epoch-0/a", "a", 0, true)).unwrap();
        jobs.send(job("epoch-1/a", "a", 1, false)).unwrap();
        jobs.send(job("epoch-2/a", "a", 2, false)).unwrap();
        jobs.send(job("epoch-2/b", "b", 2, false)).unwrap();
        jobs.send(job("epoch-3/a", "a", 3, true)).unwrap();
        jobs.send(job("epoch-4/a", "a", 4, false)).unwrap();
        drop(jobs);
        let store = Refusing::default();
        write_parts(&store, queue, None);
        let ok: Vec<(u64, bool)> = answers
            .try_iter()
            .map(|w: Written| (w.epoch, w.result.is_ok()))
            .collect();
        assert_eq!(
            ok,
            vec![
                (0, true),
                (1, false),
                (2, false),
                (2, true),
                (3, true),
                (4, true)
            ]
        );
        assert_eq!(
            *store.0.lock().unwrap(),
            vec!["epoch-0/a", "epoch-2/b", "epoch-3/a", "epoch-4/a"]
        );
    }

    /// A store in memory.
    #[derive(Default)]
    struct Memory(std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>);
    impl StateStore for Memory {
        fn put(&self, path: &str, bytes: &[u8]) -> std::io::Result<()> {
            self.0
                .lock()
                .unwrap()
                .insert(path.to_string(), bytes.to_vec());
            Ok(())
        }
        fn get(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
            Ok(self.0.lock().unwrap().get(path).cloned())
        }
    }

    type Part = LogPart<u32, u32, u32>;

    /// Once a part marked for compaction is written, its chain is compacted into its
    /// image: the chain replayed (later entries win, removals gone), the newest extra,
    /// only the entries live by it, and itself the start of the chains after it. A
    /// chain whose base is missing gets no image; its part is written all the same.
    #[test]
    fn a_compacted_chain_becomes_the_image_later_chains_start_from() {
        let (reply, answers) = mpsc::channel();
        let (jobs, queue) = mpsc::channel();
        // Keys below the extra are live.
        let live = log::live::<u32, u32>(|below, k| k < below);
        let job = |name: &str, epoch: u64, part: Part, compact: bool| Job {
            path: Checkpoints::part_path(epoch, name, 0),
            name: name.to_string(),
            worker: 0,
            epoch,
            full: part.base.is_none(),
            compact,
            live: Some(live.clone()),
            part: Encoded::Bytes(part.encode().unwrap()),
            reply: reply.clone(),
            wake: None,
        };
        let part = |base: Option<u64>, from, extra, entries: &[(u32, Option<u32>)]| Part {
            base,
            from,
            extra,
            entries: entries.to_vec(),
        };
        let full = part(None, 1, 9, &[(1, Some(10)), (2, Some(20)), (3, Some(30))]);
        jobs.send(job("a", 1, full, false)).unwrap();
        let changes = part(Some(1), 1, 9, &[(2, None), (4, Some(40)), (1, Some(11))]);
        jobs.send(job("a", 3, changes, false)).unwrap();
        let last = part(Some(3), 1, 5, &[(3, Some(31)), (6, Some(60))]);
        jobs.send(job("a", 5, last, true)).unwrap();
        // Its base was never written.
        let orphan = part(Some(3), 1, 5, &[]);
        jobs.send(job("b", 5, orphan, true)).unwrap();
        drop(jobs);
        let store = Memory::default();
        write_parts(&store, queue, None);
        let ok: Vec<(u64, bool, bool)> = answers
            .try_iter()
            .map(|w: Written| (w.epoch, w.image, w.result.is_ok()))
            .collect();
        let want = [
            (1, false, true),
            (3, false, true),
            (5, false, true),
            (5, true, true),
            (5, false, true),
            (5, true, false),
        ];
        assert_eq!(ok, want);
        let image = store.get(&Checkpoints::image_path(5, "a", 0)).unwrap();
        let mut image = Part::decode(&image.unwrap()).unwrap();
        image.entries.sort();
        assert_eq!((image.base, image.from, image.extra), (None, 5, 5));
        let want = vec![(1, Some(11)), (3, Some(31)), (4, Some(40))];
        assert_eq!(image.entries, want);
        assert!(store
            .get(&Checkpoints::image_path(5, "b", 0))
            .unwrap()
            .is_none());

        // A later part starting from 5 restores through the image.
        let next = part(Some(5), 5, 5, &[(4, None)]).encode().unwrap();
        let chain = read_chain(&store, "a", 0, 7, next).unwrap();
        let (extra, mut entries): (u32, Vec<(u32, u32)>) =
            log::decode_state(log::replay(&chain).unwrap()).unwrap();
        entries.sort();
        assert_eq!((extra, entries), (5, vec![(1, 11), (3, 31)]));
    }

    #[test]
    #[should_panic(expected = "two stateful operators are named")]
    fn duplicate_names_are_refused() {
        let c = every(1);
        c.register("t");
        c.register("t");
    }
}
