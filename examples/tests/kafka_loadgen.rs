//! The load generator against the real broker: every message it reports delivered is
//! on the topic, and the risk-control job reads what it wrote.

mod utils;

use std::process::Command;

use utils::*;

#[test]
fn loadgen_delivers_what_it_reports() {
    let topic = create_topic("loadgen", 2);
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--brokers",
            &brokers(),
            "--topic",
            &topic,
            "--kind",
            "payments",
            "--rate",
            "0",
            "--count",
            "3000",
            "--seconds",
            "60",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .expect("running loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loadgen failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("3000 sent, 3000 delivered, 0 failed"),
        "{stdout}"
    );
    assert!(stdout.contains("msg/s"), "{stdout}");
    let read = read_topic(&topic, 2);
    assert_eq!(read.len(), 3000);
    let payments: Vec<freshet_examples::risk::Payment> = decode(&read);
    assert!(payments.iter().all(|p| p.ts > 1_700_000_000_000));
}
