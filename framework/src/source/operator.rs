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
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::atomic::Ordering;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;

use super::by_time::ByTime;
use super::consumer::{partition_count, Reader, SourcePart};
use super::flow::{Decision, FlowControl};
use super::metrics::SourceMetrics;
use super::partition::{worker_watermark, WatermarkRule};
use super::{EventTimeFn, SourceError, SourceStreams};
use crate::clock::now_ms;
use crate::codec::{Decoder, RawMessage};
use crate::commit::CommitTracker;
use crate::config::{Fallback, OutOfRange, SourceConfig};
use crate::error::Error;
use crate::job::Job;
use crate::metrics::Metrics;
use crate::time::{Late, Time};

const PAYLOAD_KEEP: usize = 64 << 10;
const METADATA_REFRESH: Duration = Duration::from_secs(30);

/// A message that could not become an on-time record, with its coordinates and why.
fn dead_letter(raw: &RawMessage<'_>, reason: String) -> SourceError {
    SourceError {
        topic: raw.topic.to_string(),
        partition: raw.partition,
        offset: raw.offset,
        reason,
        key: raw.key.map(<[u8]>::to_vec),
        payload: raw.payload.map(|b| b[..b.len().min(PAYLOAD_KEEP)].to_vec()),
    }
}

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

/// The operator's outputs: the three of [`SourceStreams`] and the dead letters.
struct Outputs<D: 'static> {
    records: OutputOf<D>,
    errors: OutputOf<SourceError>,
    late: OutputOf<Late<D>>,
    dead: OutputOf<SourceError>,
}

/// What one activation read besides the staged records.
struct Batch<D> {
    polled: usize,
    bytes: u64,
    errors: Vec<SourceError>,
    late: Vec<Late<D>>,
    /// With a dead-letter topic: the raw messages of `errors` and `late`.
    dead: Vec<SourceError>,
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
    table: bool,
) -> (
    SourceStreams<'scope, C::Output>,
    timely::dataflow::StreamVec<'scope, Time, SourceError>,
)
where
    C::Output: Clone + 'static,
{
    let scope = job.scope();
    let mut builder = OperatorBuilder::new(format!("KafkaSource({})", reader.topic), scope);
    let info = builder.operator_info();
    let (rec_out, records) = builder.new_output();
    let (err_out, errors) = builder.new_output();
    let (late_out, late) = builder.new_output();
    let (dead_out, dead) = builder.new_output();
    let mut outputs = Outputs {
        records: OutputBuilder::from(rec_out),
        errors: OutputBuilder::from(err_out),
        late: OutputBuilder::from(late_out),
        dead: OutputBuilder::from(dead_out),
    };
    let activator = scope.activator_for(info.address);
    let shared = job.shared().clone();
    let mut source = SourceState::new(job, reader, decoder, event_time, config, table);
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
    let streams = SourceStreams {
        records,
        errors,
        late,
    };
    (streams, dead)
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
    shared: Arc<crate::job::Shared>,
    /// Client errors seen so far ([`super::consumer::ClientReports::errors`]).
    errors_seen: u64,
    /// Partitions whose committed start offset was checked against their end.
    range_checked: std::collections::HashSet<i32>,
    /// The job has a dead-letter topic: errors and late records go there too.
    dead_letters: bool,
    /// A table side (never committed): it never pauses for a lookup's backlog, which
    /// only its reading can drain.
    table: bool,
    /// Paused for this lookup's backlog, and since when.
    waiting_for: Option<(String, Instant)>,
    lookup_warn: Throttle,
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
        table: bool,
    ) -> Self {
        let metrics = job.metrics().clone();
        // Epochs follow the wall clock, and always come after a restored checkpoint's.
        let after_restore = reader.checkpoint.as_ref().map_or(0, |(c, _)| c.floor());
        let first_epoch = (now_ms() / config.epoch_interval.as_millis() as u64).max(after_restore);
        let restored_watermark = reader.restored_watermark;
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
                idle_advance: config.idle_advance,
            },
            first_epoch,
            now_time: Time::new(restored_watermark, first_epoch),
            staged: ByTime::new(config.tick_ms),
            paused: false,
            flow: FlowControl::new(config.max_epochs_ahead, stall),
            poll_warn: Throttle::default(),
            err_warn: Throttle::default(),
            last_refresh: Instant::now(),
            commits: job.commits().clone(),
            metrics,
            shared: job.shared().clone(),
            errors_seen: 0,
            range_checked: Default::default(),
            dead_letters: job.shared().dead_letter_topic().is_some(),
            table,
            waiting_for: None,
            lookup_warn: Throttle::default(),
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
        self.check_reading(now);
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

    /// Idle time counts only while a partition is actually read: paused partitions,
    /// client errors since the last activation and partitions librdkafka does not fetch
    /// from a live leader restart their idle clocks. Committed start offsets past a
    /// partition's end are out of range ([`OutOfRange`]).
    fn check_reading(&mut self, now: Instant) {
        let errors = self.reader.reports.errors.load(Ordering::Relaxed);
        let failing = errors != self.errors_seen;
        self.errors_seen = errors;
        let states = self
            .reader
            .reports
            .partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut out_of_range = Vec::new();
        for part in self.reader.partitions.iter_mut() {
            let state = states.get(&part.partition);
            if self.paused || failing || state.is_none_or(|s| !s.fetching) {
                part.interrupt(now);
            }
            let p = part.partition;
            if part.next_offset.is_some() || self.range_checked.contains(&p) {
                continue;
            }
            let (Some(&start), Some(state)) = (self.reader.committed_start.get(&p), state) else {
                continue;
            };
            if state.high < 0 {
                continue;
            }
            self.range_checked.insert(p);
            if start > state.high {
                out_of_range.push((p, start, state.high));
            }
        }
        for (p, start, high) in out_of_range {
            self.out_of_range(p, start, high);
        }
    }

    /// A committed start offset past the partition's end: fail, or restart at the
    /// fallback, as [`SourceConfig::on_out_of_range`] says.
    fn out_of_range(&mut self, p: i32, committed: i64, end: i64) {
        let topic = &self.topic;
        match self.config.on_out_of_range {
            OutOfRange::Error => self.shared.fail(Error::Runtime(format!(
                "committed offset {committed} of {topic}[{p}] is out of range (the partition \
                 ends at {end}); refusing to skip or re-read records. Reset the group's \
                 offsets, or restart with --on-out-of-range fallback to start such \
                 partitions at --fallback"
            ))),
            OutOfRange::Fallback => {
                let offset = match self.config.fallback {
                    Fallback::Earliest => Offset::Beginning,
                    Fallback::Latest => Offset::End,
                };
                tracing::warn!(%topic, partition = p, committed, end, ?offset,
                    "committed offset out of range: restarting the partition at --fallback");
                if let Err(e) = self
                    .reader
                    .consumer
                    .seek(topic, p, offset, Duration::from_secs(10))
                {
                    self.shared.fail(Error::kafka(
                        format!("seeking {topic}[{p}] to {offset:?} after an out-of-range offset"),
                        e,
                    ));
                }
            }
        }
    }

    /// Pauses the partitions while too far ahead of the last complete epoch.
    fn flow_control(&mut self, now: Instant) {
        let complete = self.commits.complete_below().max(self.first_epoch);
        // With checkpoints an epoch completes only at the next checkpoint epoch: up to
        // `every - 1` epochs of lag are the checkpoint's rhythm, not slow sinks.
        let rhythm = self
            .reader
            .checkpoint
            .as_ref()
            .map_or(0, |(c, _)| c.every() - 1);
        let ahead = self
            .now_time
            .epoch
            .saturating_sub(complete)
            .saturating_sub(rhythm);
        let backlog = self.commits.sink_backlog();
        let lookup = self.lookup_backlog(now);
        let backlogged = backlog > self.config.max_sink_backlog || lookup;
        let (worker, topic) = (self.worker, &self.topic);
        match self.flow.decide(ahead, complete, backlogged, now) {
            Decision::Pause => {
                if let Err(e) = self.reader.consumer.pause(&self.live_partitions()) {
                    tracing::warn!(%topic, error = %e, "pausing partitions failed");
                }
                self.paused = true;
                Metrics::add(&self.metrics.pauses, 1);
                tracing::debug!(worker, %topic, ahead, backlog, "paused: sinks are behind");
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

    /// Whether a lookup of the process holds more stream records waiting for its table
    /// than `max_lookup_backlog` (never for a table side: its reading drains them).
    /// Says so once when it starts holding the source, and every 10 s while it does.
    fn lookup_backlog(&mut self, now: Instant) -> bool {
        let over = match self.table {
            true => None,
            false => self.shared.backlogs().over(self.config.max_lookup_backlog),
        };
        let Some(b) = over else {
            self.waiting_for = None;
            return false;
        };
        let (worker, topic) = (self.worker, &self.topic);
        let (operator, waiting, table_watermark) = (b.operator(), b.waiting(), b.waits_for());
        match &self.waiting_for {
            Some((o, since)) if o == operator => {
                let held = now.duration_since(*since).as_secs();
                self.lookup_warn.warn(|_| {
                    tracing::warn!(worker, %topic, operator, waiting, table_watermark,
                        paused_s = held, "source still paused: the lookup's table is not \
                        catching up with its stream (its watermark must pass the records' \
                        event times)")
                });
            }
            _ => {
                tracing::info!(worker, %topic, operator, waiting, table_watermark,
                    "source paused while the lookup's stream records wait for its table");
                self.waiting_for = Some((operator.to_string(), now));
                // The first warning only after 10 s of it.
                self.lookup_warn = Throttle {
                    last: Some(now),
                    held: 0,
                };
            }
        }
        true
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
            dead: Vec::new(),
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
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => {
                    let topic = &self.topic;
                    self.shared.fail(Error::Runtime(format!(
                        "a committed offset of {topic} is out of range (before the earliest \
                         offset still on the broker, or past the end) and --on-out-of-range is \
                         error; reset the group's offsets, or restart with \
                         --on-out-of-range fallback"
                    )));
                    break;
                }
                Some(Err(e)) => {
                    for part in self.reader.partitions.iter_mut() {
                        part.interrupt(now);
                    }
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
        if self.reader.partitions[i].next_offset.is_none() {
            self.first_read(p, msg.offset());
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
                    if self.dead_letters {
                        let reason =
                            format!("late: event time {event} is behind the watermark {watermark}");
                        batch.dead.push(dead_letter(&raw, reason));
                    }
                    let record = value;
                    batch.late.push(Late {
                        event_time: event,
                        watermark,
                        record,
                    });
                }
            }
            Err(reason) => {
                let error = self.reject(&raw, reason);
                if self.dead_letters {
                    batch.dead.push(error.clone());
                }
                batch.errors.push(error)
            }
        }
    }

    /// The first message read from partition `p` this run: if it is not at the committed
    /// offset the partition started at, say so (an out-of-range offset librdkafka reset
    /// by `--on-out-of-range fallback`, or records deleted by retention or compaction).
    fn first_read(&self, p: i32, offset: i64) {
        if let Some(&committed) = self.reader.committed_start.get(&p) {
            if offset != committed {
                let topic = &self.topic;
                tracing::warn!(%topic, partition = p, committed, first_read = offset,
                    "partition did not resume at its committed offset: the offset was out \
                     of range and reset to --fallback, or retention or compaction removed \
                     the records in between");
            }
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
        dead_letter(raw, reason)
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
        if !batch.dead.is_empty() {
            Metrics::add(&self.metrics.dead_letters, batch.dead.len() as u64);
            let mut out = outputs.dead.activate();
            out.session(&held[3]).give_iterator(batch.dead.into_iter());
        }
    }

    /// Worker 0 warns about partitions added while running: this run does not read them.
    fn watch_new_partitions(&mut self, now: Instant) {
        if self.worker != 0 || now.duration_since(self.last_refresh) < METADATA_REFRESH {
            return;
        }
        self.last_refresh = now;
        let n = partition_count(&self.reader.consumer, &self.topic, "", &Default::default());
        // The refresh blocked the source: its quiet time was not reading time.
        let after = Instant::now();
        for part in self.reader.partitions.iter_mut() {
            part.interrupt(after);
        }
        let Ok(n) = n else {
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
            self.checkpoint(next.epoch);
        }
        if next != self.now_time {
            self.now_time = next;
            for cap in held.iter_mut() {
                cap.downgrade(&next);
            }
        }
    }

    /// Writes the source's part of the newest checkpoint epoch from the current epoch
    /// up to (not including) `next`, if there is one: the positions now are those at
    /// its end. Written before the capability leaves the epoch, so the checkpoint
    /// cannot complete without it.
    fn checkpoint(&self, next: u64) {
        let Some((ctx, name)) = &self.reader.checkpoint else {
            return;
        };
        let Some(epoch) = ctx
            .at_or_before(next - 1)
            .filter(|&c| c >= self.now_time.epoch)
        else {
            return;
        };
        let part = SourcePart {
            partitions: self
                .reader
                .partitions
                .iter()
                .filter_map(|p| p.next_offset.map(|o| (p.partition, o, p.max_event())))
                .collect(),
            watermark: self.now_time.event,
        };
        ctx.write(name, epoch, &part);
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
