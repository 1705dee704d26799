//! Stopping a live job with SIGTERM against the real broker: it drains, commits what its
//! sinks acknowledged, and exits 0.

mod utils;

use std::time::Duration;

use freshet_examples::sessions;
use freshet_examples::{produce_json, Outgoing};
use utils::*;

#[test]
fn sigterm_drains_commits_and_exits_zero() {
    let input = create_topic("sigterm-in", 2);
    let output = create_topic("sigterm-out", 2);
    let group = unique("sigterm-group");
    let clicks = sessions::generate_clicks(5, 20, 1_700_000_000_000, 30_000, 1_000, 100);
    produce_json(
        &brokers(),
        &input,
        clicks.iter().map(|c| Outgoing {
            partition: Some((c.user % 2) as i32),
            key: c.user.to_string(),
            ts: c.ts,
            value: c,
        }),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sessionize"))
        .args([
            "--brokers",
            &brokers(),
            "--input",
            &input,
            "--output",
            &output,
            "--group",
            &group,
            "--gap-ms",
            "1000",
            // Historical data: once caught up, the watermark follows the wall clock and
            // every session closes.
            "--idle-timeout-ms",
            "300",
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ends = ends(&read_topic(&input, 2));
    wait_for(Duration::from_secs(60), "every offset committed", || {
        committed(&group, &input, 2) == ends
    });
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(
        exit.success(),
        "SIGTERM should end the job cleanly: {exit:?}"
    );
    let got = read_topic(&output, 2);
    assert_eq!(got.len(), sessions::reference(&clicks, 1_000).len());
}
