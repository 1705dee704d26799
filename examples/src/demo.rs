//! `--demo` runs: librdkafka's in-process mock cluster instead of a broker.

use rdkafka::producer::DefaultProducerContext;

/// Starts librdkafka's in-process mock cluster for a `--demo` run and points the job at
/// it: bounded, from the earliest offsets. Keep the cluster alive until the job ends.
pub fn start_demo(
    job: &mut freshet::JobArgs,
) -> anyhow::Result<rdkafka::mocking::MockCluster<'static, DefaultProducerContext>> {
    let mock = rdkafka::mocking::MockCluster::new(1)
        .map_err(|e| anyhow::anyhow!("starting the mock cluster: {e}"))?;
    job.brokers = mock.bootstrap_servers();
    job.bounded = true;
    job.from = freshet::StartFrom::Earliest;
    // A fresh mock cluster each run: its checkpoints belong to this run alone.
    job.checkpoints.checkpoint_dir.get_or_insert_with(|| {
        std::env::temp_dir().join(format!("freshet-demo-{}", std::process::id()))
    });
    Ok(mock)
}
