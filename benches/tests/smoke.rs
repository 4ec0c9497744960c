//! The benchmark in its smoke mode: proves every scenario runs and reports, against a
//! redis-server it starts itself. Never a timed pass/fail check.

use std::process::Command;

#[test]
fn quick_benchmark_runs_every_scenario() {
    let out = Command::new(env!("CARGO_BIN_EXE_fabric-bench"))
        .args(["--quick", "--json"])
        .output()
        .expect("run fabric-bench");
    assert!(
        out.status.success(),
        "fabric-bench --quick failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("--json prints one JSON document");
    let rows = report["rows"].as_array().expect("rows");
    for section in [
        "drain", "enqueue", "latency", "secure", "scale", "growth", "memory", "metrics", "agents",
        "cluster",
    ] {
        let n = rows.iter().filter(|r| r["section"] == section).count();
        assert!(n > 0, "no {section} figures in {report}");
    }
    for r in rows {
        let ours = r["ours"].as_f64().unwrap_or(-1.0);
        assert!(ours.is_finite() && ours >= 0.0, "bad figure: {r}");
    }
}
