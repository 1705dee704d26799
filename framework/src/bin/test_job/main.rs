//! `freshet-test-job`: the job the framework's integration tests run as a process (to
//! stop it with a signal, restart it, or run it as two processes). It counts JSON events
//! per key in tumbling windows, from `--input` to `--output` — and on request in session
//! windows, through a window join and in keyed state — with every [`JobArgs`] flag.

#![forbid(missing_docs)]

mod window_count;

use clap::Parser;
use freshet::JobArgs;

/// The test job's flags.
#[derive(Parser)]
#[command(disable_help_flag = true)]
struct Args {
    /// Topic of JSON events.
    #[arg(long)]
    input: String,
    /// Topic the window counts are written to.
    #[arg(long)]
    output: String,
    /// Window length, ms.
    #[arg(long, default_value_t = 1000)]
    window_ms: u64,
    /// Also count events per key in session windows, into this topic.
    #[arg(long)]
    session_output: Option<String>,
    /// Session gap, ms.
    #[arg(long, default_value_t = 300)]
    session_gap_ms: u64,
    /// Also left-join each key's even-amount events with its odd-amount ones per
    /// window, and count the join's rows per key and window into this topic.
    #[arg(long)]
    join_output: Option<String>,
    /// Also keep each key's running count of events (keyed state), into this topic.
    #[arg(long)]
    keyed_output: Option<String>,
    /// Also look up `Noted` records of this topic in `--lookup-table` (a left
    /// stream–table lookup), into `--lookup-output`.
    #[arg(long, requires_all = ["lookup_table", "lookup_output"])]
    lookup_input: Option<String>,
    /// The lookup's table: events, amount by key.
    #[arg(long)]
    lookup_table: Option<String>,
    /// Where the lookup's results go.
    #[arg(long)]
    lookup_output: Option<String>,
    /// Also count events of this topic per key in session windows with late data: the
    /// topic's source has `--late-sessions-out-of-orderness-ms`, and the sessions a
    /// lateness of `--late-sessions-lateness-ms`.
    #[arg(long, requires = "late_sessions_output")]
    late_sessions_input: Option<String>,
    /// Where those sessions go.
    #[arg(long)]
    late_sessions_output: Option<String>,
    /// The late sessions' source's out-of-orderness, ms.
    #[arg(long, default_value_t = 20)]
    late_sessions_out_of_orderness_ms: u64,
    /// The late sessions' lateness, ms.
    #[arg(long, default_value_t = 60_000)]
    late_sessions_lateness_ms: u64,
    #[command(flatten)]
    job: JobArgs,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    freshet::cli::init_logging();
    let args = Args::parse();
    let config = args.job.into_config()?;
    freshet::cli::stop_on_signals(&config.stop)?;
    let extra = window_count::Extra {
        sessions: args
            .session_output
            .map(|topic| (topic, args.session_gap_ms)),
        late_sessions: args
            .late_sessions_input
            .map(|input| window_count::LateSessions {
                input,
                output: args.late_sessions_output.unwrap_or_default(),
                gap: args.session_gap_ms,
                out_of_orderness: args.late_sessions_out_of_orderness_ms,
                lateness: args.late_sessions_lateness_ms,
            }),
        join: args.join_output,
        keyed: args.keyed_output,
        lookup: args.lookup_input.map(|input| window_count::LookupTopics {
            input,
            table: args.lookup_table.unwrap_or_default(),
            output: args.lookup_output.unwrap_or_default(),
        }),
    };
    let job = window_count::job(args.input, args.output, args.window_ms, extra);
    let summary = freshet::run(config, job)?;
    tracing::info!(%summary, "done");
    Ok(())
}
