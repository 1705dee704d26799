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
    let expected = reference_counts(events.iter().map(|(_, e)| e), 1000);
    // Commits follow checkpoints, not windows: wait for the output too.
    wait_for(
        Duration::from_secs(60),
        "every offset committed and every window written",
        || committed(&group, &input, 2) == ends && read_topic(&output, 2).len() >= expected.len(),
    );
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
    let mut seen = std::collections::BTreeMap::new();
    for w in &got {
        seen.entry((w.key, w.start))
            .or_insert_with(Vec::new)
            .push(w.value);
    }
    let twice: Vec<_> = seen.iter().filter(|(_, v)| v.len() > 1).collect();
    let wrong: Vec<_> = seen
        .iter()
        .filter(|(k, v)| expected.get(k) != v.last())
        .map(|(k, v)| (k, v, expected.get(k)))
        .collect();
    assert!(twice.is_empty(), "windows written twice: {twice:?}");
    assert!(wrong.is_empty(), "wrong windows: {wrong:?}");
    assert_eq!(got.len(), expected.len());
}
