//! Stopping a live job with SIGTERM against the real broker: it drains, commits what its
//! sinks acknowledged, and exits 0.

mod support;

use std::time::Duration;

use support::*;

#[test]
fn sigterm_drains_commits_and_exits_zero() {
    let (input, events) = preload("sigterm-in", 2, 5, 1_000, 30_000);
    let output = create_topic("sigterm-out", 2);
    let group = unique("sigterm-group");
    let mut child = job_binary(&input, &output, &group)
        // Historical data: once caught up, the watermark follows the wall clock and
        // every window closes.
        .args(["--idle-timeout-ms", "300", "--idle-advance"])
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
    let got: Vec<WindowCount> = decode(&read_topic(&output, 2));
    let expected = reference_counts(events.iter().map(|(_, e)| e), 1000);
    assert_eq!(got.len(), expected.len());
}
