//! What a job's build function gets ([`Job`]), and the state every worker of a process
//! shares ([`Shared`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use timely::dataflow::Scope;

use freshet_operators::backlog::Backlogs;
use freshet_operators::unconnected::Unconnected;

use crate::checkpoint::JobCheckpoints;
use crate::commit::CommitTracker;
use crate::config::{KafkaConfig, PoisonOutput, SourceConfig};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::time::Time;

/// State shared by every worker of the process.
pub struct Shared {
    kafka: KafkaConfig,
    source: SourceConfig,
    metrics: Arc<Metrics>,
    failure: Mutex<Option<String>>,
    stop: Arc<AtomicBool>,
    checkpoints: Option<JobCheckpoints>,
    drop_orphaned: bool,
    dead_letter_topic: Option<String>,
    poison_output: PoisonOutput,
    backlogs: Backlogs,
}

impl Shared {
    /// State for a job on `kafka` with default sources, not stopping.
    pub(crate) fn new(
        kafka: KafkaConfig,
        source: SourceConfig,
        stop: Arc<AtomicBool>,
        checkpoints: Option<JobCheckpoints>,
        drop_orphaned: bool,
    ) -> Self {
        Shared {
            kafka,
            source,
            metrics: Arc::new(Metrics::default()),
            failure: Mutex::new(None),
            stop,
            checkpoints,
            drop_orphaned,
            dead_letter_topic: None,
            poison_output: PoisonOutput::Fail,
            backlogs: Backlogs::new(),
        }
    }

    /// Records operators of this process keep waiting for another input (a lookup's
    /// stream records waiting for its table): sources other than table sides pause
    /// while one is over `SourceConfig::max_lookup_backlog`.
    pub fn backlogs(&self) -> &Backlogs {
        &self.backlogs
    }

    /// The job's checkpoints, unless they are off.
    pub fn checkpoints(&self) -> Option<&JobCheckpoints> {
        self.checkpoints.as_ref()
    }

    /// Whether a restore may drop state no operator owns (`--drop-orphaned-state`).
    pub fn drop_orphaned(&self) -> bool {
        self.drop_orphaned
    }

    /// Sets where dead letters go and what Kafka sinks do with refused records.
    pub(crate) fn with_dead_letters(mut self, topic: Option<String>, poison: PoisonOutput) -> Self {
        self.dead_letter_topic = topic;
        self.poison_output = poison;
        self
    }

    /// The dead-letter topic (`--dead-letter-topic`), if the job has one.
    pub fn dead_letter_topic(&self) -> Option<String> {
        self.dead_letter_topic.clone()
    }

    /// What Kafka sinks do with records the producer refuses (`--poison-output`).
    pub fn poison_output(&self) -> PoisonOutput {
        self.poison_output
    }

    /// The process-wide counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The job's failure, if any worker failed it.
    pub fn failure_reason(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// True once the job was asked to stop.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Fails the job: every worker stops, nothing more is committed. The first failure
    /// is logged (once) and is the job's error.
    pub fn fail(&self, error: Error) {
        let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            tracing::error!(%error, "job failed");
            *f = Some(error.to_string());
        }
    }

    /// True once some worker failed the job.
    pub fn failed(&self) -> bool {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

/// What a job's build function gets: the dataflow scope and the job's settings.
pub struct Job<'scope> {
    scope: Scope<'scope, Time>,
    commits: CommitTracker,
    shared: Arc<Shared>,
}

impl<'scope> Job<'scope> {
    /// A job handle over `scope` (the runtime and the test harness build these).
    pub(crate) fn new(
        scope: Scope<'scope, Time>,
        commits: CommitTracker,
        shared: Arc<Shared>,
    ) -> Self {
        Job {
            scope,
            commits,
            shared,
        }
    }

    /// The dataflow scope, for timely and Freshet operators.
    pub fn scope(&self) -> Scope<'scope, Time> {
        self.scope
    }
    /// This worker's index among all workers of all processes.
    pub fn index(&self) -> usize {
        self.scope.index()
    }
    /// The number of workers in all processes.
    pub fn peers(&self) -> usize {
        self.scope.peers()
    }
    /// The process-wide counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }
    /// The job's Kafka settings.
    pub fn kafka_config(&self) -> &KafkaConfig {
        &self.shared.kafka
    }
    /// The job's default source settings.
    pub fn source_config(&self) -> &SourceConfig {
        &self.shared.source
    }
    /// The commit tracker of this worker.
    pub fn commits(&self) -> &CommitTracker {
        &self.commits
    }
    /// The process-wide shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

/// Logs one warning line per stream of the job's dataflow that nothing consumes (found
/// by [`freshet_operators::unconnected::Watch`] while the dataflow was built), on worker
/// 0 only: every worker builds the same dataflow.
pub(crate) fn warn_unconnected(worker: usize, unconnected: &[Unconnected]) {
    if worker != 0 {
        return;
    }
    for u in unconnected {
        tracing::warn!(operator = %u.operator, stream = u.stream, "unconnected stream: {u}");
    }
}
