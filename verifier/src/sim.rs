//! The economic simulator behind `gleaner sim`: Monte Carlo over jobs and workers with cheating
//! strategies, run through the verifier's own code.
//!
//! What is shared with the services, not copied: the spot-check selection, trust, replicas wanted
//! and replica pool ([`gleaner_protocol::replication`]), the decision of a task from its replicas
//! ([`decide`], with [`single`] for a lone first replica), reputation ([`reputation::update`],
//! [`reputation::conducts`], [`reputation::evidence`]), contributions and payouts
//! ([`formulas::contribution`], [`formulas::payouts`]). What is modelled: which worker gets a
//! lease (uniformly among the workers that may take it), what a worker returns (its strategy), and
//! time, counted in replica-times on `workers` parallel workers.
//!
//! The verifier's part check ([`gleaner_kinds::TaskKind::check_part`]: embed recomputes one
//! random row of every output) is modelled by its outcome: a fake output is found malformed
//! when the recomputed row is a faked one (always for a wholly faked output), and every checked
//! output costs 1/rows of a replica.
//!
//! A job: every task's first replica goes to a random worker. A lone first replica from a trusted
//! worker on an unchecked task is held provisionally; anything else gets more replicas until
//! [`decide`] accepts or fails the task. When every other task is decided, the provisional results
//! of workers still trusted are accepted; the others are replicated. The settlement pays the
//! replicas the accepted tasks used, out of an escrow for `tasks × redundancy` replicas, and slashes
//! each contradicting worker once per job. Trust and confidence carry over from job to job.

use std::collections::BTreeMap;
use std::path::Path;

use alloy::primitives::{Address, B256, Bytes, U256};
use gleaner_kinds::{
    Checked, Member, Outcome, Output, SplitOptions, TaskBlob, TaskKind, TaskRef, Written,
};
use gleaner_protocol::formulas::{self, ConfidenceBps};
use gleaner_protocol::replication::{self, SpotChecks};
use gleaner_protocol::sampling::SplitMix64;
use gleaner_protocol::task::{JobManifest, KindId, ModelRef, TaskParams};
use serde::Serialize;

use crate::decide::{Policy, Replica, Single, Verdict, decide, provisional_verdict, single};
use crate::reputation::{self, Conduct, INITIAL_CONFIDENCE};
use crate::{Error, Result};

/// Work units of every simulated task (`cost_t`).
const TASK_COST: u64 = 1_000;

/// Marks a simulated output with one faked row (above any task index).
const ROW_FAKE: u64 = 1 << 43;

/// Marks a simulated output whose part check failed: the verifier finds it malformed.
const PART_CAUGHT: u64 = 1 << 44;

/// What a simulation runs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Jobs per strategy.
    pub jobs: u32,
    /// Tasks per job.
    pub tasks: u32,
    /// Honest workers besides the strategic one(s).
    pub honest: u32,
    /// Replicas per task the requester escrows (and a check computes).
    pub redundancy: u16,
    /// Spot checks; `None` replicates every task `redundancy` times.
    pub spot: Option<SpotChecks>,
    /// Tokens (base units) one replica pays: the escrow is `tasks × redundancy × price`.
    pub price: u128,
    /// What computing one replica costs its worker.
    pub cost: u128,
    /// Tokens slashed from a contradicting worker, once per job.
    pub slash: u128,
    /// How long, in replica-times, an abandoned lease holds its task before it is leased again.
    pub lease_timeout: u32,
    /// Seed of the simulation's randomness.
    pub seed: u64,
    /// Rows (inputs) per task: a part check recomputes one of them.
    pub rows: u32,
    /// The verifier recomputes one randomly picked row of every output it checks
    /// ([`gleaner_kinds::TaskKind::check_part`], as for embed): a wholly faked output is always
    /// caught, one faked row with probability 1/rows; it costs 1/rows of a replica per output.
    pub part_checks: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        let price = 1_000_000;
        let spot = SpotChecks::default();
        Self {
            jobs: 100,
            tasks: 10_000,
            honest: 9,
            redundancy: 2,
            spot: Some(spot),
            price,
            cost: price * 8 / 10,
            slash: replication::min_slash(price, spot.check_ppm).unwrap_or(u128::MAX),
            lease_timeout: 3,
            seed: 1,
            rows: 32,
            part_checks: true,
        }
    }
}

/// How the strategic worker(s) behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Computes every result.
    Honest,
    /// Fakes each result with this probability (parts per million).
    Fake {
        /// Probability of faking, ppm.
        ppm: u32,
    },
    /// Fakes every task it is the first to compute; honest when it is leased a further replica
    /// (which it could guess from an old task index).
    FakeWhenUnreplicated,
    /// Fakes one row of each result with this probability (ppm), computing the others: the
    /// fake a part check finds hardest (it recomputes that row with probability 1/rows).
    FakeRow {
        /// Probability of faking a row of a result, ppm.
        ppm: u32,
    },
    /// Two workers fake every result the same way, so they agree with each other.
    ColludeInPairs,
    /// Joins as a new worker, computes honestly until trusted, then fakes everything; after a
    /// slash (which resets trust) it builds trust again.
    TrustThenCheat,
    /// Abandons each lease with this probability (ppm): never computed, the task waits for the
    /// lease to expire.
    Offline {
        /// Probability of abandoning, ppm.
        ppm: u32,
    },
}

impl Strategy {
    /// The strategies `gleaner sim` runs by default.
    pub fn all() -> Vec<Self> {
        let mut v = vec![Self::Honest];
        v.extend(
            [10_000, 100_000, 500_000, 1_000_000]
                .into_iter()
                .map(|ppm| Self::Fake { ppm }),
        );
        v.extend(
            [10_000, 1_000_000]
                .into_iter()
                .map(|ppm| Self::FakeRow { ppm }),
        );
        v.extend([
            Self::FakeWhenUnreplicated,
            Self::ColludeInPairs,
            Self::TrustThenCheat,
            Self::Offline { ppm: 100_000 },
        ]);
        v
    }

    /// A short name (`fake-0.01`, `collude-pairs`, ...).
    pub fn name(&self) -> String {
        match self {
            Self::Honest => "honest".into(),
            Self::Fake { ppm } => format!("fake-{}", ppm_str(*ppm)),
            Self::FakeRow { ppm } => format!("fake-row-{}", ppm_str(*ppm)),
            Self::FakeWhenUnreplicated => "fake-when-unreplicated".into(),
            Self::ColludeInPairs => "collude-pairs".into(),
            Self::TrustThenCheat => "trust-then-cheat".into(),
            Self::Offline { ppm } => format!("offline-{}", ppm_str(*ppm)),
        }
    }

    /// How many workers follow it.
    fn workers(&self) -> usize {
        if *self == Self::ColludeInPairs { 2 } else { 1 }
    }

    /// Whether it ever returns a wrong result.
    pub fn cheats(&self) -> bool {
        !matches!(self, Self::Honest | Self::Offline { .. })
    }
}

fn ppm_str(ppm: u32) -> String {
    let s = format!("{}", f64::from(ppm) / 1e6);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// One strategy's results, averaged over the jobs.
#[derive(Debug, Clone, Serialize)]
pub struct StrategyRow {
    /// The strategy's name.
    pub strategy: String,
    /// The strategic worker's profit per replica leased, in replica prices (payouts − compute
    /// costs − slashes).
    pub profit_per_task: f64,
    /// The honest workers' profit per replica leased in the same runs.
    pub honest_profit_per_task: f64,
    /// `profit_per_task − honest_profit_per_task`: negative means the strategy loses money
    /// against honesty.
    pub profit_per_task_vs_honest: f64,
    /// Standard error of that difference, from its spread between jobs.
    pub stderr: f64,
    /// Probability that a job accepts a fake result, bounded per job: every fake is compared
    /// with an honest replica with probability at least `q` (drawn for a check, or replicated
    /// because its worker is not trusted) and caught by the verifier's part check with
    /// probability `r` (1 for a wholly faked output, 1/rows for one faked row, 0 without part
    /// checks), and one catch gets the worker caught and all its provisional results computed
    /// again, so `P ≤ ((1 − q)(1 − r))^k` for the `k` leases it would have faked had it never
    /// been caught; plus, as observed, fakes accepted after replication (colluders outvoting an
    /// honest replica). Averaged over the jobs.
    pub p_fake_accepted_per_job: f64,
    /// Jobs in which a fake was actually accepted in the run.
    pub jobs_with_fake_accepted: u32,
    /// Fake results returned, over all jobs.
    pub fakes: u64,
    /// Fake results accepted, over all jobs.
    pub fakes_accepted: u64,
    /// Replicas computed (or faked) per task, plus the verifier's part checks (1/rows of a
    /// replica each).
    pub overhead: f64,
    /// Mean time to settle a job, in replica-times on the job's workers.
    pub settle_time: f64,
    /// The same job under full replication, for comparison.
    pub full_replication_time: f64,
    /// Slashes of the strategic worker(s) per job.
    pub slashes_per_job: f64,
    /// Slashes of workers that computed honestly (colluders who outvote an honest checker cause
    /// them), over all jobs.
    pub honest_slashed: u64,
}

/// Runs every strategy in `strategies` under `config`.
pub fn simulate(config: &SimConfig, strategies: &[Strategy]) -> Result<Vec<StrategyRow>> {
    if config.tasks == 0 || config.jobs == 0 || config.redundancy == 0 {
        return Err(Error::Invalid(
            "a simulation needs jobs, tasks and a redundancy of at least 1".into(),
        ));
    }
    if config.honest < u32::from(config.redundancy) + 1 {
        return Err(Error::Invalid(format!(
            "{} honest workers cannot check a redundancy of {}: use at least {}",
            config.honest,
            config.redundancy,
            config.redundancy + 1
        )));
    }
    if let Some(s) = &config.spot {
        s.validate()?;
    }
    strategies
        .iter()
        .enumerate()
        .map(|(i, s)| World::new(config, *s, i as u64).run())
        .collect()
}

/// Profit per replica leased, in replica prices.
fn ratio(profit: i128, leased: u64, price: u128) -> f64 {
    if leased == 0 {
        0.0
    } else {
        profit as f64 / leased as f64 / price as f64
    }
}

/// The comparator of simulated outputs: equal numbers agree.
struct SimKind;

impl TaskKind for SimKind {
    fn id(&self) -> KindId {
        KindId::from_static("sim")
    }
    fn model(&self) -> gleaner_kinds::Result<ModelRef> {
        Ok(ModelRef {
            id: "sim".into(),
            weights_sha256: B256::ZERO,
        })
    }
    fn split(
        &self,
        _: &[u8],
        _: &TaskParams,
        _: &SplitOptions,
    ) -> gleaner_kinds::Result<Vec<TaskBlob>> {
        Err(unused())
    }
    fn run(&self, _: &TaskRef<'_>, _: &[u8]) -> gleaner_kinds::Result<Vec<u8>> {
        Err(unused())
    }
    fn check(&self, _: &TaskRef<'_>, _: &[u8], _: &[u8]) -> gleaner_kinds::Result<Checked> {
        Err(unused())
    }
    fn validate(&self, _: &JobManifest) -> gleaner_kinds::Result<()> {
        Ok(())
    }
    fn agree(&self, a: &Output, b: &Output) -> bool {
        a.get::<u64>() == b.get::<u64>()
    }
    fn accept(&self, members: &[Member<'_>]) -> gleaner_kinds::Result<Vec<u8>> {
        let v = members
            .first()
            .and_then(|m| m.output.get::<u64>())
            .ok_or_else(unused)?;
        Ok(v.to_be_bytes().to_vec())
    }
    fn write_results(
        &self,
        _: U256,
        _: &[Outcome<'_>],
        _: &Path,
    ) -> gleaner_kinds::Result<Written> {
        Err(unused())
    }
}

fn unused() -> gleaner_kinds::Error {
    gleaner_kinds::Error::Input("the simulated kind only compares outputs".into())
}

/// Whether a worker computes a task first or as a further replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    First,
    Further,
}

/// The simulated workers and their standing, across jobs.
struct World<'a> {
    config: &'a SimConfig,
    strategy: Strategy,
    rng: SplitMix64,
    addr: Vec<Address>,
    streak: Vec<u32>,
    confidence: Vec<ConfidenceBps>,
    strategic: usize,
    /// Per worker, over all jobs: profit (signed, in base units), replicas leased.
    profit: Vec<i128>,
    leased: Vec<u64>,
}

/// One job's bookkeeping.
#[derive(Default)]
struct JobTally {
    computed: u64,
    /// Provisional results replicated at the end of the job (their worker was caught).
    final_phase: u64,
    abandoned: u64,
    fakes: u64,
    fakes_accepted: u64,
    fakes_accepted_replicated: u64,
    /// Leases the strategic worker(s) would have faked had they never been caught in the job.
    would_fake: u64,
    /// Trust-then-cheat: it believed itself trusted at some point of the job.
    armed: bool,
    slashed: Vec<usize>,
    honest_slashed: u64,
    /// Outputs whose part the verifier recomputed (each 1/rows of a replica).
    part_checks: u64,
    paid_replicas: u64,
    accepted: Vec<(u64, Vec<usize>)>,
    compute_cost: Vec<u128>,
}

impl<'a> World<'a> {
    fn new(config: &'a SimConfig, strategy: Strategy, salt: u64) -> Self {
        let strategic = strategy.workers();
        let n = config.honest as usize + strategic;
        let spot = config.spot.unwrap_or_default();
        // Honest workers (and cheaters other than the trust builder) start trusted, with the
        // confidence that many agreements earn from a new worker's.
        let trusted_conf = (0..spot.trust_after).fold(INITIAL_CONFIDENCE, |p, _| {
            reputation::update(p, Conduct::Agreed)
        });
        let mut streak = vec![spot.trust_after; n];
        let mut confidence = vec![trusted_conf; n];
        if strategy == Strategy::TrustThenCheat {
            streak[n - 1] = 0;
            confidence[n - 1] = INITIAL_CONFIDENCE;
        }
        Self {
            config,
            strategy,
            rng: SplitMix64::new(config.seed ^ (salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))),
            addr: (0..n)
                .map(|i| Address::left_padding_from(&(i as u64 + 1).to_be_bytes()))
                .collect(),
            streak,
            confidence,
            strategic,
            profit: vec![0; n],
            leased: vec![0; n],
        }
    }

    fn n(&self) -> usize {
        self.addr.len()
    }

    fn is_strategic(&self, w: usize) -> bool {
        w >= self.n() - self.strategic
    }

    /// The verifier's view: a streak of `trust_after`, and not caught in this job.
    fn trusted(&self, w: usize, t: &JobTally) -> bool {
        self.config.spot.is_some_and(|s| s.trusted(self.streak[w])) && !t.slashed.contains(&w)
    }

    fn chance(&mut self, ppm: u32) -> bool {
        self.rng.next_u64() % 1_000_000 < u64::from(ppm)
    }

    /// A worker uniformly among those not in `busy`.
    fn pick(&mut self, busy: &[usize]) -> Option<usize> {
        let free: Vec<usize> = (0..self.n()).filter(|w| !busy.contains(w)).collect();
        if free.is_empty() {
            return None;
        }
        Some(free[(self.rng.next_u64() % free.len() as u64) as usize])
    }

    fn believes_trusted(&self, w: usize) -> bool {
        self.config.spot.unwrap_or_default().trusted(self.streak[w])
    }

    /// Whether the strategic worker `w` would fake this lease had it never been caught in the
    /// job: what bounds the probability that a job accepts one of its fakes.
    fn would_fake(&mut self, w: usize, role: Role, t: &mut JobTally) -> bool {
        match self.strategy {
            Strategy::Honest | Strategy::Offline { .. } => false,
            // Decided in `produce` by the same coin; counted there.
            Strategy::Fake { .. } | Strategy::FakeRow { .. } => false,
            Strategy::FakeWhenUnreplicated => role == Role::First,
            Strategy::ColludeInPairs => true,
            Strategy::TrustThenCheat => {
                t.armed |= self.believes_trusted(w);
                t.armed
            }
        }
    }

    /// What worker `w` returns for `task` (`None`: it abandoned the lease).
    fn produce(&mut self, w: usize, task: u64, role: Role, t: &mut JobTally) -> Option<u64> {
        self.leased[w] += 1;
        if self.is_strategic(w) && self.would_fake(w, role, t) {
            t.would_fake += 1;
        }
        let truth = task;
        let own_fake = (1 << 40) | (task << 8) | w as u64;
        let row_fake = ROW_FAKE | (task << 8) | w as u64;
        let shared_fake = (1 << 41) | task;
        let out = if !self.is_strategic(w) {
            Some(truth)
        } else {
            match self.strategy {
                Strategy::Honest => Some(truth),
                Strategy::Fake { ppm } => Some(if self.chance(ppm) {
                    t.would_fake += 1;
                    own_fake
                } else {
                    truth
                }),
                Strategy::FakeRow { ppm } => Some(if self.chance(ppm) {
                    t.would_fake += 1;
                    row_fake
                } else {
                    truth
                }),
                Strategy::FakeWhenUnreplicated => Some(match role {
                    Role::First => own_fake,
                    Role::Further => truth,
                }),
                Strategy::ColludeInPairs => Some(shared_fake),
                // It cheats once it believes it is trusted (it knows its streak).
                Strategy::TrustThenCheat => Some(if self.believes_trusted(w) {
                    own_fake
                } else {
                    truth
                }),
                Strategy::Offline { ppm } => (!self.chance(ppm)).then_some(truth),
            }
        };
        let rows = u128::from(self.config.rows.max(1));
        match out {
            None => t.abandoned += 1,
            Some(o) => {
                t.computed += 1;
                if o == truth {
                    t.compute_cost[w] += self.config.cost;
                } else {
                    t.fakes += 1;
                    if o & ROW_FAKE != 0 {
                        t.compute_cost[w] += self.config.cost * (rows - 1) / rows;
                    }
                }
            }
        }
        // The verifier's part check, drawn once per output as it comes in.
        out.map(|o| {
            if !self.config.part_checks {
                return o;
            }
            t.part_checks += 1;
            let caught = o != truth && (o & ROW_FAKE == 0 || self.chance(self.part_catch_ppm()));
            if caught { o | PART_CAUGHT } else { o }
        })
    }

    /// Parts per million of a faked row that a part check catches: one row of `rows`.
    fn part_catch_ppm(&self) -> u32 {
        1_000_000 / self.config.rows.max(1)
    }

    /// The probability that the verifier's part check catches one fake of the strategy.
    fn part_catch(&self) -> f64 {
        match (self.config.part_checks, self.strategy) {
            (false, _) => 0.0,
            (true, Strategy::FakeRow { .. }) => f64::from(self.part_catch_ppm()) / 1e6,
            (true, _) => 1.0,
        }
    }

    /// A replica from a fresh worker (re-leasing abandoned leases), or `None` when no worker is
    /// left.
    fn lease(
        &mut self,
        task: u64,
        role: Role,
        busy: &mut Vec<usize>,
        t: &mut JobTally,
    ) -> Option<(usize, u64)> {
        loop {
            let w = self.pick(busy)?;
            busy.push(w);
            if let Some(out) = self.produce(w, task, role, t) {
                return Some((w, out));
            }
        }
    }

    fn replica(&self, w: usize, out: u64) -> Replica {
        Replica {
            worker: self.addr[w],
            result_hash: B256::left_padding_from(&out.to_be_bytes()),
            signature: Bytes::new(),
            confidence: self.confidence[w],
            checked: if out & PART_CAUGHT != 0 {
                Checked::Malformed("a recomputed row differs".into())
            } else {
                Checked::Valid(Output::new(out))
            },
        }
    }

    /// Decides a task from `reps` (asking for more replicas while [`decide`] wants them) and
    /// applies the outcome to reputations and the job's tally.
    fn resolve(&mut self, task: u64, mut reps: Vec<(usize, u64)>, t: &mut JobTally) {
        let policy = Policy::new(self.config.redundancy);
        let mut busy: Vec<usize> = reps.iter().map(|r| r.0).collect();
        loop {
            let replicas: Vec<Replica> = reps.iter().map(|&(w, o)| self.replica(w, o)).collect();
            let verdict = decide(&replicas, &policy, &SimKind);
            if let Verdict::More { extra } = verdict {
                let mut got = 0;
                for _ in 0..extra {
                    if let Some(r) = self.lease(task, Role::Further, &mut busy, t) {
                        reps.push(r);
                        got += 1;
                    }
                }
                if got > 0 {
                    continue;
                }
                // Nobody left to ask: the task fails.
                self.apply(task, &reps, &replicas, &Verdict::Fail, t);
                return;
            }
            self.apply(task, &reps, &replicas, &verdict, t);
            return;
        }
    }

    fn apply(
        &mut self,
        task: u64,
        reps: &[(usize, u64)],
        replicas: &[Replica],
        verdict: &Verdict,
        t: &mut JobTally,
    ) {
        // One entry per replica, in replica order: `reps[i]` is `replicas[i]`.
        let conducts = reputation::conducts(replicas, verdict);
        let evidence = reputation::evidence(replicas, verdict);
        for (i, ((_, conduct), (_, ev))) in conducts.into_iter().zip(evidence).enumerate() {
            let w = reps[i].0;
            self.confidence[w] = reputation::update(self.confidence[w], conduct);
            self.streak[w] = replication::streak_after(self.streak[w], ev);
            if conduct == Conduct::Contradicted && !t.slashed.contains(&w) {
                t.slashed.push(w);
                if !self.is_strategic(w) || !self.strategy.cheats() {
                    t.honest_slashed += 1;
                }
            }
        }
        if let Verdict::Accept { quorum } = verdict {
            let out = reps[quorum[0]].1;
            if out != task {
                t.fakes_accepted += 1;
                t.fakes_accepted_replicated += 1;
            }
            let workers = quorum.iter().map(|&i| reps[i].0).collect::<Vec<_>>();
            t.paid_replicas += u64::from(replication::paid_replicas(
                workers.len(),
                self.config.redundancy,
            ));
            t.accepted.push((task, workers));
        }
    }

    fn job(&mut self, job: u64) -> Result<(JobTally, f64)> {
        let cfg = self.config;
        let mut t = JobTally {
            compute_cost: vec![0; self.n()],
            ..JobTally::default()
        };
        let secret = B256::from(U256::from(self.rng.next_u64()) << 64 | U256::from(job));
        let beacon = B256::from(U256::from(self.rng.next_u64()));
        let seed = replication::seed(secret, beacon);
        let mut provisional: Vec<(u64, usize, u64)> = Vec::new();
        for task in 0..u64::from(cfg.tasks) {
            let mut busy = Vec::new();
            let Some((w, out)) = self.lease(task, Role::First, &mut busy, &mut t) else {
                continue;
            };
            let Some(spot) = cfg.spot else {
                self.resolve(task, vec![(w, out)], &mut t);
                continue;
            };
            let task_hash = alloy::primitives::keccak256(task.to_be_bytes());
            let checked = replication::is_checked(seed, task_hash, spot.check_ppm);
            let trusted = self.trusted(w, &t);
            let lone = self.replica(w, out);
            match single(&lone, cfg.redundancy, trusted, checked) {
                Single::Provisional => provisional.push((task, w, out)),
                Single::Replicate { .. } => self.resolve(task, vec![(w, out)], &mut t),
            }
        }
        // Everything else is decided: accept the provisional results of workers still trusted.
        for (task, w, out) in provisional {
            match provisional_verdict(self.trusted(w, &t), cfg.redundancy) {
                Verdict::Accept { .. } => {
                    if out != task {
                        t.fakes_accepted += 1;
                    }
                    t.paid_replicas += 1;
                    t.accepted.push((task, vec![w]));
                }
                _ => {
                    t.final_phase += 1;
                    self.resolve(task, vec![(w, out)], &mut t);
                }
            }
        }
        // A fake is accepted only if none of the worker's fakes in the job is caught, and each
        // is compared with an honest replica with probability at least q (drawn, or replicated
        // for sure) and, independently, caught by the part check with probability r: so
        // P ≤ ((1 − q)(1 − r))^k for the k fakes it would have made uncaught. Collusion can
        // defeat a comparison: what it let through is added as observed.
        let q = cfg.spot.map_or(1.0, |s| s.q());
        let r = self.part_catch();
        let bound = if t.would_fake == 0 {
            0.0
        } else {
            ((1.0 - q) * (1.0 - r)).powf(t.would_fake as f64)
        };
        let p_job = bound
            + if t.fakes_accepted_replicated > 0 {
                1.0
            } else {
                0.0
            };
        self.settle(&t)?;
        Ok((t, p_job.min(1.0)))
    }

    /// Pays the job's accepted replicas from the escrow and slashes, with the services' formulas.
    fn settle(&mut self, t: &JobTally) -> Result<()> {
        let cfg = self.config;
        let mut costs: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
        for (_, workers) in &t.accepted {
            for &w in workers {
                costs.entry(w).or_default().push(TASK_COST);
            }
        }
        let workers: Vec<usize> = costs.keys().copied().collect();
        let units = workers
            .iter()
            .map(|w| {
                formulas::contribution(
                    &costs[w],
                    self.confidence[*w].clamp(1, formulas::FULL_CONFIDENCE),
                )
            })
            .collect::<gleaner_protocol::Result<Vec<u128>>>()?;
        let slots = u128::from(cfg.tasks) * u128::from(cfg.redundancy);
        let budget = slots
            .checked_mul(cfg.price)
            .ok_or(Error::Invalid("escrow overflows: lower the price".into()))?;
        if !workers.is_empty() {
            let pool = replication::replica_pool(
                budget,
                t.paid_replicas,
                u64::from(cfg.tasks),
                cfg.redundancy,
            )?;
            let (pay, _) = formulas::payouts(pool, &units)?;
            for (w, p) in workers.iter().zip(pay) {
                self.profit[*w] += i128::try_from(p).unwrap_or(i128::MAX);
            }
        }
        for (w, c) in t.compute_cost.iter().enumerate() {
            self.profit[w] -= i128::try_from(*c).unwrap_or(i128::MAX);
        }
        for &w in &t.slashed {
            self.profit[w] -= i128::try_from(cfg.slash).unwrap_or(i128::MAX);
        }
        Ok(())
    }

    fn run(mut self) -> Result<StrategyRow> {
        let cfg = self.config;
        let workers = self.n() as f64;
        let (mut computed, mut fakes, mut fakes_accepted) = (0u64, 0u64, 0u64);
        let mut part_checks = 0u64;
        let (mut p_sum, mut jobs_with_fake, mut slashes, mut honest_slashed) = (0.0, 0, 0u64, 0);
        let mut time = 0.0;
        let n = self.n();
        let (strategic, honest) = (n - self.strategic..n, 0..n - self.strategic);
        let mut per_job = Vec::with_capacity(cfg.jobs as usize);
        for job in 0..u64::from(cfg.jobs) {
            let before = (self.profit.clone(), self.leased.clone());
            let (t, p) = self.job(job)?;
            let delta = |w: std::ops::Range<usize>| {
                let p: i128 = w.clone().map(|i| self.profit[i] - before.0[i]).sum();
                let l: u64 = w.map(|i| self.leased[i] - before.1[i]).sum();
                ratio(p, l, cfg.price)
            };
            per_job.push(delta(strategic.clone()) - delta(honest.clone()));
            computed += t.computed;
            part_checks += t.part_checks;
            fakes += t.fakes;
            fakes_accepted += t.fakes_accepted;
            jobs_with_fake += u32::from(t.fakes_accepted > 0);
            p_sum += p;
            slashes += t.slashed.iter().filter(|&&w| self.is_strategic(w)).count() as u64;
            honest_slashed += t.honest_slashed;
            // Every replica runs on one of the workers, side by side; replicas asked for at the
            // end (a caught worker's provisional results) wait one more replica-time for the
            // rest; an abandoned lease holds its task for the lease time.
            let stall = if t.abandoned > 0 {
                f64::from(cfg.lease_timeout)
            } else {
                0.0
            };
            let tail = if t.final_phase > 0 { 1.0 } else { 0.0 };
            time += t.computed as f64 / workers + stall + tail;
        }
        let jobs = f64::from(cfg.jobs);
        let per = |w: std::ops::Range<usize>| {
            ratio(
                self.profit[w.clone()].iter().sum(),
                self.leased[w].iter().sum(),
                cfg.price,
            )
        };
        let (strategic, honest) = (per(strategic), per(honest));
        let mean = per_job.iter().sum::<f64>() / jobs;
        let var = per_job.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (jobs - 1.0).max(1.0);
        Ok(StrategyRow {
            strategy: self.strategy.name(),
            profit_per_task: strategic,
            honest_profit_per_task: honest,
            profit_per_task_vs_honest: strategic - honest,
            stderr: (var / jobs).sqrt(),
            p_fake_accepted_per_job: p_sum / jobs,
            jobs_with_fake_accepted: jobs_with_fake,
            fakes,
            fakes_accepted,
            overhead: (computed as f64 + part_checks as f64 / f64::from(cfg.rows.max(1)))
                / (jobs * f64::from(cfg.tasks)),
            settle_time: time / jobs,
            full_replication_time: f64::from(cfg.tasks) * f64::from(cfg.redundancy) / workers,
            slashes_per_job: slashes as f64 / jobs,
            honest_slashed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SimConfig {
        SimConfig {
            jobs: 30,
            tasks: 4_000,
            ..SimConfig::default()
        }
    }

    /// Clearly below zero: three standard errors under it.
    fn loses(r: &StrategyRow) -> bool {
        r.profit_per_task_vs_honest + 3.0 * r.stderr < 0.0
    }

    #[test]
    fn honest_workers_cost_little_more_than_the_work_and_are_never_slashed() {
        let rows = simulate(&small(), &[Strategy::Honest]).unwrap();
        let r = &rows[0];
        assert!(r.overhead < 1.10, "{r:?}");
        assert!(r.overhead > 1.0, "spot checks replicate some tasks: {r:?}");
        assert_eq!((r.fakes, r.fakes_accepted, r.honest_slashed), (0, 0, 0));
        assert!(r.profit_per_task_vs_honest.abs() < 0.05, "{r:?}");
        // Paid for what was computed: margin = price − cost per replica, 0.2 prices.
        assert!((r.honest_profit_per_task - 0.2).abs() < 0.01, "{r:?}");
    }

    #[test]
    fn every_cheating_strategy_loses_money() {
        let frequent: Vec<Strategy> = Strategy::all()
            .into_iter()
            .filter(|s| {
                !matches!(
                    s,
                    Strategy::Honest
                        | Strategy::Fake { ppm: 10_000 }
                        | Strategy::FakeRow { ppm: 10_000 }
                )
            })
            .collect();
        let rows = simulate(&small(), &frequent).unwrap();
        for r in &rows {
            assert!(loses(r), "{r:?}");
        }
        // Whoever fakes a lot is caught in every job, and its fakes are (almost) never accepted.
        for name in ["fake-1", "fake-when-unreplicated", "trust-then-cheat"] {
            let r = rows.iter().find(|r| r.strategy == name).unwrap();
            assert!(r.p_fake_accepted_per_job < 1e-6, "{r:?}");
            assert_eq!((r.fakes_accepted, r.honest_slashed), (0, 0), "{r:?}");
            assert!(r.slashes_per_job >= 0.99, "{r:?}");
        }
        // One fake in a hundred: rarely caught, but the slash outweighs what it saves, at the
        // defaults (10,000-task jobs, 5% checks).
        let rare = SimConfig {
            jobs: 100,
            ..SimConfig::default()
        };
        let rows = simulate(
            &rare,
            &[
                Strategy::Fake { ppm: 10_000 },
                Strategy::FakeRow { ppm: 10_000 },
            ],
        )
        .unwrap();
        for r in &rows {
            assert!(loses(r), "{r:?}");
        }
    }

    #[test]
    fn part_checks_catch_every_whole_fake_at_little_cost() {
        let whole: Vec<Strategy> = Strategy::all()
            .into_iter()
            .filter(|s| s.cheats() && !matches!(s, Strategy::FakeRow { .. }))
            .collect();
        let rows = simulate(&small(), &whole).unwrap();
        for r in &rows {
            assert!(r.fakes > 0, "{r:?}");
            assert_eq!(
                (r.fakes_accepted, r.jobs_with_fake_accepted),
                (0, 0),
                "{r:?}"
            );
            assert!(r.p_fake_accepted_per_job <= 1e-6, "{r:?}");
            assert_eq!(r.honest_slashed, 0, "{r:?}");
        }
        // The part check costs 1/rows of a replica per output: honest overhead stays ≤ 1.10.
        let honest = &simulate(&small(), &[Strategy::Honest]).unwrap()[0];
        let without = SimConfig {
            part_checks: false,
            ..small()
        };
        let bare = &simulate(&without, &[Strategy::Honest]).unwrap()[0];
        let expected = bare.overhead * (1.0 + 1.0 / 32.0);
        assert!(
            (honest.overhead - expected).abs() < 1e-9,
            "{honest:?} {bare:?}"
        );
        assert!(honest.overhead <= 1.10, "{honest:?}");
        // Without part checks, rare fakes get through: the gap part checks close.
        let r = &simulate(&without, &[Strategy::Fake { ppm: 10_000 }]).unwrap()[0];
        assert!(r.p_fake_accepted_per_job > 1e-3, "{r:?}");
        // One faked row is found with probability 1/rows per fake: rarer fakes may pass.
        let r = &simulate(&small(), &[Strategy::FakeRow { ppm: 1_000_000 }]).unwrap()[0];
        assert!(
            r.p_fake_accepted_per_job < 1e-6 && r.slashes_per_job > 0.99,
            "{r:?}"
        );
    }

    #[test]
    fn full_replication_computes_every_task_twice() {
        let cfg = SimConfig {
            spot: None,
            part_checks: false,
            ..small()
        };
        let r = &simulate(&cfg, &[Strategy::Honest]).unwrap()[0];
        assert!((r.overhead - 2.0).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn runs_are_reproducible_and_refuse_bad_settings() {
        let a = simulate(&small(), &[Strategy::Fake { ppm: 100_000 }]).unwrap();
        let b = simulate(&small(), &[Strategy::Fake { ppm: 100_000 }]).unwrap();
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        let bad = SimConfig {
            honest: 2,
            ..small()
        };
        assert!(simulate(&bad, &[Strategy::Honest]).is_err());
    }
}
