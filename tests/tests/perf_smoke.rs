//! A smoke run of the perf suite (`sluice-perf --smoke`): every forwarder
//! (testpmd io and macswap, sluiced DR and NAT) under one tiny scenario on
//! memif links. Checks that every part produces a result — frames came
//! back, the generator's sampled checks passed, the device's counters and
//! the latency were read, the table, JSON and chart were written — and
//! asserts nothing about speed.

use sluice_tests::*;
use std::process::Command;

#[test]
fn every_part_of_the_perf_suite_produces_a_result() {
    let Some(_guard) = system_test() else { return };
    let dir = Scratch::new("perf-smoke");
    let out = dir.path("out");
    let run = Command::new(bin_dir().join("sluice-perf"))
        .arg("--smoke")
        .arg("--out")
        .arg(&out)
        .arg("--bin-dir")
        .arg(bin_dir())
        .output()
        .expect("running sluice-perf");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "sluice-perf --smoke failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        run.status
    );
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results.json")).expect("results.json"),
    )
    .expect("results.json parses");
    let scenarios = results["scenarios"].as_array().expect("scenarios");
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["scenario"]["forwarder"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        ["testpmd-io", "testpmd-macswap", "sluiced-dr", "sluiced-nat"]
    );
    for s in scenarios {
        let name = s["scenario"]["forwarder"].as_str().unwrap_or("");
        assert!(s["error"].is_null(), "{name}: {}", s["error"]);
        assert_eq!(
            s["check_ok"], true,
            "{name}: sampled frames failed the checks"
        );
        let t = &s["trials"][0];
        assert!(t["mpps"].as_f64().unwrap_or(0.0) > 0.0, "{name}: no rate");
        assert!(
            t["max"]["gen_received"].as_u64().unwrap_or(0) > 0,
            "{name}: nothing came back"
        );
        assert!(
            t["max"]["dut_received"].as_u64().unwrap_or(0) > 0,
            "{name}: the device's counters were not read"
        );
        assert!(
            t["cycles_per_packet"].as_f64().unwrap_or(0.0) > 0.0,
            "{name}: no cycles per packet"
        );
        assert!(
            t["latency"]["p99"].as_f64().unwrap_or(0.0) > 0.0,
            "{name}: no latency"
        );
    }
    assert!(s_ratio(&scenarios[1]) == Some(1.0), "baseline ratio is 1");
    let table = std::fs::read_to_string(out.join("table.txt")).expect("table.txt");
    assert!(table.contains("sluiced-nat") && table.contains("ratio"));
    let svg = std::fs::read_to_string(out.join("ratios.svg")).expect("ratios.svg");
    assert!(svg.starts_with("<svg") && svg.contains("sluiced-dr"));
    assert!(
        !out.join("work").exists(),
        "the suite removes its sockets and configs"
    );
}

fn s_ratio(s: &serde_json::Value) -> Option<f64> {
    s["ratio"].as_f64()
}
