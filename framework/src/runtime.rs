//! Running a job: timely workers, the step loop, commits, shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use timely::worker::Worker;

use crate::cluster::Cluster;
use crate::commit::CommitTracker;
use crate::config::{KafkaConfig, SourceConfig};
use crate::error::{Error, Result};
use crate::job::{Job, Shared};
use crate::metrics::Summary;
use crate::time::Time;

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
    let shared = Arc::new(Shared::new(
        config.kafka.clone(),
        config.source.clone(),
        config.stop.clone(),
    ));
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
    let start = Instant::now();
    let worker_shared = shared.clone();
    let (drain, status_every) = (config.drain, config.status_every);
    let workers = config.cluster.workers.max(1);
    let guards = timely::execute(timely_config, move |worker| {
        // The first worker of each process logs its status and sets its process's gauges.
        let lead = worker.index() % workers == 0;
        let result = run_worker(worker, &worker_shared, &build, drain, status_every, lead);
        if let Err(e) = &result {
            worker_shared.fail(Error::Runtime(e.to_string()));
        }
        result
    })
    .map_err(|e| Error::Runtime(format!("starting workers: {e}")))?;
    let mut first_error = None;
    for r in guards.join() {
        let err = match r {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(panic) => Error::Runtime(format!("a worker panicked: {panic}")),
        };
        first_error.get_or_insert(err);
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(shared.metrics().summary(start.elapsed()))
}

fn run_worker<F>(
    worker: &mut Worker,
    shared: &Arc<Shared>,
    build: &F,
    drain: Duration,
    status_every: Duration,
    lead: bool,
) -> Result<()>
where
    F: Fn(&mut Job<'_>) -> Result<()>,
{
    let result = drive(worker, shared, build, drain, status_every, lead);
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
    drain: Duration,
    status_every: Duration,
    lead: bool,
) -> Result<()>
where
    F: Fn(&mut Job<'_>) -> Result<()>,
{
    let commits = CommitTracker::new();
    worker.dataflow_named::<Time, _, _>("Job", |scope| {
        let mut job = Job::new(scope, commits.clone(), shared.clone());
        build(&mut job)
    })?;
    if commits.sinks() == 0 {
        return Err(Error::Config(
            "the job has no sink: offsets are committed only for output a sink acknowledged".into(),
        ));
    }
    let index = worker.index();
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
        if let Err(e) = commits.commit(false) {
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
    commits.commit(true)
}
