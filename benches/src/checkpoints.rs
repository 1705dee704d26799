//! Checkpoints for the in-memory benchmarks: a local-directory store that times every
//! part it writes, and the per-worker context operators find while a dataflow is built.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use freshet::checkpoint::LocalDir;
use freshet::operators::checkpoint::{Checkpoints, Restore, StateStore};

/// One part written: its path, size and how long the durable write took.
#[derive(Clone, Debug)]
pub struct Written {
    /// `epoch-<C>/<operator>/<worker>`.
    pub path: String,
    /// Bytes.
    pub bytes: usize,
    /// The write, fsync and rename.
    pub took: Duration,
}

impl Written {
    /// The checkpoint epoch the part belongs to.
    pub fn epoch(&self) -> u64 {
        self.path
            .strip_prefix("epoch-")
            .and_then(|p| p.split('/').next())
            .and_then(|e| e.parse().ok())
            .expect("a part path")
    }
}

/// A local directory that records every part written to it.
#[derive(Debug)]
pub struct TimedDir {
    dir: LocalDir,
    written: Mutex<Vec<Written>>,
}

impl TimedDir {
    /// A fresh directory `root/<name>-<pid>` (removed first if it exists).
    pub fn fresh(root: &Path, name: &str) -> anyhow::Result<Arc<Self>> {
        let path = root.join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        Ok(Arc::new(TimedDir {
            dir: LocalDir::open(&path)?,
            written: Mutex::default(),
        }))
    }

    /// The directory.
    pub fn path(&self) -> PathBuf {
        self.dir.root().to_path_buf()
    }

    /// Every part written so far (compacted images, written later off the worker, are
    /// not counted: a checkpoint is its parts).
    pub fn written(&self) -> Vec<Written> {
        self.written.lock().unwrap().clone()
    }

    /// Removes the directory.
    pub fn remove(&self) {
        let _ = std::fs::remove_dir_all(self.dir.root());
    }
}

impl StateStore for TimedDir {
    fn put(&self, path: &str, bytes: &[u8]) -> std::io::Result<()> {
        let started = Instant::now();
        self.dir.put(path, bytes)?;
        if Checkpoints::is_image_path(path) {
            return Ok(());
        }
        self.written.lock().unwrap().push(Written {
            path: path.to_string(),
            bytes: bytes.len(),
            took: started.elapsed(),
        });
        Ok(())
    }

    fn get(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
        self.dir.get(path)
    }
}

/// The checkpoint context of worker `index` of `peers`, as jobs have it (parts written
/// on a writer thread): a checkpoint every `every` epochs into `store`, restoring
/// `restore` if given; failed writes are counted in `failed`.
pub fn context(
    store: Arc<TimedDir>,
    every: u64,
    index: usize,
    peers: usize,
    restore: Option<Restore>,
    failed: Arc<AtomicU64>,
) -> Checkpoints {
    Checkpoints::new(
        store,
        every,
        index,
        peers,
        restore,
        Box::new(move |_, _, _| {
            failed.fetch_add(1, Ordering::Relaxed);
        }),
    )
    .with_async_writes()
}

/// Per checkpoint epoch: total bytes and the slowest part's write, oldest first.
pub fn per_checkpoint(written: &[Written]) -> Vec<(u64, usize, Duration)> {
    let mut by: std::collections::BTreeMap<u64, (usize, Duration)> = Default::default();
    for w in written {
        let e = by.entry(w.epoch()).or_default();
        e.0 += w.bytes;
        e.1 = e.1.max(w.took);
    }
    by.into_iter().map(|(e, (b, t))| (e, b, t)).collect()
}

/// Adds what the checkpoints of a run cost to its result line: how many were taken,
/// their parts, mean size and slowest part write. Fails if any write failed.
pub fn report(
    line: crate::report::Line,
    store: &TimedDir,
    every: u64,
    failed: &AtomicU64,
) -> anyhow::Result<crate::report::Line> {
    anyhow::ensure!(
        failed.load(Ordering::Relaxed) == 0,
        "checkpoint writes failed"
    );
    let written = store.written();
    let per = per_checkpoint(&written);
    let mean_bytes = per.iter().map(|(_, b, _)| *b as f64).sum::<f64>() / per.len().max(1) as f64;
    let slowest = written.iter().map(|w| w.took).max().unwrap_or_default();
    Ok(line
        .field("checkpoint_every_epochs", every)
        .field("checkpoints", per.len())
        .field("checkpoint_parts", written.len())
        .field("checkpoint_mean_kib", format!("{:.1}", mean_bytes / 1024.0))
        .field(
            "checkpoint_slowest_write_ms",
            format!("{:.2}", slowest.as_secs_f64() * 1e3),
        ))
}
