//! The embedded checkpoint store: a local directory.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use freshet_operators::checkpoint::StateStore;

use super::manifest::{Manifest, FORMAT};
use crate::error::{Error, Result};

/// Checkpoints in a directory: parts under `epoch-<C>/<operator>/<worker>`, manifests
/// as `manifest-<C>.json`. Every file is written to a temporary name, synced and
/// renamed into place, so a reader sees a whole file or none.
#[derive(Debug)]
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    /// Opens (creating) the directory.
    pub fn open(root: &Path) -> Result<Self> {
        fs::create_dir_all(root)
            .map_err(|e| Error::Config(format!("checkpoint directory {}: {e}", root.display())))?;
        Ok(LocalDir {
            root: root.to_path_buf(),
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether a part exists.
    pub fn exists(&self, path: &str) -> bool {
        self.size(path).is_some()
    }

    /// A part's size in bytes, if it exists.
    pub fn size(&self, path: &str) -> Option<u64> {
        std::fs::metadata(self.root.join(path))
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// The newest manifest, if any.
    pub fn latest_manifest(&self) -> Result<Option<Manifest>> {
        let Some(epoch) = self.manifests()?.into_iter().max() else {
            return Ok(None);
        };
        let path = self.root.join(Manifest::file_name(epoch));
        let text = fs::read_to_string(&path)
            .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{} is not a manifest: {e}", path.display())))?;
        if manifest.format != FORMAT {
            return Err(Error::Config(format!(
                "{} has part format {}; this build reads format {FORMAT}",
                path.display(),
                manifest.format
            )));
        }
        Ok(Some(manifest))
    }

    /// Writes a manifest, atomically.
    pub fn put_manifest(&self, manifest: &Manifest) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(manifest).expect("a manifest serializes");
        self.put(&Manifest::file_name(manifest.epoch), &bytes)
            .map_err(|e| {
                Error::Runtime(format!(
                    "writing checkpoint manifest {}: {e}",
                    manifest.epoch
                ))
            })
    }

    /// Deletes every checkpoint older than the newest `retain` manifests, and parts of
    /// torn checkpoints below them.
    pub fn retain(&self, retain: usize) -> Result<()> {
        let mut manifests = self.manifests()?;
        manifests.sort_unstable();
        let Some(&oldest_kept) = manifests.iter().rev().nth(retain.saturating_sub(1)) else {
            return Ok(());
        };
        let io = |e: std::io::Error| Error::Runtime(format!("pruning checkpoints: {e}"));
        for entry in fs::read_dir(&self.root).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let epoch = Manifest::epoch_of(&name)
                .or_else(|| name.strip_prefix("epoch-").and_then(|e| e.parse().ok()));
            if epoch.is_some_and(|e| e < oldest_kept) {
                let path = entry.path();
                let removed = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                // Another process of the job may have removed it first.
                if let Err(e) = removed {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        return Err(io(e));
                    }
                }
            }
        }
        Ok(())
    }

    /// The greatest epoch any part was written at (complete checkpoint or not).
    pub fn newest_part_epoch(&self) -> Result<Option<u64>> {
        let entries = fs::read_dir(&self.root)
            .map_err(|e| Error::Config(format!("listing {}: {e}", self.root.display())))?;
        Ok(entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix("epoch-").and_then(|n| n.parse().ok())
            })
            .max())
    }

    fn manifests(&self) -> Result<Vec<u64>> {
        let entries = fs::read_dir(&self.root)
            .map_err(|e| Error::Config(format!("listing {}: {e}", self.root.display())))?;
        Ok(entries
            .filter_map(|e| e.ok())
            .filter_map(|e| Manifest::epoch_of(&e.file_name().to_string_lossy()))
            .collect())
    }
}

impl StateStore for LocalDir {
    fn put(&self, path: &str, bytes: &[u8]) -> std::io::Result<()> {
        let target = self.root.join(path);
        let dir = target.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(
            ".{}.{}.{:?}.tmp",
            target
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            std::process::id(),
            std::thread::current().id()
        ));
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, &target)?;
        // The rename is durable once the directory is.
        fs::File::open(dir)?.sync_all()
    }

    fn get(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
        match fs::read(self.root.join(path)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("freshet-ckpt-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn parts_round_trip_and_missing_ones_are_none() {
        let store = LocalDir::open(&dir("roundtrip")).unwrap();
        store.put("epoch-1/a/0", b"state").unwrap();
        assert_eq!(
            store.get("epoch-1/a/0").unwrap().as_deref(),
            Some(&b"state"[..])
        );
        assert!(store.exists("epoch-1/a/0"));
        assert_eq!(store.get("epoch-1/a/1").unwrap(), None);
    }

    #[test]
    fn the_newest_manifest_wins_and_old_checkpoints_are_pruned() {
        let store = LocalDir::open(&dir("prune")).unwrap();
        for epoch in [4u64, 9, 14, 19] {
            store.put(&format!("epoch-{epoch:020}/t/0"), b"x").unwrap();
            store
                .put_manifest(&Manifest::new(epoch, 1, vec!["t".into()]))
                .unwrap();
        }
        // A torn checkpoint: parts, no manifest.
        store.put(&format!("epoch-{:020}/t/0", 24), b"x").unwrap();
        assert_eq!(store.latest_manifest().unwrap().unwrap().epoch, 19);
        store.retain(2).unwrap();
        assert_eq!(store.latest_manifest().unwrap().unwrap().epoch, 19);
        assert!(!store.exists(&format!("epoch-{:020}/t/0", 9)));
        assert!(store.exists(&format!("epoch-{:020}/t/0", 14)));
        assert!(store.exists(&format!("epoch-{:020}/t/0", 24)));
        let mut left: Vec<u64> = store.manifests().unwrap();
        left.sort();
        assert_eq!(left, vec![14, 19]);
    }
}
