//! The checkpoint store for clusters: an object store over the S3 protocol (AWS S3,
//! MinIO, Ceph, moto...), through the `object_store` crate.
//!
//! A PUT of one object is atomic and durable once acknowledged, which is all a part or
//! a manifest needs. The connection comes from the usual `AWS_*` environment variables
//! (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint); the bucket and prefix from the
//! `s3://bucket/prefix` location.
//!
//! Calls block the calling thread (a worker writing its part) on a small runtime of
//! the store's own. When the store stops answering, a failed call makes the next ones
//! fail at once for a short while instead of each waiting out its timeout, so workers
//! keep processing while checkpoints (and therefore commits) stop.

use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ClientConfigKey, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

use freshet_operators::checkpoint::StateStore;

use super::store::Store;
use crate::error::{Error, Result};

/// After a failed call, calls fail at once for this long.
const BACKOFF: Duration = Duration::from_secs(2);

/// Checkpoints in an S3 bucket under a prefix.
pub struct S3 {
    url: String,
    store: PrefixStore<AmazonS3>,
    runtime: tokio::runtime::Runtime,
    /// Until when calls fail without trying, and the error that started it.
    down: Mutex<Option<(Instant, String)>>,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3").field("url", &self.url).finish()
    }
}

impl S3 {
    /// Connects to `url` (`s3://bucket/prefix`), with the connection settings of the
    /// `AWS_*` environment variables, and checks that the bucket answers.
    pub fn open(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| Error::Config(format!("{url}: not an s3://bucket/prefix URL")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::Config(format!("{url}: no bucket")));
        }
        let config = |e: object_store::Error| Error::Config(format!("checkpoint store {url}: {e}"));
        let s3 = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            // Fail within seconds when the store is down: a worker waits for its call.
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(5),
                ..RetryConfig::default()
            })
            // As settings, not `with_client_options`, which would replace the
            // environment's (e.g. AWS_ALLOW_HTTP).
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                "2s",
            )
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "10s")
            .build()
            .map_err(config)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("freshet-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("checkpoint store {url}: runtime: {e}")))?;
        let store = S3 {
            url: url.trim_end_matches('/').to_string(),
            store: PrefixStore::new(s3, prefix),
            runtime,
            down: Mutex::new(None),
        };
        store.list("manifest-").map_err(|e| {
            Error::Config(format!(
                "checkpoint store {url} does not answer (bucket {bucket:?}; endpoint and \
                 credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...): {e}"
            ))
        })?;
        Ok(store)
    }

    /// Runs one call, unless the store failed moments ago.
    fn call<R>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = object_store::Result<R>>,
    ) -> io::Result<R> {
        if let Some((until, error)) = self.down.lock().unwrap().as_ref() {
            if Instant::now() < *until {
                return Err(io::Error::other(format!(
                    "{}: {what}: not tried, the store failed moments ago: {error}",
                    self.url
                )));
            }
        }
        match self.runtime.block_on(f) {
            Ok(r) => {
                self.down.lock().unwrap().take();
                Ok(r)
            }
            Err(object_store::Error::NotFound { path, source }) => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{path}: {source}"),
            )),
            Err(e) => {
                *self.down.lock().unwrap() = Some((Instant::now() + BACKOFF, e.to_string()));
                Err(io::Error::other(format!("{}: {what}: {e}", self.url)))
            }
        }
    }
}

impl StateStore for S3 {
    fn put(&self, path: &str, bytes: &[u8]) -> io::Result<()> {
        let payload = PutPayload::from(bytes.to_vec());
        self.call("put", self.store.put(&Path::from(path), payload))
            .map(|_| ())
    }

    fn get(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        let got = self.call("get", async {
            let result = self.store.get(&Path::from(path)).await?;
            result.bytes().await
        });
        match got {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Store for S3 {
    fn list(&self, prefix: &str) -> io::Result<Vec<(String, u64)>> {
        let dir = Some(super::store::dir_of(prefix))
            .filter(|d| !d.is_empty())
            .map(Path::from);
        let objects = self.call(
            "list",
            self.store.list(dir.as_ref()).try_collect::<Vec<_>>(),
        )?;
        Ok(objects
            .into_iter()
            // Object paths percent-encode characters such as `~` (operator names use
            // it): listed paths are decoded back to the paths parts were put at.
            .map(|o| {
                let path = o.location.to_string();
                let decoded = percent_encoding::percent_decode_str(&path).decode_utf8_lossy();
                (decoded.into_owned(), o.size)
            })
            .filter(|(p, _)| p.starts_with(prefix))
            .collect())
    }

    fn remove_prefix(&self, prefix: &str) -> io::Result<()> {
        for (path, _) in self.list(prefix)? {
            match self.call("delete", self.store.delete(&Path::from(path.as_str()))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    fn location(&self) -> String {
        self.url.clone()
    }
}
