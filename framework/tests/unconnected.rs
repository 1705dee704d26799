//! A job that leaves a late, error, too-late or overflow stream unconnected is told so
//! when its dataflow is built: one warning line per such stream, naming the operator
//! and the stream; a connected stream draws none. No broker: the test harness builds
//! the dataflow as `freshet::run` does.

use std::io::Write;
use std::sync::{Arc, Mutex};

use freshet::operators::aggregate::Count;
use freshet::operators::unconnected::Unconnected;
use freshet::operators::{JoinKind, Rolling, RollingPolicy, Session, WindowJoin, WindowPolicy};
use freshet::testing::Harness;
use freshet::Tumble;

/// Everything the `tracing` subscriber writes, for the lines a build logs.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    /// The warning lines about unconnected streams.
    fn warnings(&self) -> Vec<String> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter(|l| l.contains("unconnected stream"))
            .map(str::to_string)
            .collect()
    }
}

/// Builds a job in the harness with `connect` deciding which side streams it
/// connects; returns what the harness found and the warning lines logged.
fn build(connect: bool) -> (Vec<Unconnected>, Vec<String>) {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let harness = tracing::subscriber::with_default(subscriber, || {
        let (h, _) = Harness::new(|t| {
            let (clicks, s) = t.source::<(u32, u64)>("clicks");
            let key = |c: &(u32, u64)| c.0;
            let late = Some(s.late.clone());
            let policy = WindowPolicy::new().lateness(100);
            let w = s
                .records
                .clone()
                .tumble("counts", 1000, policy, late, key, Count);
            let late = Some(s.late.clone());
            let sessions = s
                .records
                .clone()
                .session("visits", 500, policy, late, key, Count);
            let late = Some(s.late.clone());
            let rolling =
                s.records
                    .clone()
                    .rolling("recent", 1000, RollingPolicy::exact(), late, key, Count);
            let j = s.records.clone().window_join_capped(
                s.records.clone(),
                "self",
                1000,
                JoinKind::Inner,
                10,
                key,
                key,
                |_, a, b| (a.1, b.map(|b| b.1)),
            );
            t.collect("counts", w.results);
            t.collect("sessions", sessions.results);
            t.collect("rolling", rolling.results);
            t.collect("pairs", j.rows);
            if connect {
                t.collect("errors", s.errors);
                t.collect("too late", w.too_late);
                t.collect("sessions too late", sessions.too_late);
                t.collect("rolling too late", rolling.too_late);
                t.collect("overflow", j.overflow);
            }
            clicks
        });
        h
    });
    (harness.unconnected().to_vec(), log.warnings())
}

#[test]
fn each_unconnected_stream_is_named_once_at_build() {
    let (found, warnings) = build(false);
    let named: Vec<(String, &str)> = found
        .iter()
        .map(|u| (u.operator.clone(), u.stream))
        .collect();
    // The source's late stream feeds three operators: connected. Its errors are not.
    assert_eq!(
        named,
        vec![
            ("TestSource(clicks)".to_string(), "errors"),
            ("Tumble(counts, 1000ms)".to_string(), "too_late"),
            ("Session(visits, gap 500ms)".to_string(), "too_late"),
            ("Rolling(recent, 1000ms exact)".to_string(), "too_late"),
            ("WindowJoin(self, 1000ms)".to_string(), "overflow"),
        ]
    );
    eprintln!("{}", warnings.join("\n"));
    assert_eq!(warnings.len(), found.len(), "{warnings:#?}");
    for (line, u) in warnings.iter().zip(&found) {
        assert!(
            line.contains(&format!("{}: its `{}` stream", u.operator, u.stream))
                && line.contains("connected to nothing"),
            "{line}"
        );
    }
    assert!(
        warnings[0].contains("no --dead-letter-topic"),
        "{}",
        warnings[0]
    );
}

#[test]
fn connected_streams_draw_no_warning() {
    let (found, warnings) = build(true);
    assert!(found.is_empty(), "{found:?}");
    assert!(warnings.is_empty(), "{warnings:#?}");
}
