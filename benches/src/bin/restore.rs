//! Restore time: how long a job takes to load a checkpoint of `--keys` keys of open
//! tumbling-window state (a count per key), and how large and slow the write of the
//! checkpoint holding every key was (the newest, restored, may add incremental parts).
//!
//! The first run counts one event per key into a window that stays open, crosses a
//! checkpoint epoch so the state is written, and ends. The second run builds the same
//! dataflow restoring that checkpoint — the time measured is the dataflow's
//! construction, which reads and decodes every part and keeps the keys each worker
//! owns — then ends its input: every restored window is emitted, and their counts must
//! add up to the keys.
//!
//! ```text
//! cargo run --release -p freshet-benches --bin restore -- --keys 1000000 --checkpoint-dir /tmp/restore
//! cargo run --release -p freshet-benches --bin restore -- --keys 1000000 -w 2 --restore-workers 1
//! ```

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use freshet::operators::checkpoint::Restore;
use freshet::Tumble;
use freshet_benches::checkpoints::{self, TimedDir};
use freshet_benches::cluster::{wait_step, ClusterArgs, Label};
use freshet_benches::input::Feeder;
use freshet_benches::report::Line;
use timely::dataflow::operators::{Inspect, Probe};

#[derive(Parser, Debug)]
#[command(name = "restore", disable_help_flag = true)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Keys of window state in the checkpoint.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Restore at this many workers (default: the workers that wrote it).
    #[arg(long)]
    restore_workers: Option<usize>,
    /// Where the checkpoint is written (a fresh subdirectory, removed at the end).
    #[arg(long, default_value = "/tmp/freshet-restore")]
    checkpoint_dir: std::path::PathBuf,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

/// Event times: every event in the first second of a 10-minute window.
const START: u64 = 1_700_000_400_000;
const WINDOW: u64 = 600_000;
/// Input rounds per epoch.
const ROUNDS: u64 = 4;

/// One run at `workers` workers: feeds `keys` (split between the workers) unless
/// restoring, checkpoints every epoch; returns the construction time and the counts of
/// the windows it emitted at the end of its input.
fn run(
    workers: usize,
    keys: u64,
    store: Arc<TimedDir>,
    restore: Option<Restore>,
) -> anyhow::Result<(Duration, u64)> {
    let config = timely::Config::process(workers);
    let emitted = Arc::new(AtomicU64::new(0));
    let built = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let (emitted2, built2) = (emitted.clone(), built.clone());
    let guards = timely::execute(config, move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let ctx = checkpoints::context(store.clone(), 1, index, peers, restore, failed.clone());
        let installed = ctx.install();
        let counted = Rc::new(Cell::new(0u64));
        let c = counted.clone();
        let started = Instant::now();
        let (mut feeder, probe) = worker.dataflow::<freshet::Time, _, _>(|scope| {
            let (feeder, events) = Feeder::<u64>::new(&scope, 0, ROUNDS);
            let (probe, _) = events
                .tumble_count("restore-count", WINDOW, |k: &u64| *k)
                .inspect(move |w| c.set(c.get() + w.value))
                .probe();
            (feeder, probe)
        });
        built2.fetch_max(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        drop(installed);
        if restore.is_none() {
            let mine: Vec<u64> = (0..keys).filter(|k| *k as usize % peers == index).collect();
            for chunk in mine.chunks(65_536) {
                feeder.round(chunk.iter().map(|&k| (START, k)));
                worker.step();
            }
            // Rounds without events until the state is in a checkpoint: the window
            // stays open (the watermark stays at its first second).
            let fed = feeder.time().map_or(0, |t| t.epoch);
            let deadline = Instant::now() + Duration::from_secs(60);
            while complete_epoch(&store.written(), peers).is_none_or(|e| e < fed) {
                // Every epoch writes parts: never fill the disk waiting.
                assert!(
                    Instant::now() < deadline,
                    "no checkpoint of epoch {fed} or later complete after 60 s"
                );
                feeder.round(std::iter::empty());
                wait_step(worker, false);
            }
        }
        feeder.close();
        while !probe.done() {
            wait_step(worker, false);
        }
        emitted2.fetch_add(counted.get(), Ordering::Relaxed);
    })
    .map_err(|e| anyhow::anyhow!(e))?;
    for r in guards.join() {
        r.map_err(|e| anyhow::anyhow!(e))?;
    }
    Ok((
        Duration::from_nanos(built.load(Ordering::Relaxed)),
        emitted.load(Ordering::Relaxed),
    ))
}

/// The newest epoch every one of `workers` wrote its part of.
fn complete_epoch(written: &[checkpoints::Written], workers: usize) -> Option<u64> {
    let mut parts: std::collections::BTreeMap<u64, usize> = Default::default();
    for w in written {
        *parts.entry(w.epoch()).or_default() += 1;
    }
    parts
        .into_iter()
        .rev()
        .find(|(_, n)| *n == workers)
        .map(|(e, _)| e)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let workers = args.cluster.peers();
    let store = TimedDir::fresh(&args.checkpoint_dir, "restore")?;
    let (_, first) = run(workers, args.keys, store.clone(), None)?;
    anyhow::ensure!(first == args.keys, "the first run counted {first} events");
    let written = store.written();
    let epoch = complete_epoch(&written, workers)
        .ok_or_else(|| anyhow::anyhow!("no checkpoint was written"))?;
    // The checkpoint with every key is the largest (its parts are full); the newest,
    // restored, may be an incremental one on top of it (nothing changed since).
    let cost = |epoch: u64| {
        let parts: Vec<_> = written.iter().filter(|w| w.epoch() == epoch).collect();
        let bytes: usize = parts.iter().map(|w| w.bytes).sum();
        (
            bytes,
            parts.iter().map(|w| w.took).max().unwrap_or_default(),
        )
    };
    let full = (0..=epoch).max_by_key(|e| cost(*e).0).unwrap_or(epoch);
    let (bytes, write) = cost(full);
    let at = args.restore_workers.unwrap_or(workers);
    let (took, restored) = run(at, 0, store.clone(), Some(Restore { epoch, workers }))?;
    store.remove();
    anyhow::ensure!(
        restored == args.keys,
        "the restored windows count {restored} events, not {}",
        args.keys
    );
    Line::new("restore")
        .field("config", args.cluster.label())
        .field("restore_workers", at)
        .field("keys", args.keys)
        .field(
            "checkpoint_mib",
            format!("{:.1}", bytes as f64 / (1 << 20) as f64),
        )
        .field("write_ms", format!("{:.1}", write.as_secs_f64() * 1e3))
        .field("restore_ms", format!("{:.1}", took.as_secs_f64() * 1e3))
        .rate("keys_restored_per_s", args.keys as f64 / took.as_secs_f64())
        .print();
    Ok(())
}
