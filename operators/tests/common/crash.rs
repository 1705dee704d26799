//! Crash and restore, for any checkpointing dataflow over the scripted rounds: a run
//! is cut off at a round ("crash"), a second run restores one of the checkpoints the
//! first one completed — at the same or another number of workers — and reads on from
//! the epoch after it. Tests compare what a consumer of both runs' output keeps with a
//! sequential reference.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use freshet_operators::checkpoint::{Checkpoints, Restore, StateStore};
use freshet_operators::{Late, Time};
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::StreamVec;

use super::{Rec, Round, Source};

/// Checkpoint parts in memory, shared by every worker of both runs.
#[derive(Default)]
pub struct MemStore(pub Mutex<HashMap<String, Vec<u8>>>);

impl StateStore for MemStore {
    fn put(&self, path: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.0.lock().unwrap().insert(path.into(), bytes.into());
        Ok(())
    }
    fn get(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
        Ok(self.0.lock().unwrap().get(path).cloned())
    }
}

/// What one run left: its output in arrival order, the epoch below which every output
/// was out (per worker 0's probe) when it ended, and the checkpointing operators' names.
pub struct Ran<O> {
    /// The output, in arrival order (all workers).
    pub out: Vec<O>,
    /// Every output of an epoch below this one was out.
    pub complete: u64,
    /// The names the checkpointing operators registered.
    pub names: Vec<String>,
    /// Records operators dropped as behind the restored state (all workers).
    pub dropped: u64,
}

impl<O> Ran<O> {
    /// The checkpoints below `below` for which every operator wrote the part of each of
    /// `workers` workers: those a restore may use.
    fn complete_checkpoints(&self, store: &MemStore, workers: usize, below: u64) -> Vec<u64> {
        let written = |epoch: u64, name: &String, worker: usize| {
            let path = Checkpoints::part_path(epoch, name, worker);
            store.get(&path).unwrap().is_some()
        };
        (0..below)
            .filter(|e| {
                let name_written = |name| (0..workers).all(|w| written(*e, name, w));
                self.names.iter().all(name_written)
            })
            .collect()
    }
}

/// How a crash-harness run checkpoints: every `every` epochs (the records of the epochs
/// between two checkpoints are then taken in right after the earlier one is written, as
/// with a Kafka source's short epochs), full parts every `full_every` (incremental ones
/// between), parts written on writer threads if `async_writes`.
#[derive(Clone, Copy, Debug)]
pub struct Checkpointing {
    /// Epochs between checkpoints.
    pub every: u64,
    /// Parts between full parts.
    pub full_every: u64,
    /// Whether parts are written on writer threads.
    pub async_writes: bool,
}

impl Checkpointing {
    /// A checkpoint every epoch.
    pub fn every_epoch(full_every: u64, async_writes: bool) -> Self {
        Checkpointing {
            every: 1,
            full_every,
            async_writes,
        }
    }
}

/// One run of `build` over `rounds[range]` (round `e` in epoch `e`, its records on the
/// main input and its late records on the late one) at `workers` workers, checkpointing
/// into `store` as `checkpointing` says, restoring from `restore`. Unless the range
/// reaches the last round, the run is cut off ("crashes") after it.
pub fn run<O, F>(
    checkpointing: Checkpointing,
    workers: usize,
    rounds: &[Round<Rec>],
    range: std::ops::Range<usize>,
    store: &Arc<MemStore>,
    restore: Option<Restore>,
    build: F,
) -> Ran<O>
where
    O: Clone + Send + 'static,
    F: Build<O>,
{
    let Checkpointing {
        every,
        full_every,
        async_writes,
    } = checkpointing;
    let out = Arc::new(Mutex::new(Vec::new()));
    let complete = Arc::new(Mutex::new(0u64));
    let names = Arc::new(Mutex::new(Vec::new()));
    let (shared, shared_complete, shared_names) = (out.clone(), complete.clone(), names.clone());
    let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let shared_dropped = dropped.clone();
    let rounds = rounds.to_vec();
    let store = store.clone();
    let finish = range.end == rounds.len();
    let settled = Arc::new(std::sync::Barrier::new(workers));
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let ctx = Checkpoints::new(
            store.clone(),
            every,
            index,
            peers,
            restore,
            Box::new(|_, _, e| panic!("{e}")),
        )
        .with_full_every(full_every)
        // Parts captured in steps span many activations, with records applied between.
        .with_capture_step(3);
        let counter = shared_dropped.clone();
        let ctx = ctx.with_dropped_hook(Box::new(move |_, n| {
            counter.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        }));
        let ctx = if async_writes {
            ctx.with_async_writes()
        } else {
            ctx
        };
        // What the job watches for complete epochs: the output, and (as in a job) the
        // operators' holds until their parts are durable.
        let probe = ProbeHandle::new();
        let ctx = ctx.with_durability_probe(probe.clone());
        let installed = ctx.install();
        let into = shared.clone();
        let (mut main, mut late) = worker.dataflow::<Time, _, _>(|scope| {
            let (main, main_stream) = Source::<Rec>::new(&scope);
            let (late, late_stream) = Source::<Late<Rec>>::new(&scope);
            build(main_stream, late_stream)
                .inspect(move |o| into.lock().unwrap().push(o.clone()))
                .probe_with(&probe);
            (main, late)
        });
        drop(installed);
        if index == 0 {
            *shared_names.lock().unwrap() = ctx.names();
        }
        let mine = |i: usize| i % peers == index;
        for e in range.clone() {
            let (epoch, round) = (e as u64, &rounds[e]);
            for (_, (event, record)) in round.records.iter().enumerate().filter(|(i, _)| mine(*i)) {
                main.send(Time::new(*event, epoch), *record);
            }
            for (_, record) in round.late.iter().enumerate().filter(|(i, _)| mine(*i)) {
                late.send(Time::new(round.watermark, epoch), record.clone());
            }
            let next = rounds.get(e + 1).map_or(round.watermark, |r| r.watermark);
            // Every other round a source moves its watermark before it leaves the
            // epoch, as a Kafka source does between epochs: windows may close while
            // the epoch is not sealed yet, before its checkpoint is taken.
            if e % 2 == 0 {
                main.advance(Time::new(next, epoch));
                late.advance(Time::new(next, epoch));
                worker.step();
            }
            main.advance(Time::new(next, epoch + 1));
            late.advance(Time::new(next, epoch + 1));
            // The last worker steps only every third round: the others read ahead, so
            // records of later epochs reach the operator before earlier epochs are
            // sealed and must wait for the checkpoint.
            let lagging = peers > 1 && index == peers - 1 && e % 3 != 2;
            for _ in 0..if lagging { 0 } else { 4 } {
                worker.step();
            }
        }
        if finish {
            main.close();
            late.close();
            while worker.step() {}
        } else {
            // The crash: let what is in flight settle, every worker in turn with the
            // others (a worker's steps deliver what the others sent during theirs), so
            // worker 0's frontier shows what all of them did; then stop without closing.
            for _ in 0..3 {
                for _ in 0..20 {
                    worker.step();
                }
                settled.wait();
            }
            if index == 0 {
                worker.step();
                let below = probe.with_frontier(|f| f.iter().map(|t| t.epoch).min());
                *shared_complete.lock().unwrap() = below.unwrap_or(u64::MAX);
            }
            settled.wait();
            for id in worker.installed_dataflows() {
                worker.drop_dataflow(id);
            }
        }
    })
    .expect("timely ran");
    let out = out.lock().unwrap().clone();
    let complete = *complete.lock().unwrap();
    let names = names.lock().unwrap().clone();
    assert!(!names.is_empty(), "no checkpointing operator was built");
    Ran {
        out,
        complete,
        names,
        dropped: dropped.load(std::sync::atomic::Ordering::SeqCst),
    }
}

/// Runs `rounds[..cut]` at 2 workers (the "crash"), picks one of the checkpoints that
/// run completed (every operator's part of every worker written, every output of its
/// epochs out: any of them is what a crash at some moment leaves newest) and runs the
/// rest from the epoch after it at `after` workers. Returns both runs' output. `pick`
/// also chooses how many epochs apart checkpoints are (1, 2 or 3), how often full parts
/// are written (every part, every third, or only the first: a restore then replays a
/// long chain of incremental parts) and whether parts are written inline or on writer
/// threads.
pub fn crash_then_restore<O, F>(
    rounds: &[Round<Rec>],
    cut: usize,
    after: usize,
    pick: usize,
    build: F,
) -> (Vec<O>, Vec<O>)
where
    O: Clone + Send + 'static,
    F: Build<O>,
{
    crash_at_then_restore(rounds, cut, 2, after, pick, build)
}

/// [`crash_then_restore`] with the first run at `before` workers.
pub fn crash_at_then_restore<O, F>(
    rounds: &[Round<Rec>],
    cut: usize,
    before: usize,
    after: usize,
    pick: usize,
    build: F,
) -> (Vec<O>, Vec<O>)
where
    O: Clone + Send + 'static,
    F: Build<O>,
{
    let store = Arc::new(MemStore::default());
    // Every part full, a full part every 3, or only the first part full.
    let full_every = [1, 3, 1000][pick % 3];
    let async_writes = pick % 4 >= 2;
    // A checkpoint every epoch, every second or every third.
    let checkpointing = Checkpointing {
        every: 1 + (pick as u64 / 4) % 3,
        full_every,
        async_writes,
    };
    let first = run(
        checkpointing,
        before,
        rounds,
        0..cut,
        &store,
        None,
        build.clone(),
    );
    let written = first.complete_checkpoints(&store, before, first.complete.min(cut as u64));
    // A cut may leave no complete checkpoint at all (each operator's first part is at
    // the newest epoch sealed when it starts, so two operators may start apart): the
    // run then restores nothing. `restore_every_checkpoint` covers restores for sure.
    let restore = (!written.is_empty()).then(|| Restore {
        epoch: written[pick % written.len()],
        workers: before,
    });
    let from = restore.map_or(0, |r| r.epoch as usize + 1);
    let second = run(
        checkpointing,
        after,
        rounds,
        from..rounds.len(),
        &store,
        restore,
        build,
    );
    (first.out, second.out)
}

/// Runs `rounds[..cut]` at one worker with only its first part full, then restores its
/// checkpoint `at` and runs the rest: `(first run's output, restored run's output)`.
pub fn cut_and_restore<O, F>(
    rounds: &[Round<Rec>],
    cut: usize,
    at: u64,
    build: F,
) -> (Vec<O>, Vec<O>)
where
    O: Clone + Send + 'static,
    F: Build<O>,
{
    let store = Arc::new(MemStore::default());
    let first = run(
        Checkpointing::every_epoch(1000, false),
        1,
        rounds,
        0..cut,
        &store,
        None,
        build.clone(),
    );
    assert!(
        first.complete > at,
        "only epochs below {} complete",
        first.complete
    );
    let restore = Some(Restore {
        epoch: at,
        workers: 1,
    });
    let rest = at as usize + 1..rounds.len();
    let second = run(
        Checkpointing::every_epoch(1000, false),
        1,
        rounds,
        rest,
        &store,
        restore,
        build,
    );
    (first.out, second.out)
}

/// Runs `rounds[..cut]` at one worker with full parts every `full_every` (so each
/// checkpoint in between is a chain of incremental parts, and every `full_every`-th is
/// compacted from its chain; written on a writer thread if `async_writes`), then, for
/// each checkpoint it completed
/// from epoch 1 on, restores it from a copy of the store and runs the rest. Returns
/// `(checkpoint, first run's output, restored run's output)` for each: deterministic,
/// unlike [`crash_then_restore`], which finds what a random cut left.
#[allow(clippy::type_complexity)]
pub fn restore_every_checkpoint<O, F>(
    async_writes: bool,
    full_every: u64,
    rounds: &[Round<Rec>],
    cut: usize,
    build: F,
) -> Vec<(u64, Vec<O>, Vec<O>)>
where
    O: Clone + Send + 'static,
    F: Build<O>,
{
    restore_each_checkpoint(1, 1, async_writes, full_every, rounds, cut, build)
}

/// [`restore_every_checkpoint`] with the first run at `before` workers and each
/// restored one at `after`.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub fn restore_each_checkpoint<O, F>(
    before: usize,
    after: usize,
    async_writes: bool,
    full_every: u64,
    rounds: &[Round<Rec>],
    cut: usize,
    build: F,
) -> Vec<(u64, Vec<O>, Vec<O>)>
where
    O: Clone + Send + 'static,
    F: Build<O>,
{
    let store = Arc::new(MemStore::default());
    let first = run(
        Checkpointing::every_epoch(full_every, async_writes),
        before,
        rounds,
        0..cut,
        &store,
        None,
        build.clone(),
    );
    assert!(
        first.complete >= 3 && first.complete != u64::MAX,
        "the first run completed only epochs below {}",
        first.complete
    );
    // Only complete checkpoints (every operator wrote a part): an operator's first
    // part is at the newest epoch sealed when it starts, which may skip early ones.
    let mut epochs = first.complete_checkpoints(&store, before, first.complete.min(cut as u64));
    epochs.retain(|e| *e >= 1);
    assert!(
        epochs.len() >= 2,
        "only checkpoints {epochs:?} are complete"
    );
    epochs
        .into_iter()
        .map(|epoch| {
            let copy = Arc::new(MemStore(Mutex::new(store.0.lock().unwrap().clone())));
            let restore = Some(Restore {
                epoch,
                workers: before,
            });
            let rest = epoch as usize + 1..rounds.len();
            let second = run(
                Checkpointing::every_epoch(full_every, async_writes),
                after,
                rounds,
                rest,
                &copy,
                restore,
                build.clone(),
            );
            (epoch, first.out.clone(), second.out)
        })
        .collect()
}

/// One run of `build` on one worker with checkpoints every epoch into `store` (the
/// first part full, the later ones incremental): `send`
/// feeds its input, then, unless `finish`, it is dropped as if the process died.
/// Returns its output in arrival order.
pub fn one_worker<O, F>(
    store: &Arc<MemStore>,
    restore: Option<Restore>,
    build: F,
    send: impl Fn(&mut Source<Rec>) + Send + Sync + 'static,
    finish: bool,
) -> Vec<O>
where
    O: Clone + Send + 'static,
    F: for<'s> Fn(StreamVec<'s, Time, Rec>) -> StreamVec<'s, Time, O> + Send + Sync + 'static,
{
    let send = move |main: &mut Source<Rec>, _: &mut Source<Late<Rec>>| send(main);
    one_worker_with_late(store, restore, move |main, _| build(main), send, finish)
}

/// [`one_worker`] with a late input too.
pub fn one_worker_with_late<O, F>(
    store: &Arc<MemStore>,
    restore: Option<Restore>,
    build: F,
    send: impl Fn(&mut Source<Rec>, &mut Source<Late<Rec>>) + Send + Sync + 'static,
    finish: bool,
) -> Vec<O>
where
    O: Clone + Send + 'static,
    F: for<'s> Fn(
            StreamVec<'s, Time, Rec>,
            StreamVec<'s, Time, Late<Rec>>,
        ) -> StreamVec<'s, Time, O>
        + Send
        + Sync
        + 'static,
{
    let send = move |main: &mut Source<Rec>, late: &mut Source<Late<Rec>>, _: &mut dyn FnMut()| {
        send(main, late)
    };
    worker_of((0, 1), store, restore, build, send, finish)
}

/// [`one_worker_with_late`] as worker `index` of `peers` (its parts written under that
/// index, as if the other workers ran elsewhere), with a `step` for `send` to call
/// between its inputs: the operator then sees the frontier at each of them.
pub fn worker_of<O, F>(
    (index, peers): (usize, usize),
    store: &Arc<MemStore>,
    restore: Option<Restore>,
    build: F,
    send: impl Fn(&mut Source<Rec>, &mut Source<Late<Rec>>, &mut dyn FnMut()) + Send + Sync + 'static,
    finish: bool,
) -> Vec<O>
where
    O: Clone + Send + 'static,
    F: for<'s> Fn(
            StreamVec<'s, Time, Rec>,
            StreamVec<'s, Time, Late<Rec>>,
        ) -> StreamVec<'s, Time, O>
        + Send
        + Sync
        + 'static,
{
    let out = Arc::new(Mutex::new(Vec::new()));
    let (shared, store) = (out.clone(), store.clone());
    timely::execute(timely::Config::thread(), move |worker| {
        let ctx = Checkpoints::new(
            store.clone(),
            1,
            index,
            peers,
            restore,
            Box::new(|_, _, e| panic!("{e}")),
        )
        // A full part first, incremental ones after: a restore reads the whole chain.
        .with_full_every(1000);
        let installed = ctx.install();
        let into = shared.clone();
        let (mut main, mut late) = worker.dataflow::<Time, _, _>(|scope| {
            let (main, main_stream) = Source::<Rec>::new(&scope);
            let (late, late_stream) = Source::<Late<Rec>>::new(&scope);
            build(main_stream, late_stream).inspect(move |o| into.lock().unwrap().push(o.clone()));
            (main, late)
        });
        drop(installed);
        send(&mut main, &mut late, &mut || {
            for _ in 0..10 {
                worker.step();
            }
        });
        for _ in 0..10 {
            worker.step();
        }
        if finish {
            main.close();
            late.close();
        } else {
            for id in worker.installed_dataflows() {
                worker.drop_dataflow(id);
            }
        }
    })
    .expect("timely ran");
    let out = out.lock().unwrap().clone();
    out
}

/// `build` as a dataflow the runs above take: written inline here, a closure gets the
/// signature for every stream lifetime (a `let` binding would not).
pub fn dataflow<O, F>(build: F) -> F
where
    F: for<'s> Fn(
        StreamVec<'s, Time, Rec>,
        StreamVec<'s, Time, Late<Rec>>,
    ) -> StreamVec<'s, Time, O>,
{
    build
}

/// What the runs above take: a dataflow from the main and late inputs to an output,
/// for every stream lifetime, that every worker thread can build.
pub trait Build<O>:
    for<'s> Fn(StreamVec<'s, Time, Rec>, StreamVec<'s, Time, Late<Rec>>) -> StreamVec<'s, Time, O>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<O, F> Build<O> for F where
    F: for<'s> Fn(
            StreamVec<'s, Time, Rec>,
            StreamVec<'s, Time, Late<Rec>>,
        ) -> StreamVec<'s, Time, O>
        + Clone
        + Send
        + Sync
        + 'static
{
}
