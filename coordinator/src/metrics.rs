//! Counters and gauges, written out in the Prometheus text format by hand.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::db::QueueStats;

/// The coordinator's counters (monotonic, since start).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Leases handed out.
    pub leases: AtomicU64,
    /// Results accepted.
    pub results: AtomicU64,
    /// Jobs registered.
    pub jobs_registered: AtomicU64,
    /// Sign-ins accepted.
    pub sign_ins: AtomicU64,
    /// Blobs stored.
    pub blobs: AtomicU64,
    /// Task roots posted on-chain.
    pub roots_posted: AtomicU64,
    /// Reorgs rolled back.
    pub reorgs: AtomicU64,
    /// Last block ingested.
    pub chain_block: AtomicU64,
    /// 1 while this coordinator leads (follows the chain and posts roots), else 0.
    pub leader: AtomicU64,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition, with the gauges of the queue.
    pub fn render(&self, queue: QueueStats) -> String {
        let mut out = String::new();
        let mut put = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP gleaner_coordinator_{name} {help}");
            let _ = writeln!(out, "# TYPE gleaner_coordinator_{name} {kind}");
            let _ = writeln!(out, "gleaner_coordinator_{name} {v}");
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        put(
            "leases_total",
            "counter",
            "Leases handed out.",
            get(&self.leases),
        );
        put(
            "results_total",
            "counter",
            "Results accepted.",
            get(&self.results),
        );
        put(
            "jobs_registered_total",
            "counter",
            "Jobs registered.",
            get(&self.jobs_registered),
        );
        put(
            "sign_ins_total",
            "counter",
            "Sign-ins accepted.",
            get(&self.sign_ins),
        );
        put(
            "blobs_stored_total",
            "counter",
            "Blobs uploaded.",
            get(&self.blobs),
        );
        put(
            "roots_posted_total",
            "counter",
            "Task roots posted on-chain.",
            get(&self.roots_posted),
        );
        put(
            "chain_reorgs_total",
            "counter",
            "Reorgs rolled back.",
            get(&self.reorgs),
        );
        put(
            "chain_block",
            "gauge",
            "Last block ingested.",
            get(&self.chain_block),
        );
        put(
            "leader",
            "gauge",
            "1 while this coordinator follows the chain and posts roots.",
            get(&self.leader),
        );
        put(
            "replicas_queued",
            "gauge",
            "Replicas waiting for a worker.",
            queue.queued,
        );
        put(
            "replicas_leased",
            "gauge",
            "Replicas leased now.",
            queue.leased,
        );
        out
    }
}
