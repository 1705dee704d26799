//! A sink that produces records to a Kafka topic and acknowledges on delivery.
//!
//! One producer per worker. Each incoming batch keeps a capability at its time on the
//! acknowledgement stream until librdkafka reports every record of it delivered; a
//! record that cannot be delivered fails the job (nothing after it is committed).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;
use timely::scheduling::SyncActivator;

use super::register_acks;
use crate::codec::Encoder;
use crate::config::ProducerSettings;
use crate::error::{Error, Result};
use crate::job::Job;
use crate::metrics::Metrics;
use crate::time::Time;

type KeyFn<D> = Arc<dyn Fn(&D) -> Option<Vec<u8>> + Send + Sync>;

/// Where and how a Kafka sink writes.
pub struct KafkaSink<D, E> {
    topic: String,
    encoder: E,
    key: Option<KeyFn<D>>,
    settings: ProducerSettings,
}

impl<D, E: Encoder<D>> KafkaSink<D, E> {
    /// A sink writing to `topic`, encoding values with `encoder`, no key.
    pub fn new(topic: impl Into<String>, encoder: E) -> Self {
        KafkaSink {
            topic: topic.into(),
            encoder,
            key: None,
            settings: ProducerSettings::default(),
        }
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

/// Delivery reports go to the sink operator through a channel, and wake it.
struct DeliveryContext {
    reports: Sender<(usize, Result<(), String>)>,
    activator: SyncActivator,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, slot: usize) {
        let report = result.as_ref().map(|_| ()).map_err(|(e, _)| e.to_string());
        let _ = self.reports.send((slot, report));
        let _ = self.activator.activate();
    }
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
    backlog: VecDeque<(usize, Option<Vec<u8>>, Vec<u8>)>,
}

impl<'scope, D: 'static> WriteKafka<D> for StreamVec<'scope, Time, D> {
    fn write_kafka<E: Encoder<D>>(self, job: &Job<'_>, sink: KafkaSink<D, E>) -> Result<()> {
        let name = format!("KafkaSink({})", sink.topic);
        let scope = self.scope();
        let shared = job.shared().clone();
        let metrics = job.metrics().clone();
        let config = job.kafka_config().producer_config(&sink.settings);
        let mut create_error = None;
        let acks = self
            .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
                Pipeline,
                &name,
                |_cap, info| {
                    let (tx, rx): (_, Receiver<(usize, Result<(), String>)>) =
                        crossbeam_channel::unbounded();
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
                    let mut pending = Pending {
                        slots: HashMap::new(),
                        next_slot: 0,
                        backlog: VecDeque::new(),
                    };
                    let mut buf = Vec::new();
                    let name = name.clone();
                    let sink_records = super::records_counter(&metrics, &name);
                    move |(input, _frontier), _output| {
                        let Some(producer) = producer.as_ref() else {
                            input.for_each(|_, _| {});
                            return;
                        };
                        input.for_each(|cap, data| {
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
                            for d in data.drain(..) {
                                buf.clear();
                                if let Err(e) = encoder.encode(&d, &mut buf) {
                                    shared.fail(Error::Sink {
                                        sink: name.clone(),
                                        reason: format!("encoding failed: {e}"),
                                    });
                                    return;
                                }
                                let k = key.as_ref().and_then(|f| f(&d));
                                pending
                                    .backlog
                                    .push_back((slot, k, std::mem::take(&mut buf)));
                            }
                        });
                        // Send in order; stop when the producer queue is full and retry later.
                        while let Some((slot, k, payload)) = pending.backlog.front() {
                            let mut record =
                                BaseRecord::with_opaque_to(&topic, *slot).payload(payload);
                            if let Some(k) = k {
                                record = record.key(k);
                            }
                            match producer.send(record) {
                                Ok(()) => {
                                    pending.backlog.pop_front();
                                }
                                Err((
                                    KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                                    _,
                                )) => break,
                                Err((e, _)) => {
                                    shared.fail(Error::Sink {
                                        sink: name.clone(),
                                        reason: e.to_string(),
                                    });
                                    break;
                                }
                            }
                        }
                        // Release capabilities of fully delivered batches.
                        let now = crate::clock::now_ms();
                        for (slot, report) in rx.try_iter() {
                            match report {
                                Ok(()) => {
                                    Metrics::add(&metrics.records_out, 1);
                                    sink_records.inc();
                                    if let Some(entry) = pending.slots.get_mut(&slot) {
                                        metrics.prom.observe_latency_at(
                                            now,
                                            entry.0.time().event,
                                            1,
                                        );
                                        entry.1 -= 1;
                                        if entry.1 == 0 {
                                            pending.slots.remove(&slot);
                                        }
                                    }
                                }
                                Err(reason) => shared.fail(Error::Sink {
                                    sink: name.clone(),
                                    reason: format!("delivery failed: {reason}"),
                                }),
                            }
                        }
                        if !pending.backlog.is_empty() {
                            activator.activate_after(Duration::from_millis(1));
                        }
                    }
                },
            );
        register_acks(job, acks);
        match create_error {
            Some(e) => Err(Error::kafka(
                format!("creating the producer of {name}"),
                crate::config::redact_client_error(e),
            )),
            None => Ok(()),
        }
    }
}
