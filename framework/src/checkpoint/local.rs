//! The embedded checkpoint store: a local directory.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use freshet_operators::checkpoint::StateStore;

use super::store::Store;
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
        std::fs::metadata(self.root.join(path)).is_ok_and(|m| m.is_file())
    }
}

impl Store for LocalDir {
    fn list(&self, prefix: &str) -> std::io::Result<Vec<(String, u64)>> {
        fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, u64)>) -> std::io::Result<()> {
            let entries = match fs::read_dir(dir) {
                Ok(entries) => entries,
                // Removed by another process of the job meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                // Temporary files of writes under way.
                if name.starts_with('.') {
                    continue;
                }
                let path = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let meta = match entry.metadata() {
                    Ok(meta) => meta,
                    // Removed meanwhile (retention, by another process of the job).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                if meta.is_dir() {
                    walk(&entry.path(), &path, out)?;
                } else {
                    out.push((path, meta.len()));
                }
            }
            Ok(())
        }
        let dir = super::store::dir_of(prefix);
        let mut out = Vec::new();
        walk(&self.root.join(dir), dir, &mut out)?;
        out.retain(|(p, _)| p.starts_with(prefix));
        Ok(out)
    }

    fn remove_prefix(&self, prefix: &str) -> std::io::Result<()> {
        let path = self.root.join(prefix.trim_end_matches('/'));
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn location(&self) -> String {
        self.root.display().to_string()
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
    use super::super::Manifest;
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
        let local = LocalDir::open(&dir("prune")).unwrap();
        let store: &dyn Store = &local;
        for epoch in [4u64, 9, 14, 19] {
            store.put(&format!("epoch-{epoch:020}/t/0"), b"x").unwrap();
            store
                .put_manifest(&Manifest::new(epoch, epoch, 1, vec!["t".into()]))
                .unwrap();
        }
        // A torn checkpoint: parts, no manifest.
        store.put(&format!("epoch-{:020}/t/0", 24), b"x").unwrap();
        assert_eq!(store.latest_manifest().unwrap().unwrap().epoch, 19);
        store.retain(2).unwrap();
        assert_eq!(store.latest_manifest().unwrap().unwrap().epoch, 19);
        assert!(!local.exists(&format!("epoch-{:020}/t/0", 9)));
        assert!(local.exists(&format!("epoch-{:020}/t/0", 14)));
        assert!(local.exists(&format!("epoch-{:020}/t/0", 24)));
        assert_eq!(store.newest_part_epoch().unwrap(), Some(24));
        assert_eq!(
            store
                .part_sizes(14)
                .unwrap()
                .get(&format!("epoch-{:020}/t/0", 14)),
            Some(&1)
        );
        let mut left: Vec<u64> = store.manifests().unwrap();
        left.sort();
        assert_eq!(left, vec![14, 19]);
    }

    /// An incremental checkpoint's base parts stay as long as it does, though their
    /// own checkpoint is pruned.
    #[test]
    fn parts_a_kept_checkpoint_builds_on_are_kept() {
        let local = LocalDir::open(&dir("chains")).unwrap();
        let store: &dyn Store = &local;
        // A checkpoint every 5 epochs, chains compacted every 2 parts (so at most 4
        // parts long): 29 may build on parts back to 14.
        for epoch in [4u64, 9, 14, 19, 24, 29, 34] {
            store.put(&format!("epoch-{epoch:020}/t/0"), b"x").unwrap();
            let from = freshet_operators::checkpoint::chain_from(epoch, 5, 2);
            store
                .put_manifest(&Manifest::new(epoch, from, 1, vec!["t".into()]))
                .unwrap();
        }
        store.retain(2).unwrap();
        let mut left: Vec<u64> = store.manifests().unwrap();
        left.sort();
        assert_eq!(left, vec![29, 34], "manifests past retention go");
        for gone in [4u64, 9] {
            assert!(!local.exists(&format!("epoch-{gone:020}/t/0")), "{gone}");
        }
        for kept in [14u64, 19, 24, 29, 34] {
            assert!(local.exists(&format!("epoch-{kept:020}/t/0")), "{kept}");
        }
    }
}
