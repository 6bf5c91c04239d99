//! [`Difference`]: one way a settlement disagrees with the report, the chain or the formulas.

use alloy::primitives::{Address, B256, U256};

/// One thing that does not hold. Its `Display` is the line `audit job` prints.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Difference {
    /// The report's keccak256 is not the `reportHash` of `JobSettled`.
    ReportHash {
        /// keccak256 of the report served.
        report: B256,
        /// `JobSettled.reportHash`.
        on_chain: B256,
    },
    /// The report is about another job.
    ReportJob {
        /// The job the report names.
        report: U256,
    },
    /// The report names another chain or market.
    ReportDeployment,
    /// The report's spec hash is not the job's.
    SpecHash {
        /// The report's.
        report: B256,
        /// `JobCreated.specHash`.
        on_chain: B256,
    },
    /// The report's task root is not the posted one.
    TasksRoot {
        /// The report's.
        report: B256,
        /// `TasksPosted.tasksRoot`.
        on_chain: B256,
    },
    /// The Merkle root of the report's task hashes is not the posted one.
    MerkleRoot {
        /// Recomputed from the report's tasks.
        computed: B256,
        /// `TasksPosted.tasksRoot`.
        on_chain: B256,
    },
    /// The report lists another number of tasks than the job has.
    TaskCount {
        /// Tasks in the report.
        report: u64,
        /// `JobCreated.taskCount`.
        on_chain: u64,
    },
    /// A replica's signature does not recover to its worker.
    BadSignature {
        /// Task index.
        task: u32,
        /// The worker named.
        worker: Address,
    },
    /// The accepted task count differs.
    AcceptedTasks {
        /// From the report.
        computed: u64,
        /// `JobSettled.acceptedTasks`.
        on_chain: u64,
    },
    /// The total units differ.
    TotalUnits {
        /// From the report.
        computed: U256,
        /// `JobSettled.totalUnits`.
        on_chain: U256,
    },
    /// The reward pool differs from the pool formula.
    Pool {
        /// By the formula.
        computed: U256,
        /// `JobSettled.pool`.
        on_chain: U256,
    },
    /// A worker's units differ.
    Units {
        /// The worker.
        worker: Address,
        /// By the contribution formula.
        computed: U256,
        /// `WorkerPaid.units`.
        on_chain: U256,
    },
    /// A worker's payout differs.
    Payout {
        /// The worker.
        worker: Address,
        /// By the payout formula.
        computed: U256,
        /// `WorkerPaid.amount`.
        on_chain: U256,
    },
    /// A worker earned units but was not paid.
    Unpaid {
        /// The worker.
        worker: Address,
        /// Its units.
        units: U256,
    },
    /// A worker was paid without earning anything in the report.
    PaidWithoutUnits {
        /// The worker.
        worker: Address,
    },
    /// Payouts, fee and refund do not add up to the budget.
    Balance {
        /// Σ `WorkerPaid.amount`.
        paid: U256,
        /// `JobSettled.fee`.
        fee: U256,
        /// `JobSettled.refund`.
        refund: U256,
        /// `JobCreated.budget`.
        budget: U256,
    },
    /// A worker was slashed for the job without an entry in the report.
    UnreportedSlash {
        /// The worker.
        worker: Address,
    },
    /// The report the coordinator serves is not a canonical settlement report.
    UnreadableReport {
        /// Why it does not parse.
        reason: String,
    },
    /// The formulas cannot be applied to the report and the chain's values (a worker without a
    /// confidence entry, more accepted tasks than tasks, an overflow).
    Unrecomputable {
        /// What failed.
        reason: String,
    },
    /// The job's spot checks do not hold: no commitment where the report has spot checks (or
    /// the other way round), a secret that does not hash to the commitment or is not the one
    /// revealed, a beacon that is not the commitment's block, another redundancy.
    SpotCheckSeed {
        /// What does not hold.
        reason: String,
    },
    /// Tasks the committed randomness drew for a spot check were accepted on one replica: the
    /// selection was not followed.
    UncheckedDraws {
        /// The tasks.
        tasks: Vec<u32>,
    },
    /// The replicas paid for differ from the report's accepted quorums.
    PaidReplicas {
        /// From the report.
        computed: u64,
        /// `ChecksRevealed.paidReplicas`.
        on_chain: u64,
    },
    /// An on-chain amount is too large for the formulas' arithmetic (u128).
    OutOfRange {
        /// Which value.
        what: &'static str,
        /// The value.
        value: U256,
    },
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ReportHash { report, on_chain } => {
                write!(
                    f,
                    "report keccak256 {report} != on-chain reportHash {on_chain}"
                )
            }
            Self::ReportJob { report } => write!(f, "report is for job {report}"),
            Self::ReportDeployment => f.write_str("report names another deployment"),
            Self::SpecHash { report, on_chain } => {
                write!(f, "spec hash {report} != JobCreated {on_chain}")
            }
            Self::TasksRoot { report, on_chain } => {
                write!(f, "tasks root {report} != TasksPosted {on_chain}")
            }
            Self::MerkleRoot { computed, on_chain } => write!(
                f,
                "Merkle root of the report's tasks {computed} != posted {on_chain}"
            ),
            Self::TaskCount { report, on_chain } => {
                write!(f, "report has {report} tasks, job {on_chain}")
            }
            Self::BadSignature { task, worker } => {
                write!(f, "task {task}: replica of {worker} has no valid signature")
            }
            Self::AcceptedTasks { computed, on_chain } => {
                write!(f, "accepted tasks {computed} != JobSettled {on_chain}")
            }
            Self::TotalUnits { computed, on_chain } => {
                write!(f, "total units {computed} != JobSettled {on_chain}")
            }
            Self::Pool { computed, on_chain } => {
                write!(f, "pool {computed} != JobSettled {on_chain}")
            }
            Self::Units {
                worker,
                computed,
                on_chain,
            } => write!(
                f,
                "{worker}: units {on_chain} on-chain, {computed} by the formula"
            ),
            Self::Payout {
                worker,
                computed,
                on_chain,
            } => write!(
                f,
                "{worker}: paid {on_chain} on-chain, {computed} by the formula"
            ),
            Self::Unpaid { worker, units } => write!(
                f,
                "{worker}: earned {units} units but has no WorkerPaid event"
            ),
            Self::PaidWithoutUnits { worker } => {
                write!(f, "{worker} was paid but earned nothing in the report")
            }
            Self::Balance {
                paid,
                fee,
                refund,
                budget,
            } => write!(
                f,
                "payouts {paid} + fee {fee} + refund {refund} != budget {budget}"
            ),
            Self::UnreportedSlash { worker } => {
                write!(f, "{worker} was slashed without a report entry")
            }
            Self::UnreadableReport { reason } => write!(f, "the report is unreadable: {reason}"),
            Self::Unrecomputable { reason } => {
                write!(f, "the settlement cannot be recomputed: {reason}")
            }
            Self::SpotCheckSeed { reason } => write!(f, "spot checks: {reason}"),
            Self::UncheckedDraws { tasks } => write!(
                f,
                "{} task(s) drawn for a spot check were accepted on one replica: {tasks:?}",
                tasks.len()
            ),
            Self::PaidReplicas { computed, on_chain } => {
                write!(f, "paid replicas {computed} != ChecksRevealed {on_chain}")
            }
            Self::OutOfRange { what, value } => {
                write!(f, "{what} {value} is out of the formulas' range")
            }
        }
    }
}
