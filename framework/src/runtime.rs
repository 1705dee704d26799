//! Running a job: timely workers, the step loop, commits, shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use timely::worker::Worker;

use crate::checkpoint::{CheckpointConfig, JobCheckpoints};
use crate::cluster::Cluster;
use crate::commit::CommitTracker;
use crate::config::{KafkaConfig, PoisonOutput, SourceConfig};
use crate::error::{Error, Result};
use crate::job::{Job, Shared};
use crate::metrics::Summary;
use crate::time::Time;
use freshet_operators::unconnected::Watch;

/// Everything a job needs besides its dataflow.
#[derive(Clone, Debug)]
pub struct JobConfig {
    /// Kafka connection and group.
    pub kafka: KafkaConfig,
    /// Default settings of every source.
    pub source: SourceConfig,
    /// Workers and processes.
    pub cluster: Cluster,
    /// When set, the job stops reading, drains and commits (SIGINT/SIGTERM set it).
    pub stop: Arc<AtomicBool>,
    /// How long a stopping job waits for in-flight output before its last commit.
    pub drain: Duration,
    /// Log a one-line status this often (never when zero).
    pub status_every: Duration,
    /// Serve Prometheus metrics on this address (`--metrics-addr`).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Draw a progress bar in bounded mode when stderr is a terminal (`--no-progress` clears it).
    pub progress: bool,
    /// Durable state: checkpoints (on by default).
    pub checkpoint: CheckpointConfig,
    /// Where malformed, late and refused records are written (`--dead-letter-topic`):
    /// every Kafka source writes its error and late records there.
    pub dead_letter_topic: Option<String>,
    /// What Kafka sinks do with a record the producer refuses (`--poison-output`).
    pub poison_output: PoisonOutput,
    /// Warn at start about side streams the job leaves unconnected (on by default;
    /// `--no-unconnected-check` turns it off: the check's logger stays in the
    /// channels built with the dataflow and costs a little per message, decision 35).
    pub check_unconnected: bool,
}

impl Default for JobConfig {
    /// A one-worker job on a local broker ([`KafkaConfig::default`]), default sources.
    fn default() -> Self {
        JobConfig {
            kafka: KafkaConfig::default(),
            source: SourceConfig::default(),
            cluster: Cluster::default(),
            stop: Arc::new(AtomicBool::new(false)),
            drain: Duration::from_secs(2),
            status_every: Duration::from_secs(10),
            metrics_addr: None,
            progress: true,
            checkpoint: CheckpointConfig::default(),
            dead_letter_topic: None,
            poison_output: PoisonOutput::Fail,
            check_unconnected: true,
        }
    }
}

impl JobConfig {
    /// A one-worker job on `kafka` with default source settings.
    pub fn new(kafka: KafkaConfig) -> Self {
        JobConfig {
            kafka,
            ..JobConfig::default()
        }
    }
}

/// Runs a job: builds `build`'s dataflow on every worker and steps it until it is done
/// (bounded mode), fails, or is asked to stop; returns the process's summary.
pub fn run<F>(config: JobConfig, build: F) -> Result<Summary>
where
    F: Fn(&mut Job<'_>) -> Result<()> + Send + Sync + 'static,
{
    config.kafka.validate()?;
    config.source.validate()?;
    config.checkpoint.validate()?;
    // librdkafka rejects unknown or malformed keys here, before any worker starts.
    config
        .kafka
        .consumer_config()
        .create::<BaseConsumer>()
        .map_err(|e| {
            let e = crate::config::redact_client_error(e);
            Error::Config(format!("Kafka client settings: {e}"))
        })?;
    let timely_config = config.cluster.timely_config()?;
    if config.poison_output == PoisonOutput::DeadLetter && config.dead_letter_topic.is_none() {
        return Err(Error::Config(
            "--poison-output dead-letter needs --dead-letter-topic".into(),
        ));
    }
    let checkpoints = if config.checkpoint.enabled {
        let restore = config.source.start == crate::config::StartFrom::Committed;
        Some(JobCheckpoints::open(
            &config.checkpoint,
            &config.kafka.group,
            config.source.epoch_interval,
            restore,
        )?)
    } else {
        None
    };
    let shared = Arc::new(
        Shared::new(
            config.kafka.clone(),
            config.source.clone(),
            config.stop.clone(),
            checkpoints,
            config.checkpoint.drop_orphaned,
        )
        .with_dead_letters(config.dead_letter_topic.clone(), config.poison_output),
    );
    // Process p of a multi-process job serves on port + p, so processes sharing a host
    // and the same flags do not collide.
    let _server = match config.metrics_addr {
        Some(addr) => {
            let port = match addr.port() {
                0 => 0,
                p => p
                    .checked_add(config.cluster.process as u16)
                    .ok_or_else(|| Error::Config("--metrics-addr port + -p overflows".into()))?,
            };
            let addr = std::net::SocketAddr::new(addr.ip(), port);
            Some(crate::exporter::MetricsServer::start(
                addr,
                shared.metrics().clone(),
            )?)
        }
        None => None,
    };
    let _bar = if config.progress && config.source.bounded {
        crate::progress_bar::ProgressBar::start(shared.metrics().clone())
    } else {
        None
    };
    install_panic_hook();
    if config.cluster.processes > 1 {
        *NETWORK_JOB.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(&shared);
    }
    let start = Instant::now();
    let worker_shared = shared.clone();
    let (drain, status_every) = (config.drain, config.status_every);
    let check_unconnected = config.check_unconnected;
    let workers = config.cluster.workers.max(1);
    let guards = timely::execute(timely_config, move |worker| {
        // The first worker of each process logs its status and sets its process's gauges.
        let lead = worker.index() % workers == 0;
        WORKER_JOB.with(|j| *j.borrow_mut() = Some(worker_shared.clone()));
        let settings = (drain, status_every, lead, check_unconnected);
        let result = run_worker(worker, &worker_shared, &build, settings);
        if let Err(e) = &result {
            worker_shared.fail(Error::Runtime(e.to_string()));
        }
        WORKER_JOB.with(|j| *j.borrow_mut() = None);
        result
    })
    .map_err(|e| Error::Runtime(format!("starting workers: {e}")))?;
    let mut first_error = None;
    // Joining timely's network threads panics if one of them did (a lost peer).
    let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| guards.join()))
        .unwrap_or_else(|_| {
            first_error = Some(Error::Runtime("timely's network threads failed".into()));
            Vec::new()
        });
    for r in joined {
        let err = match r {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(panic) => Error::Runtime(format!("a worker panicked: {panic}")),
        };
        first_error.get_or_insert(err);
    }
    // The first failure (a panic's message, a lost peer) says more than its consequences.
    if let Some(reason) = shared.failure_reason() {
        return Err(Error::Runtime(reason));
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(shared.metrics().summary(start.elapsed()))
}

/// A worker's settings: drain time, status period, whether it leads its process, and
/// whether it checks for unconnected side streams.
type WorkerSettings = (Duration, Duration, bool, bool);

fn run_worker<F>(
    worker: &mut Worker,
    shared: &Arc<Shared>,
    build: &F,
    settings: WorkerSettings,
) -> Result<()>
where
    F: Fn(&mut Job<'_>) -> Result<()>,
{
    let result = drive(worker, shared, build, settings);
    // A stopped, failed or half-built job leaves operators holding capabilities: drop its
    // dataflow so timely does not keep stepping it after the worker function returns.
    for id in worker.installed_dataflows() {
        worker.drop_dataflow(id);
    }
    result
}

/// Builds the dataflow and steps it until it is done, fails or is stopped; then commits.
fn drive<F>(
    worker: &mut Worker,
    shared: &Arc<Shared>,
    build: &F,
    (drain, status_every, lead, check_unconnected): WorkerSettings,
) -> Result<()>
where
    F: Fn(&mut Job<'_>) -> Result<()>,
{
    let commits = CommitTracker::new();
    let (index, peers) = (worker.index(), worker.peers());
    // Operators built on this worker find the checkpoint context while it is installed.
    let checkpoints = shared.checkpoints().map(|c| {
        let metrics = shared.metrics().clone();
        let dropped = metrics.prom.dropped_behind_restore.clone();
        // Told once per operator and worker; counted always.
        let told = std::cell::RefCell::new(std::collections::BTreeSet::new());
        c.context(
            index,
            peers,
            Box::new(move |name, epoch, error| {
                metrics.prom.checkpoint_failures.inc();
                tracing::error!(worker = index, operator = name, epoch, %error,
                    "checkpoint part not written: commits stop until a checkpoint is");
            }),
        )
        .with_dropped_hook(Box::new(move |name, count| {
            dropped.with_label_values(&[name]).inc_by(count);
            if told.borrow_mut().insert(name.to_string()) {
                tracing::warn!(
                    worker = index,
                    operator = name,
                    records = count,
                    "records read behind the restored state dropped: they were late before \
                     the restart (the source's watermark restarts lower); counted in \
                     freshet_dropped_behind_restore_total"
                );
            }
        }))
        // Operators hold each checkpoint epoch until their part is durable where the
        // commit tracker looks, not on their data outputs.
        .with_durability_probe(commits.probe().clone())
    });
    let installed = checkpoints.as_ref().map(|c| c.install());
    let backlogs = shared.backlogs().install();
    let unconnected = worker.dataflow_named::<Time, _, _>("Job", |scope| {
        // Only while the operators are built: see `freshet_operators::unconnected`.
        let watch = check_unconnected.then(|| Watch::start(scope.worker()));
        let mut job = Job::new(scope, commits.clone(), shared.clone());
        let built = build(&mut job);
        let unconnected = watch.map_or_else(Vec::new, |w| w.finish(scope.worker()));
        built.map(|()| unconnected)
    })?;
    drop((installed, backlogs));
    crate::job::warn_unconnected(index, &unconnected);
    let names = checkpoints.as_ref().map(|c| c.names()).unwrap_or_default();
    if let Some(c) = shared.checkpoints() {
        let adopted = checkpoints
            .as_ref()
            .map(|c| c.adopted())
            .unwrap_or_default();
        c.check_names(&names, &adopted, shared.drop_orphaned())?;
    }
    if commits.sinks() == 0 {
        return Err(Error::Config(
            "the job has no sink: offsets are committed only for output a sink acknowledged".into(),
        ));
    }
    let mut last_status = Instant::now();
    let mut stop_deadline = None;
    loop {
        if let Some(f) = shared.failure_reason() {
            return Err(Error::Runtime(f));
        }
        if commits.done() {
            break;
        }
        if shared.stopping() {
            let deadline = *stop_deadline.get_or_insert_with(|| Instant::now() + drain);
            if Instant::now() >= deadline {
                tracing::info!(worker = index, "stopping: drained; final commit");
                break;
            }
        }
        worker.step_or_park(Some(Duration::from_millis(10)));
        if let Some(c) = shared.checkpoints().filter(|_| lead) {
            let started = Instant::now();
            match c.advance(commits.complete_below(), &names, peers) {
                Ok(Some((epoch, bytes))) => {
                    let prom = &shared.metrics().prom;
                    prom.checkpoint_epoch.set(epoch as i64);
                    prom.checkpoint_bytes.set(bytes as i64);
                    prom.checkpoint_manifest_seconds
                        .observe(started.elapsed().as_secs_f64());
                }
                Ok(None) => {}
                Err(e) => {
                    shared.metrics().prom.checkpoint_failures.inc();
                    tracing::error!(worker = index, error = %e, "checkpoint manifest not written");
                }
            }
        }
        // A failure in this step (a sink that could not write) must not be committed past.
        if let Some(f) = shared.failure_reason() {
            return Err(Error::Runtime(f));
        }
        if let Err(e) = commit(&commits, shared, false) {
            tracing::warn!(worker = index, error = %e, "offset commit failed; retried at the next complete epoch");
        }
        let below = commits.complete_below();
        if lead && below != u64::MAX && below > 0 {
            shared
                .metrics()
                .prom
                .committed_epoch
                .set((below - 1) as i64);
        }
        if lead && !status_every.is_zero() && last_status.elapsed() >= status_every {
            last_status = Instant::now();
            let m = shared.metrics();
            tracing::info!(
                records_in = m.records_in.load(Ordering::Relaxed),
                records_out = m.records_out.load(Ordering::Relaxed),
                read_of_total = %{
                    let (read, total) = m.progress();
                    format!("{read}/{total}")
                },
                malformed = m.errors.load(Ordering::Relaxed),
                late = m.late.load(Ordering::Relaxed),
                commits = m.commits.load(Ordering::Relaxed),
                complete_below_epoch = commits.complete_below(),
                "status"
            );
        }
    }
    if let Some(f) = shared.failure_reason() {
        return Err(Error::Runtime(f));
    }
    commit(&commits, shared, true).map_err(|e| {
        Error::Runtime(format!(
            "final offset commit failed ({e}); the output is written, and the records \
             after the last accepted commit will be read again at the next start"
        ))
    })
}

/// Commits the sources' complete epochs; with checkpoints, only those of a checkpoint
/// whose manifest is written (offsets never run ahead of restorable state). A bounded
/// run's final commit (`last`) goes to the end: its output is all written and its
/// state empty. Commits are synchronous: the broker's answer is known (and counted)
/// before the worker steps on; with checkpoints there is about one commit a second.
fn commit(commits: &CommitTracker, shared: &Shared, last: bool) -> Result<()> {
    let below = commits.complete_below();
    let below = match shared.checkpoints() {
        Some(c) if !(last && below == u64::MAX) => below.min(c.committable_below()),
        _ => below,
    };
    commits.commit_below(below)
}

thread_local! {
    /// The job a worker thread runs, for the panic hook.
    static WORKER_JOB: std::cell::RefCell<Option<Arc<Shared>>> = const { std::cell::RefCell::new(None) };
}

/// The multi-process job of this process, for panics of timely's network threads.
static NETWORK_JOB: std::sync::Mutex<std::sync::Weak<Shared>> =
    std::sync::Mutex::new(std::sync::Weak::new());

/// Installs (once per process) a panic hook that fails the job of the panicking thread.
///
/// * A worker thread's panic fails its job with the message and location: every other
///   worker sees the failure within one step and stops, and [`run`] returns the error
///   (the job binary exits non-zero) instead of the others stepping a frozen frontier.
/// * A panic of timely's network thread `timely:recv-N`/`timely:send-N` means process N
///   is gone: the job fails with one line naming it.
/// * Panics that follow a job's failure (timely's `MergeQueue poisoned` in the other
///   workers) are consequences and print nothing. Other threads' panics go to the
///   previous hook.
fn install_panic_hook() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            let location = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            if let Some(shared) = WORKER_JOB.with(|j| j.borrow().clone()) {
                if !shared.failed() {
                    let worker = std::thread::current()
                        .name()
                        .unwrap_or("worker")
                        .to_string();
                    shared.fail(Error::Runtime(format!(
                        "a worker panicked ({worker}): {message}{location}"
                    )));
                }
                return;
            }
            let thread = std::thread::current();
            let peer = thread
                .name()
                .and_then(|n| {
                    n.strip_prefix("timely:recv-")
                        .or(n.strip_prefix("timely:send-"))
                })
                .map(str::to_string);
            if let Some(peer) = peer {
                let job = NETWORK_JOB
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .upgrade();
                if let Some(shared) = job {
                    if !shared.failed() {
                        shared.fail(Error::Runtime(format!(
                            "lost the connection to peer process {peer} ({message}); \
                             a multi-process job cannot continue without it: restart \
                             every process"
                        )));
                    }
                    return;
                }
            }
            // After a multi-process job failed, timely's teardown panics are consequences.
            let job = NETWORK_JOB
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .upgrade();
            if job.is_some_and(|shared| shared.failed()) {
                return;
            }
            previous(info)
        }));
    });
}
