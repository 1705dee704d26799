//! Opening a worker's consumer on its partitions, and committing its complete epochs.

use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use rdkafka::{Offset, TopicPartitionList};

use crate::commit::{Committer, OffsetLedger};
use crate::config::{Fallback, SourceConfig, StartFrom};
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

/// The context of a Kafka source's own consumer: [`SourceContext`]'s error handling,
/// plus librdkafka's statistics (every second, served by the source's own polls), which
/// carry each partition's high watermark as of the last fetch response: consumer lag
/// and the progress bar's total come from it. (ListOffsets "latest" is not used: the test
/// broker, Tansu, answers it too low — the first offset of the last batch plus one.)
///
/// It also keeps the last connection failure librdkafka logged (TLS handshake,
/// certificate, SASL authentication, refused connection), so an error that only says
/// "broker transport failure" can name the cause.
pub(crate) struct MeteredContext {
    metrics: Arc<Metrics>,
    topic: String,
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
        for (&p, part) in &t.partitions {
            if p >= 0 && part.hi_offset >= 0 {
                self.metrics.high_watermark(&self.topic, p, part.hi_offset);
            }
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
    fn commit_complete(&mut self, complete_below: u64, sync: bool) -> Result<()> {
        let (consumer, topic) = (&self.consumer, &self.topic);
        self.ledger
            .commit_complete(complete_below, |epoch, positions| {
                let mut tpl = TopicPartitionList::new();
                for &(p, off) in positions {
                    tpl.add_partition_offset(topic, p, Offset::Offset(off))
                        .map_err(|e| Error::kafka("building commit", e))?;
                }
                let mode = if sync {
                    CommitMode::Sync
                } else {
                    CommitMode::Async
                };
                consumer
                    .commit(&tpl, mode)
                    .map_err(|e| Error::kafka(format!("committing epoch {epoch} of {topic}"), e))
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
    let failure = LastFailure::default();
    let consumer: MeteredConsumer = kafka
        .consumer_config()
        .set("statistics.interval.ms", "1000")
        .create_with_context(MeteredContext {
            metrics: job.metrics().clone(),
            topic: topic.to_string(),
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
    let mut assignment = TopicPartitionList::new();
    for &p in &mine {
        let offset = match config.start {
            StartFrom::Earliest => Offset::Beginning,
            StartFrom::Latest => Offset::End,
            StartFrom::Committed => match committed
                .as_ref()
                .and_then(|c| c.find_partition(topic, p))
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) if o >= 0 => Offset::Offset(o),
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
    Ok(Reader {
        consumer,
        topic: topic.to_string(),
        partitions: mine.into_iter().map(PartitionState::new).collect(),
        committer,
        known_partitions: count,
    })
}
