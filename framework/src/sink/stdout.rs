//! A sink that prints each record on standard output.

use std::fmt::Debug;
use std::io::Write;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

use super::register_acks;
use crate::job::Job;
use crate::metrics::Metrics;
use crate::time::Time;

/// Extension trait: print records.
pub trait PrintStdout<D> {
    /// Prints each record with `format`, one line each; acknowledged once written.
    fn print_with<F: Fn(&D) -> String + 'static>(self, job: &Job<'_>, name: &str, format: F);

    /// Prints each record's `Debug` form.
    fn print_stdout(self, job: &Job<'_>, name: &str)
    where
        Self: Sized,
        D: Debug,
    {
        self.print_with(job, name, |d| format!("{d:?}"))
    }
}

impl<'scope, D: 'static> PrintStdout<D> for StreamVec<'scope, Time, D> {
    fn print_with<F: Fn(&D) -> String + 'static>(self, job: &Job<'_>, name: &str, format: F) {
        let metrics = job.metrics().clone();
        let acks = self.unary::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Pipeline,
            &format!("Stdout({name})"),
            move |_cap, _info| {
                let sink_records = super::records_counter(&metrics, &format!("Stdout({name})"));
                move |input, _output| {
                    let stdout = std::io::stdout();
                    let mut out = stdout.lock();
                    input.for_each(|_cap, data| {
                        for d in data.iter() {
                            let _ = writeln!(out, "{}", format(d));
                        }
                        Metrics::add(&metrics.records_out, data.len() as u64);
                        sink_records.inc_by(data.len() as u64);
                    });
                    let _ = out.flush();
                }
            },
        );
        register_acks(job, acks);
    }
}
