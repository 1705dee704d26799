//! Every example's `--demo` (librdkafka's in-process mock cluster, nothing installed)
//! runs to the end and prints its summary: the command in each binary's doc comment works.

use std::process::Command;

fn demo(bin: &str, extra: &[&str]) -> String {
    let out = Command::new(bin)
        .arg("--demo")
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("running {bin}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{bin} --demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn iot_demo() {
    let out = demo(env!("CARGO_BIN_EXE_iot-anomalies"), &[]);
    assert!(
        out.contains("Anomaly {") && out.contains("Silent {"),
        "{out}"
    );
    assert!(out.contains("records in:"), "{out}");
}

#[test]
fn sessionize_demo() {
    let out = demo(env!("CARGO_BIN_EXE_sessionize"), &[]);
    assert!(out.contains("SessionSummary {"), "{out}");
    assert!(out.contains("sessions expected:"), "{out}");
}

#[test]
fn enrich_demo() {
    let out = demo(env!("CARGO_BIN_EXE_enrich"), &[]);
    assert!(out.contains("tier: \"gold\""), "{out}");
    assert!(out.contains("customer: None"), "{out}");
}

#[test]
fn risk_control_demo_reports_alert_latency() {
    let out = demo(env!("CARGO_BIN_EXE_risk-control"), &["--demo-seconds", "4"]);
    assert!(out.contains("ALERT ip=10.66.0."), "{out}");
    assert!(
        out.contains("alert latency:") && out.contains("p99"),
        "{out}"
    );
}

#[test]
fn loadgen_demo_reports_its_rate() {
    let out = demo(env!("CARGO_BIN_EXE_loadgen"), &["--count", "20000"]);
    assert!(
        out.contains("20000 sent, 20000 delivered, 0 failed"),
        "{out}"
    );
}

#[test]
fn risk_score_demo_decides_and_reports_latency() {
    let out = demo(env!("CARGO_BIN_EXE_risk-score"), &["--demo-seconds", "4"]);
    assert!(out.contains("Block payment="), "{out}");
    assert!(
        out.contains("hand-over latency:") && out.contains("p99.9"),
        "{out}"
    );
}
