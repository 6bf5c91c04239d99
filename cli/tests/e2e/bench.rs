//! `gleaner bench coordinator` end to end: anvil, a coordinator process, simulated workers and
//! the in-process verifier; the job settles, the audit holds, and the numbers are sane.

use std::time::Instant;

#[test]
fn bench_coordinator_settles_a_job_and_prints_json_lines() {
    let started = Instant::now();
    let out = super::gleaner()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["bench", "coordinator", "--workers", "4", "--tasks", "200"])
        .args(["--batch", "1,16"])
        .arg("--json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    let row = &rows[0];
    assert_eq!(row["batch"], 1, "{row}");
    assert_eq!(row["backend"], "sqlite", "{row}");
    assert_eq!(
        (row["workers"].as_u64(), row["tasks"].as_u64()),
        (Some(4), Some(200))
    );
    assert_eq!(row["settled"], true, "{row}");
    assert_eq!(row["audit"], "OK", "{row}");
    assert_eq!(row["errors"], 0, "{row}");
    assert!(row["round_trips_per_s"].as_f64().unwrap() > 0.0, "{row}");
    let gas = row["gas_per_task"].as_f64().unwrap();
    assert!(gas > 0.0 && gas < 5_000.0, "{row}");
    // The job's transactions: escrow, the posted root, the settlement.
    for f in ["approve", "createJob", "postTasks"] {
        assert_eq!(row["gas"][f]["txs"], 1, "{f}: {row}");
    }
    assert!(row["db_bytes_per_task"].as_f64().unwrap() > 0.0, "{row}");
    for endpoint in ["lease", "blob_put", "result"] {
        let l = &row["latencies"][endpoint];
        assert_eq!(l["count"], 400, "{endpoint}: {row}");
        let (p50, p99, max) = (
            l["p50_ms"].as_f64().unwrap(),
            l["p99_ms"].as_f64().unwrap(),
            l["max_ms"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{endpoint}: {row}");
    }
    let cpu = row["coordinator_cpu_pct"].as_f64().unwrap();
    assert!(cpu > 0.0, "{row}");

    // Batches of up to 16: results signed once per batch, outputs inline. The verifier checks
    // each batch member's signature and the audit checks them again from the report.
    let row = &rows[1];
    assert_eq!(row["batch"], 16, "{row}");
    assert_eq!(row["settled"], true, "{row}");
    assert_eq!(row["audit"], "OK", "{row}");
    assert_eq!(row["errors"], 0, "{row}");
    let calls = row["latencies"]["lease"]["count"].as_u64().unwrap();
    assert!(
        (400 / 16..400).contains(&calls),
        "{calls} lease calls: {row}"
    );
    assert_eq!(
        row["latencies"]["result"]["count"].as_u64(),
        Some(calls),
        "{row}"
    );
    assert_eq!(row["latencies"]["blob_put"]["count"], 0, "{row}");
    eprintln!("bench coordinator took {:?}", started.elapsed());
}
