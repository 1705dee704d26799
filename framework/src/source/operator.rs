//! The source operator: polls Kafka, stamps records with `(event time, epoch)`.
//!
//! Each activation runs a few steps in order: flow control (pause while the sinks are
//! too far behind), reading a batch (decode and stamp each message, or note the end of
//! its partition), emitting it, and advancing the watermark and the epoch, which ends
//! the epoch's offsets for the commit.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::TopicPartitionList;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;

use super::by_time::ByTime;
use super::consumer::{partition_count, Reader};
use super::flow::{Decision, FlowControl};
use super::metrics::SourceMetrics;
use super::partition::{worker_watermark, WatermarkRule};
use super::{EventTimeFn, SourceError, SourceStreams};
use crate::clock::now_ms;
use crate::codec::{Decoder, RawMessage};
use crate::commit::CommitTracker;
use crate::config::SourceConfig;
use crate::job::Job;
use crate::metrics::Metrics;
use crate::time::{Late, Time};

const PAYLOAD_KEEP: usize = 64 << 10;
const METADATA_REFRESH: Duration = Duration::from_secs(30);

/// Rate-limits a repeated warning to one line per period, counting what it held back.
#[derive(Default)]
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

type OutputOf<D> = OutputBuilder<Time, CapacityContainerBuilder<Vec<D>>>;

/// The operator's three outputs.
struct Outputs<D: 'static> {
    records: OutputOf<D>,
    errors: OutputOf<SourceError>,
    late: OutputOf<Late<D>>,
}

/// What one activation read besides the staged records.
struct Batch<D> {
    polled: usize,
    bytes: u64,
    errors: Vec<SourceError>,
    late: Vec<Late<D>>,
}

/// How an activation ended.
enum Activation {
    /// A full batch was read: more is probably waiting.
    Busy,
    /// Less than a batch was read.
    Idle,
    /// Bounded mode: every partition was read to its end.
    Finished,
}

pub(crate) fn render<'scope, C: Decoder>(
    job: &Job<'scope>,
    reader: Reader,
    decoder: C,
    event_time: Option<EventTimeFn<C::Output>>,
    config: SourceConfig,
) -> SourceStreams<'scope, C::Output>
where
    C::Output: Clone + 'static,
{
    let scope = job.scope();
    let mut builder = OperatorBuilder::new(format!("KafkaSource({})", reader.topic), scope);
    let info = builder.operator_info();
    let (rec_out, records) = builder.new_output();
    let (err_out, errors) = builder.new_output();
    let (late_out, late) = builder.new_output();
    let mut outputs = Outputs {
        records: OutputBuilder::from(rec_out),
        errors: OutputBuilder::from(err_out),
        late: OutputBuilder::from(late_out),
    };
    let activator = scope.activator_for(info.address);
    let shared = job.shared().clone();
    let mut source = SourceState::new(job, reader, decoder, event_time, config);
    builder.build(move |caps| {
        let mut caps: Option<Vec<Capability<Time>>> = Some(caps);
        move |_frontiers| {
            let Some(held) = caps.as_mut() else { return };
            if shared.stopping() {
                // Stop reading; keep capabilities so open windows do not flush partial results.
                return;
            }
            match source.activate(held, &mut outputs) {
                Activation::Busy => activator.activate(),
                Activation::Idle => activator.activate_after(Duration::from_millis(1)),
                Activation::Finished => caps = None,
            }
        }
    });
    SourceStreams {
        records,
        errors,
        late,
    }
}

/// Everything the operator keeps between activations.
struct SourceState<C: Decoder> {
    reader: Reader,
    topic: Rc<str>,
    decoder: C,
    event_time: Option<EventTimeFn<C::Output>>,
    config: SourceConfig,
    worker: usize,
    rule: WatermarkRule,
    first_epoch: u64,
    /// The operator's time: (watermark, epoch).
    now_time: Time,
    staged: ByTime<C::Output>,
    paused: bool,
    flow: FlowControl,
    poll_warn: Throttle,
    err_warn: Throttle,
    last_refresh: Instant,
    commits: CommitTracker,
    metrics: Arc<Metrics>,
    source_metrics: SourceMetrics,
}

impl<C: Decoder> SourceState<C>
where
    C::Output: Clone + 'static,
{
    fn new(
        job: &Job<'_>,
        reader: Reader,
        decoder: C,
        event_time: Option<EventTimeFn<C::Output>>,
        config: SourceConfig,
    ) -> Self {
        let metrics = job.metrics().clone();
        let first_epoch = now_ms() / config.epoch_interval.as_millis() as u64;
        let stall = (config.epoch_interval * 10).max(Duration::from_secs(2));
        SourceState {
            topic: reader.topic.clone().into(),
            source_metrics: SourceMetrics::new(&metrics, &reader.topic),
            reader,
            decoder,
            event_time,
            worker: job.scope().index(),
            rule: WatermarkRule {
                out_of_orderness: config.out_of_orderness.as_millis() as u64,
                idle: config.idle_timeout,
            },
            first_epoch,
            now_time: Time::new(0, first_epoch),
            staged: ByTime::new(config.tick_ms),
            paused: false,
            flow: FlowControl::new(config.max_epochs_ahead, stall),
            poll_warn: Throttle::default(),
            err_warn: Throttle::default(),
            last_refresh: Instant::now(),
            commits: job.commits().clone(),
            metrics,
            config,
        }
    }

    /// One activation: flow control, read and emit a batch, then advance time.
    fn activate(
        &mut self,
        held: &mut [Capability<Time>],
        outputs: &mut Outputs<C::Output>,
    ) -> Activation {
        let now = Instant::now();
        let wall = now_ms();
        self.flow_control(now);
        let batch = self.read_batch(now, wall);
        let full = batch.polled >= self.config.batch_size;
        self.emit(held, outputs, batch);
        self.watch_new_partitions(now);
        let finished = self.config.bounded && self.reader.partitions.iter().all(|p| p.released);
        let parts = &self.reader.partitions;
        let out_of_orderness = self.rule.out_of_orderness;
        self.source_metrics
            .report(&self.metrics, parts, out_of_orderness, now, wall, finished);
        if finished {
            // Every partition read to its end: the last epoch's offsets, then done.
            self.end_epoch();
            return Activation::Finished;
        }
        self.advance_time(held, now, wall);
        if full {
            Activation::Busy
        } else {
            Activation::Idle
        }
    }

    /// Pauses the partitions while too far ahead of the last complete epoch.
    fn flow_control(&mut self, now: Instant) {
        let complete = self.commits.complete_below().max(self.first_epoch);
        let ahead = self.now_time.epoch.saturating_sub(complete);
        let (worker, topic) = (self.worker, &self.topic);
        match self.flow.decide(ahead, complete, now) {
            Decision::Pause => {
                if let Err(e) = self.reader.consumer.pause(&self.live_partitions()) {
                    tracing::warn!(%topic, error = %e, "pausing partitions failed");
                }
                self.paused = true;
                Metrics::add(&self.metrics.pauses, 1);
                tracing::debug!(worker, %topic, ahead, "paused: sinks are behind");
            }
            Decision::Resume => {
                if let Err(e) = self.reader.consumer.resume(&self.live_partitions()) {
                    tracing::warn!(%topic, error = %e, "resuming partitions failed");
                }
                self.paused = false;
            }
            Decision::Keep => {}
        }
    }

    /// Polls up to a batch of messages (none while paused).
    fn read_batch(&mut self, now: Instant, wall: u64) -> Batch<C::Output> {
        let watermark = self.now_time.event;
        self.staged.begin(watermark);
        let mut batch = Batch {
            polled: 0,
            bytes: 0,
            errors: Vec::new(),
            late: Vec::new(),
        };
        let consumer = self.reader.consumer.clone();
        while !self.paused && batch.polled < self.config.batch_size {
            let msg = match consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(m)) => m,
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    self.end_of_partition(p, now);
                    continue;
                }
                Some(Err(e)) => {
                    let (worker, topic) = (self.worker, &self.topic);
                    self.poll_warn.warn(|held| {
                        tracing::warn!(worker, %topic, error = %e, held_back = held,
                            "kafka consumer error")
                    });
                    break;
                }
            };
            batch.polled += 1;
            self.take(&msg, watermark, wall, &mut batch);
        }
        batch
    }

    /// A partition is at its end: it may turn idle, and in bounded mode it is released.
    fn end_of_partition(&mut self, p: i32, now: Instant) {
        let Some(part) = self.reader.partitions.iter_mut().find(|s| s.partition == p) else {
            return;
        };
        part.reached_end(now);
        if !self.config.bounded || part.released {
            return;
        }
        part.released = true;
        let (worker, topic) = (self.worker, &self.topic);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, p);
        if let Err(e) = self.reader.consumer.pause(&tpl) {
            tracing::warn!(%topic, partition = p, error = %e,
                "pausing a released partition failed");
        }
        tracing::info!(worker, %topic, partition = p, next = ?part.next_offset,
            "bounded: partition read to its end");
    }

    /// Decodes and stamps one message: staged at its event time, late, or an error.
    fn take(
        &mut self,
        msg: &BorrowedMessage<'_>,
        watermark: u64,
        wall: u64,
        batch: &mut Batch<C::Output>,
    ) {
        let p = msg.partition();
        let Some(i) = self.reader.partitions.iter().position(|s| s.partition == p) else {
            return;
        };
        if self.reader.partitions[i].released {
            return; // read after its end in bounded mode: left for the next run
        }
        self.reader.partitions[i].read(msg.offset());
        let topic = self.topic.clone();
        let raw = RawMessage {
            topic: &topic,
            partition: p,
            offset: msg.offset(),
            key: msg.key(),
            payload: msg.payload(),
            timestamp: msg.timestamp().to_millis(),
        };
        batch.bytes += raw.payload.map_or(0, |b| b.len() as u64);
        match self.stamp(&raw, wall) {
            Ok((event, value)) => {
                self.reader.partitions[i].observe(event);
                if event >= watermark {
                    self.staged.push(event, value);
                } else {
                    let record = value;
                    batch.late.push(Late {
                        event_time: event,
                        watermark,
                        record,
                    });
                }
            }
            Err(reason) => batch.errors.push(self.reject(&raw, reason)),
        }
    }

    /// The record a message holds and its event time (rounded to the tick), or why not.
    fn stamp(&self, raw: &RawMessage<'_>, wall: u64) -> Result<(u64, C::Output), String> {
        let limit = self.config.max_record_bytes;
        if let Some(len) = raw.payload.map(<[u8]>::len).filter(|&len| len > limit) {
            return Err(format!(
                "payload of {len} bytes exceeds the limit of {limit} bytes"
            ));
        }
        let value = self.decoder.decode(raw)?;
        let event = match &self.event_time {
            Some(f) => f(&value).ok_or_else(|| "event time function gave no time".to_string())?,
            None => match raw.timestamp {
                Some(ts) if ts >= 0 => ts as u64,
                Some(ts) => return Err(format!("negative message timestamp {ts}")),
                None => return Err("message has no timestamp".to_string()),
            },
        };
        let max_future = self.config.max_future.as_millis() as u64;
        if event > wall.saturating_add(max_future) {
            return Err(format!(
                "event time {event} is more than {max_future} ms past the wall clock {wall}"
            ));
        }
        Ok((self.staged.round(event), value))
    }

    /// The error-stream entry of a message that could not become a record.
    fn reject(&mut self, raw: &RawMessage<'_>, reason: String) -> SourceError {
        let (worker, topic) = (self.worker, &self.topic);
        let (partition, offset) = (raw.partition, raw.offset);
        self.err_warn.warn(|held| {
            tracing::warn!(worker, %topic, partition, offset, %reason, held_back = held,
                "malformed message sent to the error stream")
        });
        SourceError {
            topic: topic.to_string(),
            partition,
            offset,
            reason,
            key: raw.key.map(<[u8]>::to_vec),
            payload: raw.payload.map(|b| b[..b.len().min(PAYLOAD_KEEP)].to_vec()),
        }
    }

    /// Emits the batch: one session per distinct event time, errors and late records at
    /// the operator's current time.
    fn emit(
        &mut self,
        held: &[Capability<Time>],
        outputs: &mut Outputs<C::Output>,
        batch: Batch<C::Output>,
    ) {
        let (records, errors, late) = (self.staged.len(), batch.errors.len(), batch.late.len());
        Metrics::add(&self.metrics.records_in, records as u64);
        Metrics::add(&self.metrics.bytes_in, batch.bytes);
        self.source_metrics
            .emitted(records as u64, errors as u64, late as u64);
        if records > 0 {
            let epoch = self.now_time.epoch;
            let mut out = outputs.records.activate();
            self.staged.drain(|t, records| {
                let cap = held[0].delayed(&Time::new(t, epoch));
                out.session(&cap).give_container(records);
            });
        }
        if errors > 0 {
            Metrics::add(&self.metrics.errors, errors as u64);
            let mut out = outputs.errors.activate();
            out.session(&held[1])
                .give_iterator(batch.errors.into_iter());
        }
        if late > 0 {
            Metrics::add(&self.metrics.late, late as u64);
            let mut out = outputs.late.activate();
            out.session(&held[2]).give_iterator(batch.late.into_iter());
        }
    }

    /// Worker 0 warns about partitions added while running: this run does not read them.
    fn watch_new_partitions(&mut self, now: Instant) {
        if self.worker != 0 || now.duration_since(self.last_refresh) < METADATA_REFRESH {
            return;
        }
        self.last_refresh = now;
        let Ok(n) = partition_count(&self.reader.consumer, &self.topic, "", &Default::default())
        else {
            return;
        };
        let was = self.reader.known_partitions;
        if n > was {
            let topic = &self.topic;
            tracing::warn!(%topic, was, now = n,
                "topic has new partitions; they are read from the next start, at the \
                 offset --from and --fallback give (with --from committed and the \
                 default --fallback earliest, their earliest offset)");
            self.reader.known_partitions = n;
        }
    }

    /// Moves the watermark (least partition watermark, never backwards) and the epoch
    /// (wall clock over the epoch interval); a new epoch ends the old one's offsets.
    fn advance_time(&mut self, held: &mut [Capability<Time>], now: Instant, wall: u64) {
        let interval = self.config.epoch_interval.as_millis() as u64;
        let watermark = worker_watermark(&self.reader.partitions, self.rule, now, wall);
        let next = Time::new(
            self.now_time.event.max(watermark),
            self.now_time.epoch.max(wall / interval),
        );
        if next.epoch > self.now_time.epoch {
            self.end_epoch();
        }
        if next != self.now_time {
            self.now_time = next;
            for cap in held.iter_mut() {
                cap.downgrade(&next);
            }
        }
    }

    /// Hands the positions reached in the current epoch to the committer.
    fn end_epoch(&self) {
        let mut committer = self.reader.committer.borrow_mut();
        committer.snapshot(self.now_time.epoch, &self.reader.partitions);
    }

    /// The partitions still read (not released in bounded mode).
    fn live_partitions(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for p in self.reader.partitions.iter().filter(|p| !p.released) {
            tpl.add_partition(&self.topic, p.partition);
        }
        tpl
    }
}
