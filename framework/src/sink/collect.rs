//! A sink that collects records in memory, for tests and examples.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use super::register_acks;
use crate::job::Job;
use crate::metrics::Metrics;
use crate::time::Time;

/// Records a collect sink has acknowledged, with their times; shared across workers.
pub type Collected<D> = Arc<Mutex<Vec<(Time, D)>>>;

/// Extension trait: collect records in memory.
pub trait Collect<D> {
    /// Collects records into `into`, acknowledging one batch at most every `delay`
    /// (a slow sink with limited throughput, for tests of the commit protocol and flow
    /// control); a record enters `into` when it is acknowledged, so `into` always holds
    /// exactly the durable output.
    fn collect_delayed(self, job: &Job<'_>, name: &str, into: Collected<D>, delay: Duration);

    /// Collects records into `into`, acknowledging at once.
    fn collect_into(self, job: &Job<'_>, name: &str, into: Collected<D>)
    where
        Self: Sized,
    {
        self.collect_delayed(job, name, into, Duration::ZERO)
    }
}

impl<'scope, D: 'static + Send> Collect<D> for StreamVec<'scope, Time, D> {
    fn collect_delayed(self, job: &Job<'_>, name: &str, into: Collected<D>, delay: Duration) {
        let metrics = job.metrics().clone();
        let scope = self.scope();
        let acks = self
            .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
                Pipeline,
                &format!("Collect({name})"),
                move |_cap, info| {
                    let activator = scope.activator_for(info.address);
                    let sink_records =
                        super::records_counter(&metrics, &format!("Collect({name})"));
                    let mut pending: VecDeque<(Instant, Capability<Time>, Vec<D>)> =
                        VecDeque::new();
                    move |(input, _frontier), _output| {
                        input.for_each(|cap, data| {
                            if let Some(&time) = cap.stamp().iter().next() {
                                let held = cap.delayed(&time, 0);
                                pending.push_back((
                                    Instant::now() + delay,
                                    held,
                                    std::mem::take(data),
                                ));
                            }
                        });
                        let now = Instant::now();
                        while pending.front().is_some_and(|(at, _, _)| *at <= now) {
                            let (_, cap, data) = pending.pop_front().expect("checked");
                            Metrics::add(&metrics.records_out, data.len() as u64);
                            sink_records.inc_by(data.len() as u64);
                            metrics
                                .prom
                                .observe_latency(cap.time().event, data.len() as u64);
                            let mut out = into.lock().unwrap_or_else(|e| e.into_inner());
                            out.extend(data.into_iter().map(|d| (*cap.time(), d)));
                        }
                        if let Some((at, _, _)) = pending.front() {
                            activator.activate_after(at.saturating_duration_since(now));
                        }
                    }
                },
            );
        register_acks(job, acks);
    }
}
