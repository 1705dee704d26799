//! Durable state: where checkpoints are kept, the manifest that makes one restorable,
//! and the job-side half of the protocol (which checkpoint is complete, retention).
//!
//! Operators write their parts through [`freshet_operators::checkpoint`]; a checkpoint
//! at epoch `C` is *complete* once every part of every checkpointing operator and
//! source on every worker is durable and every output of epochs `<= C` has been
//! acknowledged (the commit tracker's frontier is past `C`). Then the manifest of `C`
//! is written, last and atomically, and only then are offsets of epochs `<= C`
//! committed to the consumer group. A restart restores the newest manifest; parts of a
//! checkpoint without a manifest (torn by a crash) are never read.

mod local;
mod manifest;
mod s3;
mod store;

pub use local::LocalDir;
pub use manifest::Manifest;
pub use s3::S3;
pub use store::Store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use freshet_operators::checkpoint::{chain_from, grid_at_or_before, Checkpoints, Restore};

use crate::error::{Error, Result};

/// Checkpoint settings of a job.
#[derive(Clone, Debug)]
pub struct CheckpointConfig {
    /// Off: state lives in memory only, and operators hold commits until their
    /// windows close (`--no-checkpoints`).
    pub enabled: bool,
    /// Where checkpoints are kept: a directory, or an object store over the S3
    /// protocol as `s3://bucket/prefix` (connection settings from the `AWS_*`
    /// environment variables, see [`S3`]). `None`: the directory `<root>/<group>`,
    /// where the root is `$FRESHET_CHECKPOINT_ROOT` if set, else `.freshet/checkpoints`
    /// under the working directory.
    pub dir: Option<PathBuf>,
    /// How often a checkpoint is taken (rounded to whole epochs).
    pub interval: Duration,
    /// How many complete checkpoints are kept; older ones are deleted (and the parts
    /// the oldest kept one builds on are kept).
    pub retain: usize,
    /// Stateful operators write what changed in each (incremental) part, and every
    /// this many parts their chain is compacted into a full image off the worker: a
    /// restore reads an image and at most `2 * full_every - 1` parts after it.
    pub full_every: u64,
    /// Restore even if the checkpoint holds state of operators the job no longer has
    /// (that state is dropped). Without it such a restore is refused.
    pub drop_orphaned: bool,
    /// Kafka sinks write each result exactly once across crashes: results wait in the
    /// sink's checkpoint part until their checkpoint is complete, and a restarted sink
    /// skips what it finds already written (`--exactly-once`).
    pub exactly_once: bool,
}

impl Default for CheckpointConfig {
    /// On, every second, in `.freshet/checkpoints/<group>`, keeping 3, every part
    /// full.
    fn default() -> Self {
        CheckpointConfig {
            enabled: true,
            dir: None,
            interval: Duration::from_secs(1),
            retain: 3,
            full_every: freshet_operators::checkpoint::DEFAULT_FULL_EVERY,
            drop_orphaned: false,
            exactly_once: false,
        }
    }
}

impl CheckpointConfig {
    /// Opens the store of `group`'s checkpoints.
    pub fn store_for(&self, group: &str) -> Result<Arc<dyn Store>> {
        let dir = self.dir_for(group);
        match dir.to_str().filter(|d| d.starts_with("s3://")) {
            Some(url) => Ok(Arc::new(S3::open(url)?)),
            None => Ok(Arc::new(LocalDir::open(&dir)?)),
        }
    }

    /// The location of `group`'s checkpoints (a directory or an `s3://` URL).
    pub fn dir_for(&self, group: &str) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| {
            let root = std::env::var_os("FRESHET_CHECKPOINT_ROOT")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".freshet").join("checkpoints"));
            root.join(freshet_operators::checkpoint::sanitize(group))
        })
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.enabled && self.interval.is_zero() {
            return Err(Error::Config(
                "--checkpoint-interval-ms must be at least 1".into(),
            ));
        }
        if self.exactly_once && !self.enabled {
            return Err(Error::Config(
                "--exactly-once needs checkpoints: results wait in them until they are \
                 written (drop --no-checkpoints)"
                    .into(),
            ));
        }
        if self.enabled && self.full_every == 0 {
            return Err(Error::Config(
                "--checkpoint-full-every must be at least 1".into(),
            ));
        }
        if self.enabled && self.retain == 0 {
            return Err(Error::Config(
                "--checkpoint-retain must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// A job's checkpoints: the store, the grid, and what this run restores.
pub struct JobCheckpoints {
    store: Arc<dyn Store>,
    /// A checkpoint every this many epochs.
    every: u64,
    retain: usize,
    full_every: u64,
    /// The manifest restored from, if any.
    restored: Option<Manifest>,
    /// Newest manifest written by this process, plus one (0: none yet).
    manifest_below: std::sync::atomic::AtomicU64,
    /// This run's checkpoints come after every part already in the store.
    floor: u64,
    /// One past the newest checkpoint found incomplete (a part missing; 0: none).
    incomplete_below: std::sync::atomic::AtomicU64,
    exactly_once: bool,
}

impl JobCheckpoints {
    /// Opens `config`'s store for `group`, finds the checkpoint to restore (`restore`:
    /// the job starts from committed positions) and checks it can be restored at
    /// `workers` workers.
    pub fn open(
        config: &CheckpointConfig,
        group: &str,
        epoch_interval: Duration,
        restore: bool,
    ) -> Result<Self> {
        let store = config.store_for(group)?;
        let restored = if restore {
            store.latest_manifest()?
        } else {
            None
        };
        if let Some(m) = &restored {
            if m.key_groups != freshet_operators::checkpoint::KEY_GROUPS {
                return Err(Error::Config(format!(
                    "checkpoint {} in {} was taken with {} key groups; this build uses {}",
                    m.epoch,
                    store.location(),
                    m.key_groups,
                    freshet_operators::checkpoint::KEY_GROUPS
                )));
            }
            tracing::info!(epoch = m.epoch, workers = m.workers, store = %store.location(), "restoring checkpoint");
        }
        let epoch_ms = epoch_interval.as_millis().max(1) as u64;
        let every = (config.interval.as_millis() as u64)
            .div_ceil(epoch_ms)
            .max(1);
        let manifest_below = restored.as_ref().map_or(0, |m| m.epoch + 1);
        // Parts a crashed run wrote after its last manifest stay where they are; this
        // run takes its checkpoints at later epochs, so none is mistaken for its own.
        let floor = store.newest_part_epoch()?.map_or(0, |e| e + 1);
        Ok(JobCheckpoints {
            incomplete_below: 0.into(),
            exactly_once: config.exactly_once,
            floor,
            store,
            every,
            retain: config.retain,
            full_every: config.full_every.max(1),
            restored,
            manifest_below: manifest_below.into(),
        })
    }

    /// The operator-side context of worker `index` of `peers`; `on_failure` hears of
    /// every part that could not be written.
    pub fn context(
        &self,
        index: usize,
        peers: usize,
        on_failure: freshet_operators::checkpoint::FailureHook,
    ) -> Checkpoints {
        let restore = self.restored.as_ref().map(|m| Restore {
            epoch: m.epoch,
            workers: m.workers,
        });
        Checkpoints::new(
            self.store.clone(),
            self.every,
            index,
            peers,
            restore,
            on_failure,
        )
        .with_floor(self.floor)
        .with_full_every(self.full_every)
        .with_async_writes()
    }

    /// Refuses to run a job whose checkpointing operators and sources differ from the
    /// restored checkpoint's in a way that would lose state: a part whose owner is gone
    /// (unless `drop_orphaned`). New operators start empty. `adopted` names parts an
    /// operator reads without writing them (`Checkpoints::adopt`): they have an owner.
    pub fn check_names(
        &self,
        names: &[String],
        adopted: &[String],
        drop_orphaned: bool,
    ) -> Result<()> {
        let Some(m) = &self.restored else {
            return Ok(());
        };
        let owned = |n: &String| names.contains(n) || adopted.contains(n);
        let orphaned: Vec<&String> = m.names.iter().filter(|n| !owned(n)).collect();
        let new: Vec<&String> = names.iter().filter(|n| !m.names.contains(n)).collect();
        if !new.is_empty() {
            tracing::warn!(operators = ?new, "stateful operators not in the restored checkpoint start empty");
        }
        if orphaned.is_empty() {
            return Ok(());
        }
        if drop_orphaned {
            tracing::warn!(operators = ?orphaned, "dropping checkpointed state no operator of this job owns");
            return Ok(());
        }
        Err(Error::Config(format!(
            "checkpoint {} holds state of operators this job does not have: {}. Restore the \
             job they belong to, rename the operators back, or pass --drop-orphaned-state to \
             drop that state",
            m.epoch,
            orphaned
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    /// Whether Kafka sinks write exactly once ([`CheckpointConfig::exactly_once`]).
    pub fn exactly_once(&self) -> bool {
        self.exactly_once
    }

    /// Epochs below this may be committed: every epoch of a written manifest.
    pub fn committable_below(&self) -> u64 {
        self.manifest_below
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Writes the manifest of the newest complete checkpoint, if it is newer than the
    /// last one: `complete_below` is the commit tracker's bound, `names` the job's
    /// checkpointing operators and sources, `workers` all workers of the job. Deletes
    /// checkpoints past the retention count. Returns the manifest's epoch and the
    /// checkpoint's size in bytes if one was written.
    pub fn advance(
        &self,
        complete_below: u64,
        names: &[String],
        workers: usize,
    ) -> Result<Option<(u64, u64)>> {
        if complete_below == 0 || complete_below == u64::MAX {
            return Ok(None);
        }
        let Some(epoch) = grid_at_or_before(complete_below - 1, self.every) else {
            return Ok(None);
        };
        if epoch < self.committable_below() {
            return Ok(None);
        }
        // Only this run's own checkpoints: parts below the floor are a crashed run's,
        // whose output was never known to be durable, even if every part is there.
        if epoch < self.floor {
            return Ok(None);
        }
        // A source or operator that saw its inputs jump past several checkpoint epochs
        // at once wrote only the newest: such an epoch has no complete checkpoint.
        // Every part is written before the tracker passes its epoch, so a checkpoint
        // found incomplete stays incomplete: it is listed once, not at every step.
        if epoch
            < self
                .incomplete_below
                .load(std::sync::atomic::Ordering::Acquire)
        {
            return Ok(None);
        }
        let sizes = self.store.part_sizes(epoch)?;
        let mut bytes = 0;
        for name in names {
            for worker in 0..workers {
                match sizes.get(&Checkpoints::part_path(epoch, name, worker)) {
                    Some(size) => bytes += size,
                    None => {
                        self.incomplete_below
                            .fetch_max(epoch + 1, std::sync::atomic::Ordering::AcqRel);
                        return Ok(None);
                    }
                }
            }
        }
        let from = chain_from(epoch, self.every, self.full_every);
        let manifest = Manifest::new(epoch, from, workers, names.to_vec());
        self.store.put_manifest(&manifest)?;
        self.manifest_below
            .fetch_max(epoch + 1, std::sync::atomic::Ordering::AcqRel);
        self.store.retain(self.retain)?;
        Ok(Some((epoch, bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restored(names: &[&str]) -> JobCheckpoints {
        // One directory per call: the tests run in parallel.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "freshet-names-{}-{}",
            std::process::id(),
            CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let local = LocalDir::open(&dir).unwrap();
        let store: &dyn Store = &local;
        let names = names.iter().map(|n| n.to_string()).collect();
        store.put_manifest(&Manifest::new(9, 9, 2, names)).unwrap();
        let config = CheckpointConfig {
            dir: Some(dir),
            ..CheckpointConfig::default()
        };
        JobCheckpoints::open(&config, "g", Duration::from_millis(200), true).unwrap()
    }

    #[test]
    fn state_without_an_owner_is_refused_by_name_unless_dropped() {
        let c = restored(&["Tumble(a, 10ms)", "KafkaSource(in)"]);
        assert_eq!(c.committable_below(), 10, "restored epoch 9");
        let now = vec!["Tumble(b, 10ms)".to_string(), "KafkaSource(in)".to_string()];
        let err = c.check_names(&now, &[], false).unwrap_err().to_string();
        assert!(err.contains("\"Tumble(a, 10ms)\""), "{err}");
        assert!(err.contains("--drop-orphaned-state"), "{err}");
        c.check_names(&now, &[], true).unwrap();
        // A job with every restored operator (and a new one) starts.
        let more = vec![
            "Tumble(a, 10ms)".to_string(),
            "KafkaSource(in)".to_string(),
            "Tumble(new, 5ms)".to_string(),
        ];
        c.check_names(&more, &[], false).unwrap();
        // A part another operator reads in its place (adopted) has an owner.
        let adopted = vec!["Tumble(a, 10ms)".to_string()];
        c.check_names(&now, &adopted, false).unwrap();
    }

    /// A crashed run's parts after its last manifest are never joined by this run's:
    /// its checkpoints start after the newest part in the store.
    #[test]
    fn a_new_run_checkpoints_after_every_torn_part() {
        let c = restored(&["t"]);
        let torn = format!("epoch-{:020}/t/0", 30);
        c.store.put(&torn, b"from the crashed run").unwrap();
        let config = CheckpointConfig {
            dir: Some(c.store.location().into()),
            ..CheckpointConfig::default()
        };
        let again = JobCheckpoints::open(&config, "g", Duration::from_millis(200), true).unwrap();
        assert_eq!(
            again.restored.as_ref().unwrap().epoch,
            9,
            "the manifest, not the torn part"
        );
        let ctx = again.context(0, 1, Box::new(|_, _, _| {}));
        assert_eq!(ctx.floor(), 31);
        assert!(ctx.at_or_after(ctx.floor()) > 30);
    }

    /// A crashed run's torn checkpoint, every part present but no manifest, is never
    /// named complete by the next run, whatever its commit tracker says.
    #[test]
    fn a_new_run_never_completes_a_crashed_runs_checkpoint() {
        let c = restored(&["t"]);
        // A checkpoint every 5 epochs (1 s of 200 ms epochs): 14 is a grid epoch.
        let part = Checkpoints::part_path(14, "t", 0);
        c.store.put(&part, b"from the crashed run").unwrap();
        let config = CheckpointConfig {
            dir: Some(c.store.location().into()),
            ..CheckpointConfig::default()
        };
        let again = JobCheckpoints::open(&config, "g", Duration::from_millis(200), true).unwrap();
        assert_eq!(again.floor, 15);
        let names = vec!["t".to_string()];
        // Every epoch up to 16 complete by this run's tracker: 14 is the crashed run's.
        assert_eq!(again.advance(17, &names, 1).unwrap(), None);
        assert_eq!(again.store.latest_manifest().unwrap().unwrap().epoch, 9);
        // This run's own checkpoint 19 is named once its part is there.
        again
            .store
            .put(&Checkpoints::part_path(19, "t", 0), b"ours")
            .unwrap();
        assert_eq!(
            again.advance(20, &names, 1).unwrap().map(|(e, _)| e),
            Some(19)
        );
    }

    #[test]
    fn the_interval_becomes_whole_epochs() {
        let dir = std::env::temp_dir().join(format!("freshet-every-{}", std::process::id()));
        let config = CheckpointConfig {
            dir: Some(dir),
            interval: Duration::from_millis(1000),
            ..CheckpointConfig::default()
        };
        let c = JobCheckpoints::open(&config, "g", Duration::from_millis(300), false).unwrap();
        assert_eq!(c.every, 4, "1000 ms in 300 ms epochs: every 4th");
        assert!(CheckpointConfig {
            interval: Duration::ZERO,
            ..CheckpointConfig::default()
        }
        .validate()
        .is_err());
        let err = CheckpointConfig {
            enabled: false,
            exactly_once: true,
            ..CheckpointConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("--exactly-once needs checkpoints"), "{err}");
    }
}
