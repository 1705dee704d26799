//! The source operator: polls Kafka, stamps records with `(event time, epoch)`.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;

use super::by_time::ByTime;
use super::consumer::{partition_count, Reader};
use super::flow::{Decision, FlowControl};
use super::partition::{worker_watermark, WatermarkRule};
use super::{EventTimeFn, SourceError, SourceStreams};
use crate::clock::now_ms;
use crate::codec::{Decoder, RawMessage};
use crate::config::SourceConfig;
use crate::job::Job;
use crate::metrics::Metrics;
use crate::time::{Late, Time};

const PAYLOAD_KEEP: usize = 64 << 10;
const METADATA_REFRESH: Duration = Duration::from_secs(30);

/// Rate-limits a repeated warning to one line per period, counting what it held back.
struct Throttle {
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    fn warn(&mut self, f: impl FnOnce(u64)) {
        let now = Instant::now();
        if self
            .last
            .is_none_or(|l| now.duration_since(l) >= Duration::from_secs(10))
        {
            f(self.held);
            self.last = Some(now);
            self.held = 0;
        } else {
            self.held += 1;
        }
    }
}

pub(crate) fn render<'scope, C: Decoder>(
    job: &Job<'scope>,
    mut reader: Reader,
    decoder: C,
    event_time: Option<EventTimeFn<C::Output>>,
    config: SourceConfig,
) -> SourceStreams<'scope, C::Output>
where
    C::Output: Clone + 'static,
{
    let scope = job.scope();
    let name = format!("KafkaSource({})", reader.topic);
    let mut builder = OperatorBuilder::new(name.clone(), scope);
    let info = builder.operator_info();
    let (rec_out, records) = builder.new_output();
    let (err_out, errors) = builder.new_output();
    let (late_out, late) = builder.new_output();
    let mut rec_out: OutputBuilder<Time, CapacityContainerBuilder<Vec<C::Output>>> =
        OutputBuilder::from(rec_out);
    let mut err_out: OutputBuilder<Time, CapacityContainerBuilder<Vec<SourceError>>> =
        OutputBuilder::from(err_out);
    let mut late_out: OutputBuilder<Time, CapacityContainerBuilder<Vec<Late<C::Output>>>> =
        OutputBuilder::from(late_out);

    let activator = scope.activator_for(info.address);
    let commits = job.commits().clone();
    let metrics: Arc<Metrics> = job.metrics().clone();
    let shared = job.shared().clone();
    let worker = scope.index();
    let rule = WatermarkRule {
        out_of_orderness: config.out_of_orderness.as_millis() as u64,
        idle: config.idle_timeout,
    };
    let interval = config.epoch_interval.as_millis() as u64;
    let tick = config.tick_ms;
    let max_future = config.max_future.as_millis() as u64;
    let first_epoch = now_ms() / interval;
    let topic: Rc<str> = reader.topic.clone().into();
    let mut hooks = super::metrics::SourceMetrics::new(&metrics, &reader.topic);

    builder.build(move |caps| {
        let mut caps: Option<Vec<Capability<Time>>> = Some(caps);
        let mut now_time = Time::new(0, first_epoch);
        let mut staged: ByTime<C::Output> = ByTime::new(tick);
        let mut paused = false;
        let stall = (config.epoch_interval * 10).max(Duration::from_secs(2));
        let mut flow = FlowControl::new(config.max_epochs_ahead, stall);
        let mut poll_warn = Throttle { last: None, held: 0 };
        let mut err_warn = Throttle { last: None, held: 0 };
        let mut last_refresh = Instant::now();
        let consumer = reader.consumer.clone();
        move |_frontiers| {
            let Some(held) = caps.as_mut() else { return };
            if shared.stopping() {
                // Stop reading; keep capabilities so open windows do not flush partial results.
                return;
            }
            let now = Instant::now();
            let wall = now_ms();

            // Flow control: pause while too far ahead of the last complete epoch.
            let complete = commits.complete_below().max(first_epoch);
            let ahead = now_time.epoch.saturating_sub(complete);
            match flow.decide(ahead, complete, now) {
                Decision::Pause => {
                    if let Err(e) = consumer.pause(&live_partitions(&topic, &reader)) {
                        tracing::warn!(%topic, error = %e, "pausing partitions failed");
                    }
                    paused = true;
                    Metrics::add(&metrics.pauses, 1);
                    tracing::debug!(worker, %topic, ahead, "paused: sinks are behind");
                }
                Decision::Resume => {
                    if let Err(e) = consumer.resume(&live_partitions(&topic, &reader)) {
                        tracing::warn!(%topic, error = %e, "resuming partitions failed");
                    }
                    paused = false;
                }
                Decision::Keep => {}
            }

            // Read a batch.
            let watermark = now_time.event;
            staged.begin(watermark);
            let mut polled = 0;
            let mut errors: Vec<SourceError> = Vec::new();
            let mut lates: Vec<Late<C::Output>> = Vec::new();
            let mut bytes = 0u64;
            while !paused && polled < config.batch_size {
                let msg = match consumer.poll(Duration::ZERO) {
                    None => break,
                    Some(Ok(m)) => m,
                    Some(Err(KafkaError::PartitionEOF(p))) => {
                        if let Some(part) = reader.partitions.iter_mut().find(|s| s.partition == p) {
                            part.reached_end(now);
                            if config.bounded && !part.released {
                                part.released = true;
                                let mut tpl = TopicPartitionList::new();
                                tpl.add_partition(&topic, p);
                                if let Err(e) = consumer.pause(&tpl) {
                                    tracing::warn!(%topic, partition = p, error = %e, "pausing a released partition failed");
                                }
                                tracing::info!(worker, %topic, partition = p, next = ?part.next_offset, "bounded: partition read to its end");
                            }
                        }
                        continue;
                    }
                    Some(Err(e)) => {
                        poll_warn.warn(|held| tracing::warn!(worker, %topic, error = %e, held_back = held, "kafka consumer error"));
                        break;
                    }
                };
                polled += 1;
                let p = msg.partition();
                let Some(part) = reader.partitions.iter_mut().find(|s| s.partition == p) else { continue };
                if part.released {
                    continue; // read after its end in bounded mode: left for the next run
                }
                part.read(msg.offset());
                let raw = RawMessage {
                    topic: &topic,
                    partition: p,
                    offset: msg.offset(),
                    key: msg.key(),
                    payload: msg.payload(),
                    timestamp: msg.timestamp().to_millis(),
                };
                bytes += raw.payload.map_or(0, |b| b.len() as u64);
                let decoded = if raw.payload.is_some_and(|b| b.len() > config.max_record_bytes) {
                    Err(format!("payload of {} bytes exceeds the limit of {} bytes", raw.payload.map_or(0, <[u8]>::len), config.max_record_bytes))
                } else {
                    decoder.decode(&raw)
                };
                let stamped = decoded.and_then(|value| {
                    let event = match &event_time {
                        Some(f) => f(&value).ok_or_else(|| "event time function gave no time".to_string())?,
                        None => match raw.timestamp {
                            Some(ts) if ts >= 0 => ts as u64,
                            Some(ts) => return Err(format!("negative message timestamp {ts}")),
                            None => return Err("message has no timestamp".to_string()),
                        },
                    };
                    if event > wall.saturating_add(max_future) {
                        return Err(format!("event time {event} is more than {max_future} ms past the wall clock {wall}"));
                    }
                    Ok((staged.round(event), value))
                });
                match stamped {
                    Ok((event, value)) => {
                        part.observe(event);
                        if event >= watermark {
                            staged.push(event, value);
                        } else {
                            lates.push(Late { event_time: event, watermark, record: value });
                        }
                    }
                    Err(reason) => {
                        err_warn.warn(|held| tracing::warn!(worker, %topic, partition = p, offset = raw.offset, %reason, held_back = held, "malformed message sent to the error stream"));
                        errors.push(SourceError {
                            topic: topic.to_string(),
                            partition: p,
                            offset: raw.offset,
                            reason,
                            key: raw.key.map(<[u8]>::to_vec),
                            payload: raw.payload.map(|b| b[..b.len().min(PAYLOAD_KEEP)].to_vec()),
                        });
                    }
                }
            }

            // Emit: one session per distinct event time.
            Metrics::add(&metrics.records_in, staged.len() as u64);
            Metrics::add(&metrics.bytes_in, bytes);
            hooks.emitted(staged.len() as u64, errors.len() as u64, lates.len() as u64);
            if !staged.is_empty() {
                let mut out = rec_out.activate();
                staged.drain(|t, records| {
                    let cap = held[0].delayed(&Time::new(t, now_time.epoch));
                    out.session(&cap).give_container(records);
                });
            }
            if !errors.is_empty() {
                Metrics::add(&metrics.errors, errors.len() as u64);
                err_out.activate().session(&held[1]).give_iterator(errors.into_iter());
            }
            if !lates.is_empty() {
                Metrics::add(&metrics.late, lates.len() as u64);
                late_out.activate().session(&held[2]).give_iterator(lates.into_iter());
            }

            // Report partitions added while running (they are read from the next start).
            if worker == 0 && now.duration_since(last_refresh) >= METADATA_REFRESH {
                last_refresh = now;
                if let Ok(n) = partition_count(&consumer, &topic, "") {
                    if n > reader.known_partitions {
                        tracing::warn!(%topic, was = reader.known_partitions, now = n, "topic has new partitions; they are read from the earliest offset at the next start");
                        reader.known_partitions = n;
                    }
                }
            }

            let finished = config.bounded && reader.partitions.iter().all(|p| p.released);
            hooks.report(&metrics, &reader.partitions, rule.out_of_orderness, now, wall, finished);
            // Bounded mode: every partition read to its end — commit-snapshot and finish.
            if config.bounded && reader.partitions.iter().all(|p| p.released) {
                reader.committer.borrow_mut().snapshot(now_time.epoch, &reader.partitions);
                caps = None;
                return;
            }

            // Advance watermark and epoch.
            let next = Time::new(
                now_time.event.max(worker_watermark(&reader.partitions, rule, now, wall)),
                now_time.epoch.max(wall / interval),
            );
            if next.epoch > now_time.epoch {
                reader.committer.borrow_mut().snapshot(now_time.epoch, &reader.partitions);
            }
            if next != now_time {
                now_time = next;
                for cap in held.iter_mut() {
                    cap.downgrade(&now_time);
                }
            }
            if polled >= config.batch_size {
                activator.activate();
            } else {
                activator.activate_after(Duration::from_millis(1));
            }
        }
    });
    SourceStreams {
        records,
        errors,
        late,
    }
}

fn live_partitions(topic: &str, reader: &Reader) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for p in reader.partitions.iter().filter(|p| !p.released) {
        tpl.add_partition(topic, p.partition);
    }
    tpl
}
