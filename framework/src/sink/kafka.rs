//! A sink that produces records to a Kafka topic and acknowledges on delivery.
//!
//! One producer per worker. Each incoming batch keeps a capability at its time on the
//! acknowledgement stream until librdkafka reports every record of it delivered; a
//! record that cannot be delivered fails the job (nothing after it is committed), and so
//! does the deletion of its topic while the job runs ([`super::topic_watch`]).

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;
use timely::scheduling::SyncActivator;

use super::exactly_once::{Held, Staging};
use super::register_acks;
use crate::codec::Encoder;
use crate::config::{PoisonOutput, ProducerSettings};
use crate::error::{Error, Result};
use crate::job::Job;
use crate::metrics::Metrics;
use crate::time::Time;

type KeyFn<D> = Arc<dyn Fn(&D) -> Option<Vec<u8>> + Send + Sync>;
type HeadersFn<D> = Arc<dyn Fn(&D) -> Vec<(&'static str, String)> + Send + Sync>;

/// How often an exactly-once sink with records waiting looks for their manifest.
const MANIFEST_POLL: Duration = Duration::from_millis(5);

/// Marks the delivery opaque of a dead letter (the rest is its batch's slot).
const DEAD_BIT: usize = 1 << (usize::BITS - 1);

/// How much of a refused record's payload a dead letter keeps (less if the producer's
/// `message.max.bytes` is smaller: see [`dead_letter_room`]).
const DEAD_PAYLOAD_KEEP: usize = 64 << 10;

/// Bytes a dead letter needs besides its payload and the topic and reason it carries:
/// the header names, partition and offset values, and the record's framing.
const DEAD_LETTER_OVERHEAD: usize = 256;

/// How much of a refused payload fits in a dead letter naming `topic` and `reason` when
/// the producer takes messages of at most `max_bytes`: a record refused for its size by
/// this producer would otherwise be refused again as a dead letter.
fn dead_letter_room(max_bytes: usize, topic: &str, reason: &str) -> usize {
    DEAD_PAYLOAD_KEEP
        .min(max_bytes.saturating_sub(DEAD_LETTER_OVERHEAD + topic.len() + reason.len()))
}

/// Producer errors that refuse a record for good (retrying cannot help): with
/// [`PoisonOutput::DeadLetter`] such a record goes to the dead-letter topic.
fn refused_for_good(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::PolicyViolation
    )
}

/// Where and how a Kafka sink writes.
pub struct KafkaSink<D, E> {
    topic: String,
    name: Option<String>,
    encoder: E,
    key: Option<KeyFn<D>>,
    headers: Option<HeadersFn<D>>,
    settings: ProducerSettings,
    poison: Option<PoisonOutput>,
}

impl<D, E: Encoder<D>> KafkaSink<D, E> {
    /// A sink writing to `topic`, encoding values with `encoder`, no key.
    pub fn new(topic: impl Into<String>, encoder: E) -> Self {
        KafkaSink {
            topic: topic.into(),
            name: None,
            encoder,
            key: None,
            headers: None,
            settings: ProducerSettings::default(),
            poison: None,
        }
    }

    /// Names the sink (default `KafkaSink(<topic>)`): the name shows in logs and metrics
    /// and, with `--exactly-once`, keys the sink's checkpoint state, so two sinks of one
    /// job writing to one topic need different names, and a sink keeps its name across
    /// versions of a job.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds headers to each message, computed from the record.
    pub fn headers<F>(mut self, headers: F) -> Self
    where
        F: Fn(&D) -> Vec<(&'static str, String)> + Send + Sync + 'static,
    {
        self.headers = Some(Arc::new(headers));
        self
    }

    /// What to do with a record the producer refuses for good; default: the job's
    /// `--poison-output` ([`crate::JobConfig::poison_output`]).
    pub fn poison_output(mut self, policy: PoisonOutput) -> Self {
        self.poison = Some(policy);
        self
    }

    /// Sets each message's key from the record (it also picks the partition).
    pub fn key<F: Fn(&D) -> Option<Vec<u8>> + Send + Sync + 'static>(mut self, key: F) -> Self {
        self.key = Some(Arc::new(key));
        self
    }

    /// Sets the producer knobs (linger, batch size, compression, delivery timeout).
    pub fn settings(mut self, settings: ProducerSettings) -> Self {
        self.settings = settings;
        self
    }
}

/// A record the producer could not deliver: why, and (if refused for good) its payload.
struct Undelivered {
    reason: String,
    refused: Option<Vec<u8>>,
}

/// A delivery report: the opaque, and where the record landed (partition, offset).
type Report = (usize, Result<(i32, i64), Undelivered>);

/// Delivery reports go to the sink operator through a channel, and wake it.
struct DeliveryContext {
    reports: Sender<Report>,
    activator: SyncActivator,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, slot: usize) {
        use rdkafka::message::Message;
        let report = result
            .as_ref()
            .map(|m| (m.partition(), m.offset()))
            .map_err(|(e, msg)| {
                let refused = match e.rdkafka_error_code() {
                    Some(code) if refused_for_good(code) => Some(
                        msg.payload()
                            .map(|p| p[..p.len().min(DEAD_PAYLOAD_KEEP)].to_vec())
                            .unwrap_or_default(),
                    ),
                    _ => None,
                };
                Undelivered {
                    reason: e.to_string(),
                    refused,
                }
            });
        let _ = self.reports.send((slot, report));
        let _ = self.activator.activate();
    }
}

/// The headers of a dead letter: where it came from and why.
pub(crate) fn provenance(topic: &str, partition: i32, offset: i64, reason: &str) -> OwnedHeaders {
    OwnedHeaders::new()
        .insert(Header {
            key: "freshet.topic",
            value: Some(topic),
        })
        .insert(Header {
            key: "freshet.partition",
            value: Some(&partition.to_string()),
        })
        .insert(Header {
            key: "freshet.offset",
            value: Some(&offset.to_string()),
        })
        .insert(Header {
            key: "freshet.reason",
            value: Some(reason),
        })
}

/// Extension trait: write records to Kafka.
pub trait WriteKafka<D> {
    /// Produces every record to the sink's topic; acknowledgements feed the commit probe.
    fn write_kafka<E: Encoder<D>>(self, job: &Job<'_>, sink: KafkaSink<D, E>) -> Result<()>;
}

/// Batches waiting for delivery: per slot, the capability held and records outstanding.
struct Pending {
    slots: HashMap<usize, (Capability<Time>, u64)>,
    next_slot: usize,
    /// Encoded records the producer's queue had no room for, retried in order.
    backlog: VecDeque<Outgoing>,
    /// Records taken in and not yet acknowledged (flow control reads it).
    held: Rc<Cell<usize>>,
}

/// One encoded record on its way to the producer.
struct Outgoing {
    slot: usize,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: Option<OwnedHeaders>,
    /// Sent to the dead-letter topic instead of the sink's, after a refusal.
    dead: bool,
}

impl Pending {
    /// One record of `slot` was acknowledged (delivered, or dead-lettered).
    fn acknowledge(&mut self, slot: usize) -> Option<u64> {
        self.held.set(self.held.get().saturating_sub(1));
        let entry = self.slots.get_mut(&slot)?;
        let event = entry.0.time().event;
        entry.1 -= 1;
        if entry.1 == 0 {
            self.slots.remove(&slot);
        }
        Some(event)
    }
}

impl<'scope, D: 'static> WriteKafka<D> for StreamVec<'scope, Time, D> {
    fn write_kafka<E: Encoder<D>>(self, job: &Job<'_>, sink: KafkaSink<D, E>) -> Result<()> {
        let name = sink
            .name
            .clone()
            .unwrap_or_else(|| format!("KafkaSink({})", sink.topic));
        let scope = self.scope();
        let shared = job.shared().clone();
        let metrics = job.metrics().clone();
        let config = job.kafka_config().producer_config(&sink.settings);
        let max_bytes: usize = config
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let poison = sink.poison.unwrap_or(shared.poison_output());
        let dead_topic = match poison {
            PoisonOutput::Fail => None,
            PoisonOutput::DeadLetter => Some(shared.dead_letter_topic().ok_or_else(|| {
                Error::Config(format!(
                    "{name}: poison output to the dead-letter topic needs --dead-letter-topic"
                ))
            })?),
        };
        let held = job.commits().sink_backlog_counter();
        // Worker 0 fails the job if the topic is deleted while it runs.
        let watch = match job.index() {
            0 => Some(super::topic_watch::watch(
                job.kafka_config(),
                shared.clone(),
                name.clone(),
                sink.topic.clone(),
            )?),
            _ => None,
        };
        let mut create_error = None;
        let exactly_once = shared.checkpoints().is_some_and(|c| c.exactly_once());
        let mut exact_error = None;
        let acks = self
            .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
                Pipeline,
                &name,
                |cap, info| {
                    let (tx, rx): (_, Receiver<Report>) = crossbeam_channel::unbounded();
                    let mut exact = None;
                    if exactly_once {
                        match start_exactly_once(&scope, info.address.to_vec(), cap, job, &name, &sink.topic) {
                            Ok(staging) => exact = Some(staging),
                            Err(e) => exact_error = Some(e),
                        }
                    }
                    let context = DeliveryContext {
                        reports: tx,
                        activator: scope.worker().sync_activator_for(info.address.to_vec()),
                    };
                    let activator = scope.activator_for(info.address);
                    let producer = match config
                        .create_with_context::<_, ThreadedProducer<DeliveryContext>>(context)
                    {
                        Ok(p) => Some(p),
                        Err(e) => {
                            create_error = Some(e);
                            None
                        }
                    };
                    let topic = sink.topic.clone();
                    let encoder = sink.encoder;
                    let key = sink.key;
                    let headers = sink.headers;
                    let mut pending = Pending {
                        slots: HashMap::new(),
                        next_slot: 0,
                        backlog: VecDeque::new(),
                        held,
                    };
                    let mut buf = Vec::new();
                    let name = name.clone();
                    let sink_records = super::records_counter(&metrics, &name);
                    // Deliveries the producer acknowledged without an offset (see below).
                    let mut unplaced = 0u64;
                    // A refused record becomes a dead letter, or fails the job.
                    let refuse = {
                        let (shared, name, topic) = (shared.clone(), name.clone(), topic.clone());
                        let metrics = metrics.clone();
                        let dead_topic = dead_topic.clone();
                        move |pending: &mut Pending, slot: usize, payload: Vec<u8>, reason: String| {
                            let Some(dead) = dead_topic.as_ref() else {
                                shared.fail(Error::Sink {
                                    sink: name.clone(),
                                    reason: format!("record refused: {reason}"),
                                });
                                return;
                            };
                            tracing::warn!(sink = %name, dead_letter_topic = %dead, %reason,
                                "record refused by the producer; writing it to the dead-letter topic");
                            Metrics::add(&metrics.dead_letters, 1);
                            let reason = format!("refused by {name}: {reason}");
                            let mut payload = payload;
                            payload.truncate(dead_letter_room(max_bytes, &topic, &reason));
                            pending.backlog.push_front(Outgoing {
                                slot,
                                key: None,
                                payload,
                                headers: Some(provenance(&topic, -1, -1, &reason)),
                                dead: true,
                            });
                        }
                    };
                    move |(input, frontier), _output| {
                        let _watching = &watch;
                        let Some(producer) = producer.as_ref() else {
                            input.for_each(|_, _| {});
                            return;
                        };
                        // Each record encoded once, with its key and headers; a record
                        // that cannot be encoded fails the job (nothing after it is taken).
                        let failed = Cell::new(false);
                        let mut encode = |d: &D, event: u64| -> Option<Held> {
                            buf.clear();
                            if let Err(e) = encoder.encode(d, &mut buf) {
                                shared.fail(Error::Sink {
                                    sink: name.clone(),
                                    reason: format!("encoding failed: {e}"),
                                });
                                failed.set(true);
                                return None;
                            }
                            Some(Held {
                                key: key.as_ref().and_then(|f| f(d)),
                                payload: std::mem::take(&mut buf),
                                headers: headers.as_ref().map_or_else(Vec::new, |f| {
                                    f(d).into_iter().map(|(k, v)| (k.into(), v)).collect()
                                }),
                                event,
                            })
                        };
                        match exact.as_mut() {
                            Some(staging) => {
                                input.for_each(|cap, data| {
                                    let Some(&time) = cap.stamp().iter().next() else {
                                        return;
                                    };
                                    if failed.get() {
                                        return;
                                    }
                                    let records: Vec<Held> = data
                                        .drain(..)
                                        .map_while(|d| encode(&d, time.event))
                                        .collect();
                                    if !records.is_empty() {
                                        staging.stage(time, || cap.delayed(&time, 0), records);
                                    }
                                });
                                staging.checkpoint(frontier);
                                let complete_below =
                                    shared.checkpoints().map_or(0, |c| c.committable_below());
                                // Only records handed to the producer count as the sink's
                                // backlog: those waiting for their checkpoint are bounded by
                                // the interval, and pausing the sources would not let them go.
                                for (opaque, id, held) in staging.release(complete_below) {
                                    pending.held.set(pending.held.get() + 1);
                                    pending.backlog.push_back(Outgoing {
                                        slot: opaque,
                                        headers: Some(staging.headers(&held, id)),
                                        key: held.key,
                                        payload: held.payload,
                                        dead: false,
                                    });
                                }
                            }
                            None => input.for_each(|cap, data| {
                                let Some(&time) = cap.stamp().iter().next() else {
                                    return;
                                };
                                if data.is_empty() {
                                    return; // nothing to deliver, so nothing to hold
                                }
                                let slot = pending.next_slot;
                                pending.next_slot += 1;
                                pending
                                    .slots
                                    .insert(slot, (cap.delayed(&time, 0), data.len() as u64));
                                pending.held.set(pending.held.get() + data.len());
                                for held in data.drain(..).map_while(|d| encode(&d, time.event)) {
                                    pending.backlog.push_back(Outgoing {
                                        slot,
                                        headers: held.own_headers(),
                                        key: held.key,
                                        payload: held.payload,
                                        dead: false,
                                    });
                                }
                            }),
                        }
                        // Send in order; stop when the producer queue is full and retry later.
                        while let Some(out) = pending.backlog.front() {
                            let to = match (&dead_topic, out.dead) {
                                (Some(dead), true) => dead,
                                _ => &topic,
                            };
                            let opaque = if out.dead { out.slot | DEAD_BIT } else { out.slot };
                            let mut record =
                                BaseRecord::with_opaque_to(to, opaque).payload(&out.payload);
                            if let Some(k) = &out.key {
                                record = record.key(k);
                            }
                            if let Some(h) = &out.headers {
                                record = record.headers(h.clone());
                            }
                            match producer.send(record) {
                                Ok(()) => {
                                    pending.backlog.pop_front();
                                }
                                Err((
                                    KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                                    _,
                                )) => break,
                                Err((KafkaError::MessageProduction(code), _))
                                    if refused_for_good(code) && !out.dead =>
                                {
                                    let out = pending.backlog.pop_front().expect("front");
                                    let reason = KafkaError::MessageProduction(code).to_string();
                                    refuse(&mut pending, out.slot, out.payload, reason);
                                    if dead_topic.is_none() {
                                        break;
                                    }
                                }
                                Err((e, _)) => {
                                    let reason = match (&dead_topic, out.dead) {
                                        (Some(dead), true) => format!(
                                            "writing a refused record to the dead-letter \
                                             topic {dead}: {e}"
                                        ),
                                        _ => e.to_string(),
                                    };
                                    shared.fail(Error::Sink {
                                        sink: name.clone(),
                                        reason,
                                    });
                                    break;
                                }
                            }
                        }
                        // Release capabilities of fully delivered batches.
                        let now = crate::clock::now_ms();
                        for (opaque, report) in rx.try_iter() {
                            let (slot, dead) = (opaque & !DEAD_BIT, opaque & DEAD_BIT != 0);
                            match report {
                                Ok(at) => {
                                    // librdkafka acknowledges a retried batch the broker
                                    // answers as a duplicate sequence without an offset:
                                    // an earlier attempt was written. Said, so that a
                                    // broker that answers so for a batch it never wrote
                                    // shows in the log.
                                    if at.1 < 0 {
                                        unplaced += 1;
                                        if unplaced.is_power_of_two() {
                                            tracing::warn!(sink = %name, partition = at.0, records = unplaced,
                                                "records acknowledged without an offset (the broker answered a retry as a duplicate)");
                                        }
                                    }
                                    Metrics::add(&metrics.records_out, 1);
                                    sink_records.inc();
                                    let event = match exact.as_mut() {
                                        Some(staging) => {
                                            pending.held.set(pending.held.get().saturating_sub(1));
                                            staging.delivered(slot, (!dead).then_some(at))
                                        }
                                        None => pending.acknowledge(slot),
                                    };
                                    if let Some(event) = event {
                                        metrics.prom.observe_latency_at(now, event, 1);
                                    }
                                }
                                Err(Undelivered {
                                    reason,
                                    refused: Some(payload),
                                }) if dead_topic.is_some() && !dead => {
                                    refuse(&mut pending, slot, payload, reason)
                                }
                                Err(Undelivered { reason, .. }) => shared.fail(Error::Sink {
                                    sink: name.clone(),
                                    reason: match (&dead_topic, dead) {
                                        (Some(to), true) => format!(
                                            "delivery of a dead letter to {to} failed: {reason}"
                                        ),
                                        _ => format!("delivery failed: {reason}"),
                                    },
                                }),
                            }
                        }
                        if !pending.backlog.is_empty() {
                            activator.activate_after(Duration::from_millis(1));
                        }
                        if let Some(staging) = exact.as_mut() {
                            staging.finish(pending.backlog.is_empty());
                            if staging.waiting() {
                                // Polls for the manifest that lets its records go.
                                activator.activate_after(MANIFEST_POLL);
                            }
                        }
                    }
                },
            );
        register_acks(job, acks);
        if let Some(e) = exact_error {
            return Err(e);
        }
        match create_error {
            Some(e) => Err(Error::kafka(
                format!("creating the producer of {name}"),
                crate::config::redact_client_error(e),
            )),
            None => Ok(()),
        }
    }
}

/// The exactly-once state of sink `name` on this worker (see [`super::exactly_once`]):
/// restores its part, reads its topic back, and reports what it found.
fn start_exactly_once(
    scope: &timely::dataflow::Scope<'_, Time>,
    address: Vec<usize>,
    cap: Capability<Time>,
    job: &Job<'_>,
    name: &str,
    topic: &str,
) -> Result<Staging> {
    let ctx = freshet_operators::checkpoint::Checkpoints::current()
        .ok_or_else(|| Error::Config(format!("{name}: --exactly-once needs checkpoints")))?;
    let wake = scope.worker().sync_activator_for(address);
    let writer = format!("{}/{name}", job.kafka_config().group);
    let (staging, restored) =
        Staging::new(ctx, name, cap, wake, job.kafka_config(), topic, &writer)?;
    let metrics = &job.metrics().prom;
    metrics
        .exactly_once_skipped
        .with_label_values(&[name])
        .inc_by(restored.skipped as u64);
    if restored.anomalies > 0 {
        metrics
            .exactly_once_anomalies
            .with_label_values(&[name])
            .inc_by(restored.anomalies as u64);
        tracing::error!(
            sink = name,
            topic,
            records = restored.anomalies,
            "the topic holds records this sink wrote for checkpoints newer than the one \
             restored: the checkpoint store lost a manifest, or another run with this \
             group wrote them; they may be written again"
        );
    }
    if restored.pending + restored.skipped > 0 {
        tracing::info!(
            sink = name,
            worker = job.index(),
            to_write = restored.pending,
            already_written = restored.skipped,
            "exactly-once sink restored"
        );
    }
    Ok(staging)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_fits_the_producers_message_limit() {
        assert_eq!(dead_letter_room(1_000_000, "out", "why"), DEAD_PAYLOAD_KEEP);
        assert_eq!(
            dead_letter_room(2_000, "out", "why"),
            2_000 - DEAD_LETTER_OVERHEAD - 6
        );
        assert_eq!(dead_letter_room(100, "out", "why"), 0);
    }
}
