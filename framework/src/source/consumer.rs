//! Opening a worker's consumer on its partitions, and committing its complete epochs.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use freshet_operators::checkpoint::Checkpoints;
use std::collections::BTreeMap;

use crate::commit::{Committer, OffsetLedger};
use crate::config::{Fallback, OutOfRange, SourceConfig, StartFrom};
use crate::error::{Error, Result};
use crate::job::Job;
use crate::metrics::Metrics;
use crate::source::assign::owner;
use crate::source::partition::PartitionState;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The client context of source consumers: routes librdkafka's errors to `tracing`,
/// and keeps end-of-partition events (which Freshet reads as data) out of the error log.
#[derive(Clone, Copy, Debug, Default)]
pub struct SourceContext;

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        match error {
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {
                tracing::trace!(%reason, "end of partition")
            }
            e => tracing::warn!(error = %e, %reason, "kafka client error"),
        }
    }
}

impl ConsumerContext for SourceContext {}

/// A consumer with the source context.
pub type SourceConsumer = BaseConsumer<SourceContext>;

/// One partition as librdkafka's last statistics saw it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FetchState {
    /// The partition is being fetched from a leader that is up.
    pub fetching: bool,
    /// Its high watermark from the last fetch response (-1 before any).
    pub high: i64,
}

/// What librdkafka's callbacks (served by the source's own polls) tell the source
/// operator: client errors and per-partition fetch state.
#[derive(Default)]
pub(crate) struct ClientReports {
    /// Client errors (not end-of-partition) so far.
    pub errors: AtomicU64,
    /// Per partition, from the last statistics.
    pub partitions: Mutex<HashMap<i32, FetchState>>,
}

/// The context of a Kafka source's own consumer: [`SourceContext`]'s error handling,
/// plus librdkafka's statistics (every second, served by the source's own polls), which
/// carry each partition's high watermark as of the last fetch response: consumer lag
/// and the progress bar's total come from it. (ListOffsets "latest" is not used: the test
/// broker, Tansu, answers it too low — the first offset of the last batch plus one.)
/// Errors, fetch states and commit answers go to [`ClientReports`].
/// It also keeps the last connection failure librdkafka logged (TLS handshake,
/// certificate, SASL authentication, refused connection), so an error that only says
/// "broker transport failure" can name the cause.
pub(crate) struct MeteredContext {
    metrics: Arc<Metrics>,
    topic: String,
    reports: Arc<ClientReports>,
    failure: LastFailure,
}

/// The last connection failure a client logged, shared with the code that reports errors.
#[derive(Clone, Debug, Default)]
pub(crate) struct LastFailure(Arc<Mutex<Option<String>>>);

impl LastFailure {
    /// Records `message` if it is a connection failure (librdkafka's `FAIL` facility,
    /// or any error-level message).
    pub(crate) fn observe(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if fac == "FAIL" || (level as i32) <= RDKafkaLogLevel::Error as i32 {
            if let Ok(mut last) = self.0.lock() {
                *last = Some(message.to_string());
            }
        }
    }

    /// `error` wrapped with `context`, plus the last failure the client logged, if any.
    pub(crate) fn explain(&self, context: String, error: KafkaError) -> Error {
        let last = self.0.lock().ok().and_then(|l| l.clone());
        match last {
            // librdkafka logs a failed verification twice, once with a hint naming the
            // setting and once with OpenSSL's words only; whichever came last, name it.
            Some(cause)
                if cause.contains("certificate verify failed")
                    && !cause.contains("ssl.ca.location") =>
            {
                Error::kafka(
                    format!(
                        "{context} (the client's last connection failure: {cause}; the \
                         broker's certificate is not signed by a CA in ssl.ca.location)"
                    ),
                    error,
                )
            }
            Some(cause) => Error::kafka(
                format!("{context} (the client's last connection failure: {cause})"),
                error,
            ),
            None => Error::kafka(context, error),
        }
    }
}

impl ClientContext for MeteredContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            self.reports.errors.fetch_add(1, Ordering::Relaxed);
        }
        SourceContext.error(error, reason);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.failure.observe(level, fac, message);
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", "{fac} {message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac} {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "{fac} {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac} {message}"),
        }
    }

    fn stats(&self, statistics: Statistics) {
        let Some(t) = statistics.topics.get(&self.topic) else {
            return;
        };
        let up = |leader: i32| {
            statistics
                .brokers
                .values()
                .any(|b| b.nodeid == leader && b.state == "UP")
        };
        let mut states = self
            .reports
            .partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (&p, part) in &t.partitions {
            if p < 0 {
                continue;
            }
            if part.hi_offset >= 0 {
                self.metrics.high_watermark(&self.topic, p, part.hi_offset);
            }
            let fetching = part.fetch_state == "active" && up(part.leader);
            states.insert(
                p,
                FetchState {
                    fetching,
                    high: part.hi_offset,
                },
            );
        }
    }
}

impl ConsumerContext for MeteredContext {}

/// A Kafka source's consumer.
pub(crate) type MeteredConsumer = BaseConsumer<MeteredContext>;

/// One worker's consumer and what it has read, shared by the operator and the committer.
pub(crate) struct Reader {
    pub consumer: Rc<MeteredConsumer>,
    pub topic: String,
    pub partitions: Vec<PartitionState>,
    pub committer: Rc<std::cell::RefCell<SourceCommitter>>,
    pub known_partitions: usize,
    /// The checkpoint context and this source's name in it (none with checkpoints
    /// off).
    pub checkpoint: Option<(Checkpoints, String)>,
    /// The worker watermark restored from the checkpoint (0 without one).
    pub restored_watermark: u64,
    /// What librdkafka's callbacks reported.
    pub reports: Arc<ClientReports>,
    /// Per partition, the committed offset it was started at (with `--from committed`).
    pub committed_start: HashMap<i32, i64>,
}

/// A source's part of a checkpoint: per partition the next offset to read and the
/// largest event time seen, and the worker's watermark.
#[derive(Serialize, Deserialize)]
pub(crate) struct SourcePart {
    /// `(partition, next offset, largest event time seen)`.
    pub partitions: Vec<(i32, i64, Option<u64>)>,
    /// The worker's event-time watermark.
    pub watermark: u64,
}

/// A Kafka source's commits: its [`OffsetLedger`] decides what, its consumer sends it.
pub(crate) struct SourceCommitter {
    consumer: Rc<MeteredConsumer>,
    topic: String,
    ledger: OffsetLedger,
}

impl SourceCommitter {
    /// Records the positions reached at the end of `epoch`.
    pub fn snapshot(&mut self, epoch: u64, parts: &[PartitionState]) {
        let positions = parts
            .iter()
            .filter_map(|p| p.next_offset.map(|o| (p.partition, o)));
        self.ledger.end_epoch(epoch, positions);
    }
}

impl Committer for SourceCommitter {
    fn commit_complete(&mut self, complete_below: u64) -> Result<()> {
        let (consumer, topic) = (&self.consumer, &self.topic);
        self.ledger
            .commit_complete(complete_below, |epoch, positions| {
                let mut tpl = TopicPartitionList::new();
                for &(p, off) in positions {
                    tpl.add_partition_offset(topic, p, Offset::Offset(off))
                        .map_err(|e| Error::kafka("building commit", e))?;
                }
                let context = || format!("committing epoch {epoch} of {topic}");
                consumer
                    .commit(&tpl, CommitMode::Sync)
                    .map_err(|e| Error::kafka(context(), e))?;
                // A synchronous commit can report success while a partition failed:
                // read the offsets back and compare.
                let back = consumer
                    .committed_offsets(tpl, METADATA_TIMEOUT)
                    .map_err(|e| Error::kafka(format!("reading back {}", context()), e))?;
                for &(p, off) in positions {
                    let got = back.find_partition(topic, p).map(|e| e.offset());
                    if got != Some(Offset::Offset(off)) {
                        return Err(Error::Runtime(format!(
                            "{}: the broker has {got:?} for partition {p}, not offset {off}",
                            context()
                        )));
                    }
                }
                Ok(())
            })
    }
}

/// The partition numbers of `topic`, or a clear error if it does not exist.
pub(crate) fn partition_count<X: ConsumerContext>(
    consumer: &BaseConsumer<X>,
    topic: &str,
    brokers: &str,
    failure: &LastFailure,
) -> Result<usize> {
    let md = match consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT) {
        Ok(md) => md,
        Err(e) => {
            // librdkafka's logs arrive through the consumer's queue: serve them so the
            // failure behind this error (TLS, SASL, refused connection) is recorded.
            for _ in 0..10 {
                let _ = consumer.poll(Duration::from_millis(10));
            }
            let context = format!("fetching metadata of '{topic}' from {brokers}");
            return Err(failure.explain(context, e));
        }
    };
    let t = md.topics().iter().find(|t| t.name() == topic);
    match t {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(t.partitions().len()),
        _ => Err(Error::MissingTopic {
            topic: topic.into(),
            brokers: brokers.into(),
        }),
    }
}

/// Creates this worker's consumer, assigned to its partitions at their start offsets.
pub(crate) fn open(
    job: &Job<'_>,
    topic: &str,
    config: &SourceConfig,
    commit: bool,
) -> Result<Reader> {
    let kafka = job.kafka_config();
    let reports = Arc::new(ClientReports::default());
    let failure = LastFailure::default();
    let consumer: MeteredConsumer = kafka
        .consumer_config()
        .set("statistics.interval.ms", "1000")
        .set("auto.offset.reset", auto_offset_reset(config))
        .create_with_context(MeteredContext {
            metrics: job.metrics().clone(),
            topic: topic.to_string(),
            reports: reports.clone(),
            failure: failure.clone(),
        })
        .map_err(|e| Error::kafka("creating consumer", crate::config::redact_client_error(e)))?;
    let count = partition_count(&consumer, topic, &kafka.brokers, &failure)?;
    let (index, peers) = (job.scope().index(), job.scope().peers());
    let mine: Vec<i32> = (0..count as i32)
        .filter(|&p| owner(topic, p, peers) == index)
        .collect();

    let mut tpl = TopicPartitionList::new();
    for &p in &mine {
        tpl.add_partition(topic, p);
    }
    let fallback = match config.fallback {
        Fallback::Earliest => Offset::Beginning,
        Fallback::Latest => Offset::End,
    };
    let committed = if config.start == StartFrom::Committed && !mine.is_empty() {
        Some(
            consumer
                .committed_offsets(tpl.clone(), METADATA_TIMEOUT)
                .map_err(|e| {
                    Error::kafka(
                        format!("reading committed offsets of group '{}'", kafka.group),
                        e,
                    )
                })?,
        )
    } else {
        None
    };
    // A restored checkpoint's positions win over the group's commits (and a table
    // side's start): the state it restores reflects exactly the records before them.
    let checkpoint = Checkpoints::current().map(|c| (c, format!("KafkaSource({topic})")));
    let mut restored: BTreeMap<i32, (i64, Option<u64>)> = BTreeMap::new();
    let mut restored_watermark = None::<u64>;
    if let Some((c, name)) = &checkpoint {
        c.register(name);
        let parts = c.read_all::<SourcePart>(name);
        // At the same number of workers each worker reads the partitions it read
        // before and resumes its own watermark exactly (so the same records are late
        // as before); rescaled, it starts from the least watermark of all.
        let same = c.restore().is_some_and(|r| r.workers == peers) && parts.len() == peers;
        for (w, part) in parts.iter().enumerate() {
            restored.extend(part.partitions.iter().map(|&(p, o, e)| (p, (o, e))));
            if same && w == index {
                restored_watermark = Some(part.watermark);
            } else if !same {
                let least = restored_watermark.map_or(part.watermark, |m| m.min(part.watermark));
                restored_watermark = Some(least);
            }
        }
    }
    let mut assignment = TopicPartitionList::new();
    let mut committed_start = HashMap::new();
    for &p in &mine {
        let offset = match config.start {
            _ if restored.contains_key(&p) => Offset::Offset(restored[&p].0),
            StartFrom::Earliest => Offset::Beginning,
            StartFrom::Latest => Offset::End,
            StartFrom::Committed => match committed
                .as_ref()
                .and_then(|c| c.find_partition(topic, p))
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) if o >= 0 => {
                    committed_start.insert(p, o);
                    Offset::Offset(o)
                }
                _ => fallback,
            },
        };
        tracing::info!(worker = index, topic, partition = p, ?offset, "assigned");
        assignment
            .add_partition_offset(topic, p, offset)
            .map_err(|e| Error::kafka("building assignment", e))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| Error::kafka(format!("assigning partitions of '{topic}'"), e))?;

    let consumer = Rc::new(consumer);
    let committer = Rc::new(std::cell::RefCell::new(SourceCommitter {
        consumer: consumer.clone(),
        topic: topic.to_string(),
        ledger: OffsetLedger::new(topic, job.metrics().clone()),
    }));
    if commit {
        job.commits().add_committer(committer.clone());
    }
    let partitions = mine
        .into_iter()
        .map(|p| {
            let mut state = PartitionState::new(p);
            if let Some(&(offset, max_event)) = restored.get(&p) {
                state.restore(offset, max_event);
            }
            state
        })
        .collect();
    Ok(Reader {
        consumer,
        topic: topic.to_string(),
        partitions,
        committer,
        known_partitions: count,
        checkpoint,
        restored_watermark: restored_watermark.unwrap_or(0),
        reports,
        committed_start,
    })
}

/// librdkafka's `auto.offset.reset` for a source: `error` unless out-of-range offsets
/// fall back (then `--fallback`'s end). Set explicitly: librdkafka's default, `latest`,
/// would skip records silently.
fn auto_offset_reset(config: &SourceConfig) -> &'static str {
    match (config.on_out_of_range, config.fallback) {
        (OutOfRange::Error, _) => "error",
        (OutOfRange::Fallback, Fallback::Earliest) => "earliest",
        (OutOfRange::Fallback, Fallback::Latest) => "latest",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed verification logged in OpenSSL's words only still names the setting.
    #[test]
    fn a_failed_certificate_verification_names_the_ca_setting() {
        let failure = LastFailure::default();
        let openssl = "ssl://127.0.0.1:1/bootstrap: error:0A000086:SSL routines::certificate \
                       verify failed (after 4ms in state SSL_HANDSHAKE)";
        failure.observe(RDKafkaLogLevel::Error, "FAIL", openssl);
        let transport = KafkaError::MetadataFetch(RDKafkaErrorCode::BrokerTransportFailure);
        let e = failure
            .explain("fetching metadata".into(), transport)
            .to_string();
        assert!(
            e.contains("certificate verify failed") && e.contains("ssl.ca.location"),
            "{e}"
        );
    }
}
