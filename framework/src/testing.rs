//! Testing a job's dataflow without a broker.
//!
//! A [`Harness`] runs one timely worker in the calling thread. Its build function gets a
//! [`TestJob`]: a real [`Job`] (so sinks such as [`crate::Collect`] and every operator
//! work unchanged) plus [`TestJob::source`], which stands in for a
//! [`crate::KafkaSource`] and returns the same [`SourceStreams`]. A test then
//!
//! * feeds records with explicit partitions, offsets and event times
//!   ([`TestSource::send`]) — a record behind the current watermark goes to the late
//!   stream, exactly as the Kafka source does;
//! * moves time: [`Harness::advance_watermark`] (event time) and
//!   [`Harness::next_epoch`] (the processing-time round offsets are committed at);
//! * asserts on outputs ([`Output`]) and on what would be committed
//!   ([`Harness::committed`]): per source partition, the offset after the last record
//!   read in the newest *complete* epoch — an epoch every sink has acknowledged all
//!   output of, per the commit protocol in `docs/architecture.md`.
//!
//! ```
//! use freshet::testing::Harness;
//! use freshet::Tumble;
//!
//! let (mut h, (clicks, counts)) = Harness::new(|t| {
//!     let (clicks, streams) = t.source::<(u32, u64)>("clicks");
//!     let counts = streams.records.tumble_count("count", 1000, |c: &(u32, u64)| c.0);
//!     (clicks, t.collect("counts", counts))
//! });
//! clicks.send(0, 0, 100, (7, 100));
//! clicks.send(0, 1, 900, (7, 900));
//! h.next_epoch();
//! assert!(counts.records().is_empty()); // the window [0, 1000) is still open
//! assert!(h.committed().is_empty()); // so epoch 0 is not complete
//! h.advance_watermark(1000);
//! assert_eq!(counts.records()[0].value, 2);
//! assert_eq!(h.committed()[&("clicks".to_string(), 0)], 2);
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use timely::communication::allocator::thread::Thread;
use timely::communication::allocator::Allocator;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;
use timely::scheduling::Activator;
use timely::worker::{Config as WorkerConfig, Worker};

use crate::commit::{CommitTracker, Committer, OffsetLedger};
use crate::config::{KafkaConfig, SourceConfig};
use crate::error::Result;
use crate::job::{Job, Shared};
use crate::metrics::Metrics;
use crate::sink::collect::{Collect, Collected};
use crate::source::{SourceError, SourceStreams};
use crate::time::{Late, Time};
use freshet_operators::unconnected::{Unconnected, Watch};

/// Offsets that would be committed, per `(topic, partition)`: the next offset to read.
pub type Offsets = BTreeMap<(String, i32), i64>;

/// What the harness does to every source when time moves.
trait Control {
    fn set_time(&mut self, now: Time);
    fn close(&mut self);
}

/// One test source: what was sent and not yet emitted, positions, epoch snapshots.
struct SourceState<D> {
    topic: String,
    now: Time,
    closed: bool,
    records: Vec<(Time, D)>,
    late: Vec<Late<D>>,
    errors: Vec<SourceError>,
    /// Next offset per partition (offset after the last record sent).
    positions: BTreeMap<i32, i64>,
    /// What may be committed: the same rule as the Kafka source's.
    ledger: OffsetLedger,
    committed: Rc<RefCell<Offsets>>,
    activator: Option<Activator>,
}

impl<D> SourceState<D> {
    fn snapshot(&mut self) {
        let positions = self.positions.iter().map(|(&p, &o)| (p, o));
        self.ledger.end_epoch(self.now.epoch, positions);
    }

    fn activate(&self) {
        if let Some(a) = &self.activator {
            a.activate();
        }
    }
}

impl<D> Control for SourceState<D> {
    fn set_time(&mut self, now: Time) {
        if self.closed {
            return;
        }
        if now.epoch > self.now.epoch {
            self.snapshot();
        }
        self.now = Time::new(now.event.max(self.now.event), now.epoch.max(self.now.epoch));
        self.activate();
    }

    fn close(&mut self) {
        if !self.closed {
            self.snapshot();
            self.closed = true;
            self.activate();
        }
    }
}

impl<D> Committer for SourceState<D> {
    fn commit_complete(&mut self, complete_below: u64) -> Result<()> {
        let (topic, committed) = (&self.topic, &self.committed);
        self.ledger.commit_complete(complete_below, |_, positions| {
            let mut committed = committed.borrow_mut();
            for &(p, o) in positions {
                committed.insert((topic.clone(), p), o);
            }
            Ok(())
        })
    }
}

/// A source fed by the test. Cheap to clone; not `Send` (the harness is single-threaded).
pub struct TestSource<D> {
    state: Rc<RefCell<SourceState<D>>>,
}

impl<D> Clone for TestSource<D> {
    fn clone(&self) -> Self {
        TestSource {
            state: self.state.clone(),
        }
    }
}

impl<D> TestSource<D> {
    /// Sends `record`, read from `partition` at `offset`, with event time `event_time`
    /// (ms). It is emitted at `(event_time, current epoch)` if `event_time` is at or past
    /// the current watermark, and on the late stream otherwise. Call [`Harness::run`]
    /// (or move time) to let the dataflow process it.
    pub fn send(&self, partition: i32, offset: i64, event_time: u64, record: D) {
        let mut s = self.state.borrow_mut();
        assert!(!s.closed, "send on a closed test source '{}'", s.topic);
        let next = s.positions.entry(partition).or_insert(0);
        *next = (*next).max(offset + 1);
        let now = s.now;
        if event_time >= now.event {
            s.records.push((Time::new(event_time, now.epoch), record));
        } else {
            s.late.push(Late {
                event_time,
                watermark: now.event,
                record,
            });
        }
        s.activate();
    }

    /// Sends a message that could not be decoded: it goes to the error stream, and its
    /// offset counts as read.
    pub fn send_malformed(&self, partition: i32, offset: i64, reason: &str, payload: &[u8]) {
        let mut s = self.state.borrow_mut();
        let next = s.positions.entry(partition).or_insert(0);
        *next = (*next).max(offset + 1);
        let topic = s.topic.clone();
        s.errors.push(SourceError {
            topic,
            partition,
            offset,
            reason: reason.to_string(),
            key: None,
            payload: Some(payload.to_vec()),
        });
        s.activate();
    }

    /// The next offset of each partition: offsets continue from here.
    pub fn next_offset(&self, partition: i32) -> i64 {
        self.state
            .borrow()
            .positions
            .get(&partition)
            .copied()
            .unwrap_or(0)
    }

    /// Sends `record` at the partition's next offset.
    pub fn push(&self, partition: i32, event_time: u64, record: D) {
        let offset = self.next_offset(partition);
        self.send(partition, offset, event_time, record);
    }

    /// Moves this source's watermark alone to `watermark` (never backwards; the harness's
    /// own moves still apply to every source). Call [`Harness::run`] afterwards. Use it
    /// to model one input lagging behind another, e.g. a table side that stalls a lookup.
    pub fn advance_watermark(&self, watermark: u64) {
        let mut s = self.state.borrow_mut();
        let now = Time::new(watermark, s.now.epoch);
        s.set_time(now);
    }

    /// This source's current time: (watermark, epoch).
    pub fn now(&self) -> Time {
        self.state.borrow().now
    }

    /// Ends this source (as a bounded source does at the end of its partitions).
    pub fn close(&self) {
        self.state.borrow_mut().close();
    }
}

/// What a sink under test acknowledged, in order.
pub struct Output<D> {
    collected: Collected<D>,
}

impl<D> Clone for Output<D> {
    fn clone(&self) -> Self {
        Output {
            collected: self.collected.clone(),
        }
    }
}

impl<D: Clone> Output<D> {
    /// Every record so far.
    pub fn records(&self) -> Vec<D> {
        self.lock().iter().map(|(_, d)| d.clone()).collect()
    }

    /// Every record so far, with the time it was emitted at.
    pub fn with_times(&self) -> Vec<(Time, D)> {
        self.lock().clone()
    }

    /// Removes and returns every record so far.
    pub fn take(&self) -> Vec<D> {
        std::mem::take(&mut *self.lock())
            .into_iter()
            .map(|(_, d)| d)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Time, D)>> {
        self.collected.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a harness build function gets: the job, and sources it can feed.
pub struct TestJob<'a, 'scope> {
    job: Job<'scope>,
    controls: &'a mut Vec<Rc<RefCell<dyn Control>>>,
    committed: Rc<RefCell<Offsets>>,
    now: Time,
}

impl<'scope> TestJob<'_, 'scope> {
    /// The job, for sinks and anything else that takes a [`Job`].
    pub fn job(&self) -> &Job<'scope> {
        &self.job
    }

    /// A source standing in for a Kafka source on `topic`, and its streams.
    pub fn source<D: Clone + 'static>(
        &mut self,
        topic: &str,
    ) -> (TestSource<D>, SourceStreams<'scope, D>) {
        self.source_with(topic, true)
    }

    /// A source whose offsets are never committed (a table side, see
    /// [`crate::KafkaSource::no_commit`]).
    pub fn table_source<D: Clone + 'static>(
        &mut self,
        topic: &str,
    ) -> (TestSource<D>, SourceStreams<'scope, D>) {
        self.source_with(topic, false)
    }

    fn source_with<D: Clone + 'static>(
        &mut self,
        topic: &str,
        commit: bool,
    ) -> (TestSource<D>, SourceStreams<'scope, D>) {
        let state = Rc::new(RefCell::new(SourceState {
            topic: topic.to_string(),
            now: self.now,
            closed: false,
            records: Vec::new(),
            late: Vec::new(),
            errors: Vec::new(),
            positions: BTreeMap::new(),
            ledger: OffsetLedger::new(topic, self.job.metrics().clone()),
            committed: self.committed.clone(),
            activator: None,
        }));
        let scope = self.job.scope();
        let mut builder = OperatorBuilder::new(format!("TestSource({topic})"), scope);
        let info = builder.operator_info();
        state.borrow_mut().activator = Some(scope.activator_for(info.address.clone()));
        let (rec_out, records) = builder.new_output();
        let (err_out, errors) = builder.new_output();
        let (late_out, late) = builder.new_output();
        let mut rec_out: OutputBuilder<Time, CapacityContainerBuilder<Vec<D>>> =
            OutputBuilder::from(rec_out);
        let mut err_out: OutputBuilder<Time, CapacityContainerBuilder<Vec<SourceError>>> =
            OutputBuilder::from(err_out);
        let mut late_out: OutputBuilder<Time, CapacityContainerBuilder<Vec<Late<D>>>> =
            OutputBuilder::from(late_out);
        let op_state = state.clone();
        let metrics = self.job.metrics().clone();
        builder.build(move |caps| {
            let mut caps: Option<Vec<Capability<Time>>> = Some(caps);
            let mut first = true;
            move |_frontiers| {
                let Some(held) = caps.as_mut() else { return };
                let mut s = op_state.borrow_mut();
                if first {
                    first = false;
                    for cap in held.iter_mut() {
                        cap.downgrade(&s.now);
                    }
                }
                let mut records = std::mem::take(&mut s.records);
                if !records.is_empty() {
                    Metrics::add(&metrics.records_in, records.len() as u64);
                    records.sort_by_key(|(t, _)| *t);
                    let mut out = rec_out.activate();
                    let mut iter = records.into_iter().peekable();
                    while let Some((t, d)) = iter.next() {
                        let cap = held[0].delayed(&t);
                        let mut session = out.session(&cap);
                        session.give(d);
                        while let Some((_, d)) = iter.next_if(|(u, _)| *u == t) {
                            session.give(d);
                        }
                    }
                }
                let errors = std::mem::take(&mut s.errors);
                if !errors.is_empty() {
                    Metrics::add(&metrics.errors, errors.len() as u64);
                    err_out
                        .activate()
                        .session(&held[1])
                        .give_iterator(errors.into_iter());
                }
                let late = std::mem::take(&mut s.late);
                if !late.is_empty() {
                    Metrics::add(&metrics.late, late.len() as u64);
                    // At the time the late records were seen: the current (W, E).
                    late_out
                        .activate()
                        .session(&held[2])
                        .give_iterator(late.into_iter());
                }
                if s.closed {
                    caps = None;
                    return;
                }
                let now = s.now;
                for cap in held.iter_mut() {
                    if *cap.time() != now {
                        cap.downgrade(&now);
                    }
                }
            }
        });
        let streams = SourceStreams {
            records,
            errors,
            late,
        };
        crate::source::declare_side_streams(&streams, &format!("TestSource({topic})"));
        let control: Rc<RefCell<dyn Control>> = state.clone();
        self.controls.push(control);
        if commit {
            self.job.commits().add_committer(state.clone());
        }
        (TestSource { state }, streams)
    }

    /// Collects `stream` as a sink that acknowledges at once.
    pub fn collect<D: Clone + Send + 'static>(
        &self,
        name: &str,
        stream: StreamVec<'scope, Time, D>,
    ) -> Output<D> {
        let collected: Collected<D> = Arc::new(Mutex::new(Vec::new()));
        stream.collect_into(&self.job, name, collected.clone());
        Output { collected }
    }
}

/// A job's dataflow on one in-memory worker, driven by the test.
pub struct Harness {
    worker: Worker,
    commits: CommitTracker,
    shared: Arc<Shared>,
    controls: Vec<Rc<RefCell<dyn Control>>>,
    committed: Rc<RefCell<Offsets>>,
    now: Time,
    unconnected: Vec<Unconnected>,
}

impl Harness {
    /// The streams of the dataflow that nothing consumes and that the job should
    /// connect (a source's `errors` and `late`, a window's `too_late`, ...), as the
    /// warnings logged when it was built name them.
    pub fn unconnected(&self) -> &[Unconnected] {
        &self.unconnected
    }

    /// Builds the dataflow with `build` (watermark 0, epoch 0) and returns the harness and
    /// what `build` returned (typically its [`TestSource`]s and [`Output`]s).
    pub fn new<R, F>(build: F) -> (Harness, R)
    where
        F: FnOnce(&mut TestJob<'_, '_>) -> R,
    {
        let kafka = KafkaConfig::new("in-memory", "test");
        let shared = Arc::new(Shared::new(
            kafka,
            SourceConfig::default(),
            Arc::new(AtomicBool::new(false)),
            None,
            false,
        ));
        let alloc = Allocator::Thread(Thread::default());
        let mut worker = Worker::new(
            WorkerConfig::default(),
            alloc,
            Some(std::time::Instant::now()),
        );
        let commits = CommitTracker::new();
        let committed = Rc::new(RefCell::new(Offsets::new()));
        let mut controls = Vec::new();
        let now = Time::new(0, 0);
        let backlogs = shared.backlogs().install();
        let (result, unconnected) = worker.dataflow_named::<Time, _, _>("Test", |scope| {
            let watch = Watch::start(scope.worker());
            let mut t = TestJob {
                job: Job::new(scope, commits.clone(), shared.clone()),
                controls: &mut controls,
                committed: committed.clone(),
                now,
            };
            let result = build(&mut t);
            (result, watch.finish(scope.worker()))
        });
        drop(backlogs);
        crate::job::warn_unconnected(0, &unconnected);
        let mut h = Harness {
            worker,
            commits,
            shared,
            controls,
            committed,
            now,
            unconnected,
        };
        h.run();
        (h, result)
    }

    /// The current time of every source: (watermark, epoch).
    pub fn now(&self) -> Time {
        self.now
    }

    /// Moves every source's watermark to `watermark` (never backwards) and runs.
    pub fn advance_watermark(&mut self, watermark: u64) {
        self.set_time(Time::new(watermark.max(self.now.event), self.now.epoch));
    }

    /// Ends the current epoch (its offsets can be committed once it is complete) and runs.
    pub fn next_epoch(&mut self) {
        self.set_time(Time::new(self.now.event, self.now.epoch + 1));
    }

    /// Moves the watermark and ends the current epoch, then runs.
    pub fn advance(&mut self, watermark: u64) {
        self.set_time(Time::new(watermark.max(self.now.event), self.now.epoch + 1));
    }

    fn set_time(&mut self, now: Time) {
        self.now = now;
        for c in &self.controls {
            c.borrow_mut().set_time(now);
        }
        self.run();
    }

    /// Steps the dataflow until nothing is left to do now, then commits complete epochs.
    pub fn run(&mut self) {
        let mut quiet = 0;
        for _ in 0..1_000_000 {
            self.worker.step();
            let busy = self.worker.activations().borrow().empty_for() == Some(Duration::ZERO);
            if busy {
                quiet = 0;
            } else {
                quiet += 1;
                if quiet >= 4 {
                    break;
                }
            }
        }
        if let Err(e) = self.commits.commit() {
            panic!("commit failed in the test harness: {e}");
        }
        if let Some(f) = self.shared.failure_reason() {
            panic!("the job failed: {f}");
        }
    }

    /// Steps for `duration` of wall-clock time (for operators that wait on a timer, such
    /// as a delayed collect sink), then runs.
    pub fn run_for(&mut self, duration: Duration) {
        let until = std::time::Instant::now() + duration;
        while std::time::Instant::now() < until {
            self.worker.step_or_park(Some(Duration::from_millis(1)));
        }
        self.run();
    }

    /// Ends every source (as a bounded run does at the end of its input) and runs the
    /// dataflow to completion: every window flushes, the last epoch completes, and its
    /// offsets are committed.
    pub fn finish(&mut self) {
        for c in &self.controls {
            c.borrow_mut().close();
        }
        self.run();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !self.commits.done() {
            assert!(
                std::time::Instant::now() < deadline,
                "the dataflow did not finish within 30 s of its sources ending: an operator \
                 still holds a capability (state it never emits?)"
            );
            self.worker.step_or_park(Some(Duration::from_millis(1)));
        }
        self.run();
    }

    /// Epochs below this are complete (every sink acknowledged their output).
    pub fn complete_below(&self) -> u64 {
        self.commits.complete_below()
    }

    /// The offsets committed so far, per (topic, partition): for each source, the
    /// offset after the last record read in its newest complete epoch.
    pub fn committed(&self) -> Offsets {
        self.committed.borrow().clone()
    }

    /// The job's counters (records in and out, malformed, late, commits).
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.shared_metrics()
    }

    fn shared_metrics(&self) -> &Arc<Metrics> {
        self.shared.metrics()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for id in self.worker.installed_dataflows() {
            self.worker.drop_dataflow(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tumble;

    #[test]
    fn commits_wait_for_open_windows_and_late_records_go_to_the_late_stream() {
        let (mut h, (src, counts, late)) = Harness::new(|t| {
            let (src, s) = t.source::<u64>("in");
            let counts = s.records.tumble_count("count", 100, |_: &u64| ());
            let late = t.collect("late", s.late);
            (src, t.collect("counts", counts), late)
        });
        src.send(0, 0, 10, 10);
        src.send(1, 0, 20, 20);
        h.next_epoch(); // epoch 0 done: offsets {0: 1, 1: 1}
        src.send(0, 1, 150, 150);
        h.next_epoch(); // epoch 1 done: {0: 2, 1: 1}
        assert!(counts.records().is_empty());
        assert!(h.committed().is_empty(), "window [0,100) is open");
        h.advance_watermark(100);
        assert_eq!(counts.records().len(), 1);
        assert_eq!(counts.records()[0].value, 2);
        // Epoch 0 is complete; epoch 1 holds window [100, 200).
        assert_eq!(h.committed()[&("in".to_string(), 0)], 1);
        src.send(1, 1, 50, 50); // behind the watermark: late
        h.run();
        assert_eq!(late.records().len(), 1);
        h.finish();
        assert_eq!(counts.records().len(), 2);
        let c = h.committed();
        assert_eq!(c[&("in".to_string(), 0)], 2);
        assert_eq!(c[&("in".to_string(), 1)], 2);
    }

    #[test]
    fn one_source_can_lag_behind_the_others() {
        use crate::operators::Lookup;
        let (mut h, (stream, table, out)) = Harness::new(|t| {
            let (stream, s) = t.source::<(u8, u64)>("stream");
            let (table, tb) = t.table_source::<(u8, char)>("table");
            let joined = s.records.lookup(tb.records, "t", |r: &(u8, u64)| r.0);
            (stream, table, t.collect("joined", joined))
        });
        table.send(0, 0, 5, (1, 'a'));
        stream.send(0, 0, 10, (1, 10));
        stream.advance_watermark(100);
        h.run();
        assert!(
            out.records().is_empty(),
            "the table's watermark (0) holds the lookup"
        );
        assert_eq!(stream.now().event, 100);
        assert_eq!(table.now().event, 0);
        table.advance_watermark(11);
        h.run();
        assert_eq!(out.records(), vec![((1, 10), 'a')]);
        h.finish();
        assert!(h.committed().keys().all(|(t, _)| t == "stream"));
    }

    #[test]
    fn malformed_messages_reach_the_error_stream_and_count_as_read() {
        let (mut h, (src, errors)) = Harness::new(|t| {
            let (src, s) = t.source::<u64>("in");
            t.collect("records", s.records);
            (src, t.collect("errors", s.errors))
        });
        src.push(0, 5, 5);
        src.send_malformed(0, 1, "json: expected value", b"{oops");
        h.advance(10);
        let e = errors.records();
        assert_eq!((e.len(), e[0].offset, e[0].topic.as_str()), (1, 1, "in"));
        assert_eq!(h.committed()[&("in".to_string(), 0)], 2);
        assert_eq!(
            h.metrics()
                .errors
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }
}
