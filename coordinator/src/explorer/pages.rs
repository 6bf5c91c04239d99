//! The three pages (network, job, worker) and the error page, as server-rendered HTML from
//! plain data: what the coordinator says ([`super::source`]), what the chain says
//! ([`super::chain`]), the verified report and the audit. Rendering is pure; the handlers in
//! [`super`] gather the data.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use alloy::primitives::{Address, B256, U256};
use gleaner_protocol::eip712;
use gleaner_protocol::report::SettlementReport;

use super::chain::{ChainJob, ChainWorker, Ledger, Report, StakeChange, StakeNow, Totals, Verdict};
use super::html::{
    Source, ago, bars, duration, esc, hash, line_chart, money, page, per_minute_chart, percent,
    progress, short, source, worker_link,
};
use super::source::{Distance, JobData, NetworkData, THROUGHPUT_MINUTES, WorkerData};
use crate::JobState;
use crate::db::{ExplorerJob, ExplorerTask, ReplicaState, TaskState};

/// How money is written on a page: the token's decimals and symbol.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) symbol: String,
    pub(crate) decimals: u8,
}

impl Token {
    fn money(&self, amount: U256) -> String {
        money(amount, self.decimals, &self.symbol)
    }
}

/// A task's state on the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cell {
    Open,
    Leased,
    Agreed,
    Disputed,
    Failed,
}

impl Cell {
    const ALL: [Self; 5] = [
        Self::Open,
        Self::Leased,
        Self::Agreed,
        Self::Disputed,
        Self::Failed,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Leased => "leased",
            Self::Agreed => "agreed",
            Self::Disputed => "disputed",
            Self::Failed => "failed",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Self::Open => "waiting for a worker",
            Self::Leased => "replicas leased or submitted, not decided yet",
            Self::Agreed => "accepted: a quorum of replicas agreed",
            Self::Disputed => "replicas disagreed: the verifier asked for more",
            Self::Failed => "given up for good",
        }
    }

    /// The grid state of a task of a job with `redundancy`, `live` of whose replicas are
    /// leased or submitted.
    pub(crate) fn of(task: &ExplorerTask, redundancy: u16, live: usize) -> Self {
        match task.state {
            TaskState::Accepted => Self::Agreed,
            TaskState::Failed => Self::Failed,
            TaskState::Open if task.replicas_needed > u32::from(redundancy) => Self::Disputed,
            TaskState::Open if live > 0 => Self::Leased,
            TaskState::Open => Self::Open,
        }
    }
}

fn badge(text: &str) -> String {
    format!(
        r#"<span class="badge b-{}">{}</span>"#,
        esc(&text.replace(' ', "_")),
        esc(text)
    )
}

fn card(key: &str, value: &str, src: &str) -> String {
    format!(
        r#"<div class="card"><div class="k">{}</div><div class="v">{value}</div>{src}</div>"#,
        esc(key)
    )
}

fn verdict_badge(v: Option<&Verdict>) -> String {
    match v {
        Some(Verdict::Done(d)) if d.is_empty() => r#"<span class="badge b-ok">✓ OK</span>"#.into(),
        Some(Verdict::Done(d)) => format!(
            r#"<span class="badge b-bad">{} difference{}</span>"#,
            d.len(),
            if d.len() == 1 { "" } else { "s" }
        ),
        Some(Verdict::Failed(_)) => r#"<span class="badge">audit failed</span>"#.into(),
        Some(Verdict::ReportPending) => r#"<span class="badge">report pending</span>"#.into(),
        None => r#"<span class="muted">—</span>"#.into(),
    }
}

/// One job's line on the network page: the coordinator's row and the chain's record.
pub(crate) struct JobLine<'a> {
    pub(crate) id: U256,
    pub(crate) coord: Option<&'a ExplorerJob>,
    pub(crate) chain: Option<&'a ChainJob>,
    pub(crate) verdict: Option<Verdict>,
}

/// The network page.
pub(crate) fn network(
    market: Address,
    net: &NetworkData,
    ledger: &Ledger,
    totals: &Totals,
    lines: &[JobLine<'_>],
    token: &Token,
) -> String {
    let now = net.now;
    let active = net
        .workers
        .iter()
        .filter(|w| w.last_active.unwrap_or(w.last_seen).max(w.last_seen) + net.active_secs >= now)
        .count();
    let running = net
        .jobs
        .iter()
        .filter(|j| matches!(j.state, JobState::Registered | JobState::Posted))
        .count();
    let settled = lines
        .iter()
        .filter(|l| l.chain.is_some_and(|c| c.settled.is_some()))
        .count();
    let recent: u32 = net.throughput.iter().map(|(_, n)| n).sum();
    let mut b = String::new();
    let _ = write!(
        b,
        r#"<h1>Network</h1><p class="sub">Market <code>{}</code> · chain head block {} </p>"#,
        market, ledger.head
    );
    b.push_str(r#"<section class="cards">"#);
    b.push_str(&card(
        "Jobs",
        &format!(
            "{} <small>{running} running · {settled} settled</small>",
            lines.len()
        ),
        &source(
            Source::Coordinator,
            "jobs registered; settled from JobSettled",
        ),
    ));
    b.push_str(&card(
        "Active workers",
        &format!("{active} <small>of {}</small>", net.workers.len()),
        &source(
            Source::Coordinator,
            &format!("seen in the last {}", duration(net.active_secs)),
        ),
    ));
    b.push_str(&card(
        "Total paid",
        &token.money(ledger.total_paid),
        &source(Source::Chain, "Σ WorkerPaid.amount"),
    ));
    b.push_str(&card(
        "Total slashed",
        &token.money(ledger.total_slashed),
        &source(Source::Chain, "Σ Slashed.amount"),
    ));
    b.push_str(&card(
        "Staked",
        &token.money(totals.staked),
        &source(Source::Chain, "WorkerRegistry.totalStaked()"),
    ));
    b.push_str(&card(
        "Open escrow",
        &token.money(totals.open_escrow),
        &source(Source::Chain, "JobMarket.openEscrow()"),
    ));
    b.push_str("</section>");

    let _ = write!(
        b,
        r#"<section id="throughput"><h2>Throughput {}</h2><p class="muted">{recent} results in the last {THROUGHPUT_MINUTES} minutes.</p>{}</section>"#,
        source(Source::Coordinator, "results submitted per minute"),
        per_minute_chart(&net.throughput, now, THROUGHPUT_MINUTES)
    );

    let _ = write!(
        b,
        r#"<section id="jobs"><h2>Jobs {} {}</h2><table><thead><tr><th>Job</th><th>Kind</th><th>State</th><th>Tasks decided</th><th class="num">Escrow</th><th class="num">Paid</th><th>Time left</th><th>Audit</th></tr></thead><tbody>"#,
        source(Source::Coordinator, "state, kind, progress"),
        source(Source::Chain, "escrow, paid")
    );
    if lines.is_empty() {
        b.push_str(r#"<tr><td colspan="8" class="muted">No job yet.</td></tr>"#);
    }
    for l in lines {
        let kind = l.coord.map_or("—".to_owned(), |j| esc(&j.kind));
        let state = match (l.coord, l.chain) {
            (_, Some(c)) if c.settled.is_some() || c.refunded.is_some() => badge(c.status()),
            (Some(j), _) => badge(j.state.as_str()),
            (None, Some(c)) => badge(c.status()),
            (None, None) => String::new(),
        };
        let prog = l.coord.map_or_else(
            || r#"<span class="muted">not registered here</span>"#.to_owned(),
            |j| progress(j.accepted, j.failed, j.in_progress, j.task_count),
        );
        let created = l.chain.and_then(|c| c.created.as_ref());
        let escrow = created.map_or("—".into(), |c| token.money(c.ev.budget));
        let paid = l
            .chain
            .filter(|c| !c.paid.is_empty())
            .map_or("—".into(), |c| token.money(c.paid_total()));
        let deadline = created
            .map(|c| c.ev.deadline)
            .or(l.coord.map(|j| j.deadline));
        let left = match (deadline, l.chain.map(ChainJob::status)) {
            (_, Some("settled" | "cancelled" | "reclaimed" | "abandoned")) => "—".into(),
            (Some(d), _) if d > now => duration(d - now),
            (Some(_), _) => "past deadline".into(),
            (None, _) => "—".into(),
        };
        let _ = write!(
            b,
            r#"<tr data-job="{id}"><td><a href="/jobs/{id}">Job {id}</a></td><td>{kind}</td><td>{state}</td><td>{prog}</td><td class="num">{escrow}</td><td class="num">{paid}</td><td>{left}</td><td>{}</td></tr>"#,
            verdict_badge(l.verdict.as_ref()),
            id = l.id
        );
    }
    b.push_str("</tbody></table></section>");

    let _ = write!(
        b,
        r#"<section id="workers"><h2>Workers {} {}</h2><table><thead><tr><th>Worker</th><th>Device</th><th class="num">GFLOP/s</th><th>Last active</th><th class="num">Results (in quorum)</th><th class="num">Earned</th><th class="num">Slashed</th><th class="num">Stake</th></tr></thead><tbody>"#,
        source(Source::Coordinator, "device, activity, results"),
        source(Source::Chain, "earned, slashed, stake from events")
    );
    let mut addresses: BTreeSet<Address> = net.workers.iter().map(|w| w.address).collect();
    addresses.extend(
        ledger
            .workers
            .iter()
            .filter(|(_, w)| !w.stake_changes.is_empty() || !w.paid.is_empty())
            .map(|(a, _)| *a),
    );
    if addresses.is_empty() {
        b.push_str(r#"<tr><td colspan="8" class="muted">No worker yet.</td></tr>"#);
    }
    let empty = ChainWorker::default();
    for a in addresses {
        let w = net.workers.iter().find(|w| w.address == a);
        let c = ledger.workers.get(&a).unwrap_or(&empty);
        let device = w.map_or("—".into(), |w| {
            let cap = &w.capabilities;
            esc(&format!(
                "{} ({})",
                cap["adapter"].as_str().unwrap_or("?"),
                cap["backend"].as_str().unwrap_or("?")
            ))
        });
        let last = w.map_or("—".into(), |w| {
            ago(w.last_active.unwrap_or(w.last_seen), now)
        });
        let results = w.map_or("—".into(), |w| {
            format!("{} ({})", w.submitted, w.in_quorum)
        });
        let slashed = if c.slashes.is_empty() {
            r#"<span class="muted">0</span>"#.to_owned()
        } else {
            format!("{} {}", badge("slashed"), token.money(c.slashed()))
        };
        let _ = write!(
            b,
            r#"<tr><td>{}</td><td>{device}</td><td class="num">{}</td><td>{last}</td><td class="num">{results}</td><td class="num">{}</td><td class="num">{slashed}</td><td class="num">{}</td></tr>"#,
            worker_link(a),
            w.map_or("—".into(), |w| format!("{:.1}", w.gflops)),
            token.money(c.earned()),
            token.money(c.stake)
        );
    }
    b.push_str("</tbody></table></section>");
    page("Network", &b, true)
}

/// Everything a job page shows.
pub(crate) struct JobPage<'a> {
    pub(crate) id: U256,
    pub(crate) coord: Option<&'a JobData>,
    pub(crate) chain: Option<&'a ChainJob>,
    pub(crate) report: Option<&'a Report>,
    pub(crate) verdict: Option<&'a Verdict>,
    pub(crate) settled_at: Option<u64>,
    pub(crate) now: u64,
}

impl JobPage<'_> {
    /// Whether the page can still change (it polls itself while so).
    pub(crate) fn live(&self) -> bool {
        let done = self.chain.is_some_and(|c| {
            c.refunded.is_some()
                || (c.settled.is_some()
                    && matches!(self.verdict, Some(Verdict::Done(_)))
                    && matches!(self.report, Some(Report::Verified(_))))
        });
        let dead = self.coord.is_some_and(|d| {
            matches!(
                d.job.state,
                JobState::Cancelled | JobState::Expired | JobState::RootMismatch
            )
        });
        !(done || dead)
    }
}

/// The job page.
pub(crate) fn job(p: &JobPage<'_>, token: &Token) -> String {
    let id = p.id;
    let now = p.now;
    let mut b = String::new();
    let coord_state = p.coord.map(|d| d.job.state.as_str());
    let chain_status = p.chain.map_or("unknown", ChainJob::status);
    let created = p.chain.and_then(|c| c.created.as_ref());
    let _ = write!(
        b,
        r#"<h1>Job {id} <span id="job-state" data-state="{}">{}</span> {}</h1>"#,
        esc(chain_status),
        badge(chain_status),
        coord_state.map_or(String::new(), |s| format!(
            r#"<span class="muted" style="font-size:13px">coordinator: {}</span>"#,
            esc(s)
        ))
    );
    let mut sub = Vec::new();
    if let Some(d) = p.coord {
        sub.push(format!(
            "{} · {} tasks × {} replicas",
            esc(&d.job.kind),
            d.job.task_count,
            d.job.redundancy
        ));
    }
    if let Some(c) = created {
        sub.push(format!("requester {}", hash_addr(c.ev.requester)));
        let left = if p
            .chain
            .is_some_and(|c| c.settled.is_some() || c.refunded.is_some())
        {
            String::new()
        } else if c.ev.deadline > now {
            format!(" ({} left)", duration(c.ev.deadline - now))
        } else {
            " (past)".into()
        };
        sub.push(format!(
            "deadline {} UTC{left}",
            super::html::clock(c.ev.deadline)
        ));
    }
    if let Some(t) = p.settled_at {
        sub.push(format!("settled {}", ago(t, now)));
    }
    let _ = write!(b, r#"<p class="sub">{}</p>"#, sub.join(" · "));

    // Cards.
    b.push_str(r#"<section class="cards">"#);
    if let Some(d) = p.coord {
        let j = &d.job;
        b.push_str(&format!(
            r#"<div class="card big"><div class="k">Tasks decided</div><div class="v">{} <small>/ {}</small></div>{}{}</div>"#,
            j.accepted + j.failed,
            j.task_count,
            progress(j.accepted, j.failed, j.in_progress, j.task_count),
            source(Source::Coordinator, "task decisions")
        ));
    }
    if let Some(c) = created {
        b.push_str(&card(
            "Escrow",
            &token.money(c.ev.budget),
            &source(Source::Chain, "JobCreated.budget"),
        ));
    }
    if let Some(c) = p.chain {
        if let Some(s) = &c.settled {
            b.push_str(&card(
                "Paid to workers",
                &token.money(c.paid_total()),
                &source(Source::Chain, "Σ WorkerPaid.amount"),
            ));
            b.push_str(&card(
                "Refund",
                &token.money(s.ev.refund),
                &source(Source::Chain, "JobSettled.refund"),
            ));
            if !c.slashes.is_empty() {
                let taken = c
                    .slashes
                    .iter()
                    .fold(U256::ZERO, |t, x| t.saturating_add(x.ev.amount));
                b.push_str(&card(
                    "Slashed",
                    &format!(
                        "{} <small>{} worker{}</small>",
                        token.money(taken),
                        c.slashes.len(),
                        if c.slashes.len() == 1 { "" } else { "s" }
                    ),
                    &source(Source::Chain, "Σ Slashed.amount"),
                ));
            }
        } else if let Some(r) = &c.refunded {
            b.push_str(&card(
                "Refund",
                &token.money(r.ev.1),
                &source(Source::Chain, &format!("job {}", r.ev.0)),
            ));
        }
    }
    b.push_str(&format!(
        r#"<div class="card"><div class="k">Audit</div><div class="v">{}</div>{}</div>"#,
        verdict_badge(p.verdict),
        source(Source::Audit, "recomputed from chain events and the report")
    ));
    b.push_str("</section>");

    if let Some(d) = p.coord {
        tasks_section(&mut b, d);
    } else {
        b.push_str(r#"<section id="tasks"><h2>Tasks</h2><p class="muted">This coordinator did not register the job: no task view.</p></section>"#);
    }
    if let Some(c) = p.chain {
        payouts_section(&mut b, c, p.report, token);
    }
    audit_section(&mut b, p);
    if let Some(c) = p.chain {
        report_section(&mut b, c, p.report, token);
        txs_section(&mut b, c);
    }
    if let Some(d) = p.coord {
        task_details_section(&mut b, d);
    }
    page(&format!("Job {id}"), &b, p.live())
}

fn hash_addr(a: Address) -> String {
    format!(r#"<code title="{a}">{}</code>"#, short(&a.to_string()))
}

fn tasks_section(b: &mut String, d: &JobData) {
    let redundancy = d.job.redundancy;
    let live = |i: u32| {
        d.replicas
            .iter()
            .filter(|r| {
                r.replica.index == i
                    && matches!(
                        r.replica.state,
                        ReplicaState::Leased | ReplicaState::Submitted
                    )
            })
            .count()
    };
    let cells: Vec<Cell> = d
        .tasks
        .iter()
        .map(|t| Cell::of(t, redundancy, live(t.index)))
        .collect();
    let _ = write!(
        b,
        r#"<section id="tasks"><h2>Tasks {}</h2><div class="legend">"#,
        source(Source::Coordinator, "task states")
    );
    for c in Cell::ALL {
        let n = cells.iter().filter(|x| **x == c).count();
        let _ = write!(
            b,
            r#"<span title="{}"><i class="s-{} cell" style="width:11px;height:11px;display:inline-block"></i>{} {n}</span>"#,
            esc(c.help()),
            c.name(),
            c.name()
        );
    }
    b.push_str(r#"</div><div class="grid">"#);
    for (t, c) in d.tasks.iter().zip(&cells) {
        let _ = write!(
            b,
            r##"<a class="cell s-{}" href="#task-{i}" title="task {i}: {} — {}" data-task="{i}" data-state="{}">{i}</a>"##,
            c.name(),
            c.name(),
            esc(c.help()),
            c.name(),
            i = t.index
        );
    }
    b.push_str(
        r##"</div><p class="muted">Click a task for its replicas, verdict and distances (<a href="#task-details">all tasks</a>).</p></section>"##,
    );
}

fn task_details_section(b: &mut String, d: &JobData) {
    let redundancy = d.job.redundancy;
    let live = |i: u32| {
        d.replicas
            .iter()
            .filter(|r| {
                r.replica.index == i
                    && matches!(
                        r.replica.state,
                        ReplicaState::Leased | ReplicaState::Submitted
                    )
            })
            .count()
    };
    let cells: Vec<Cell> = d
        .tasks
        .iter()
        .map(|t| Cell::of(t, redundancy, live(t.index)))
        .collect();
    let _ = write!(
        b,
        r#"<section id="task-details"><h2>Task details {}</h2><table><thead><tr><th>Task</th><th>State</th><th>Verdict</th><th>Replicas: worker · lease · result · agrees · distance to the accepted output</th></tr></thead><tbody>"#,
        source(
            Source::Coordinator,
            "replicas, quorum, distances from the stored outputs"
        )
    );
    for (t, c) in d.tasks.iter().zip(&cells) {
        let verdict = match (t.state, c) {
            (TaskState::Accepted, _) => format!(
                "accepted {} by a quorum of {}",
                t.accepted_result.map(hash).unwrap_or_default(),
                t.quorum.len()
            ),
            (TaskState::Failed, _) => "failed: no quorum".into(),
            (_, Cell::Disputed) => format!(
                "disputed: {} replicas wanted (redundancy {redundancy})",
                t.replicas_needed
            ),
            _ => {
                let submitted = d
                    .replicas
                    .iter()
                    .filter(|r| {
                        r.replica.index == t.index && r.replica.state == ReplicaState::Submitted
                    })
                    .count();
                format!("{submitted} of {} results in", t.replicas_needed)
            }
        };
        let mut reps = String::new();
        for r in d.replicas.iter().filter(|r| r.replica.index == t.index) {
            let rr = &r.replica;
            let agrees = match (t.state, rr.result_hash) {
                (TaskState::Accepted, Some(_)) if t.quorum.contains(&rr.worker) => {
                    r#"<span class="yes">✓ in quorum</span>"#.to_owned()
                }
                (TaskState::Accepted | TaskState::Failed, Some(_)) => {
                    r#"<span class="no">✗ outside quorum</span>"#.to_owned()
                }
                _ => String::new(),
            };
            let distance = match r.distance {
                Some(Distance::Cosine { min }) => format!("min row cosine {min:.6}"),
                Some(Distance::Tokens {
                    differing,
                    outputs,
                    first,
                }) => match first {
                    None => "same tokens".into(),
                    Some((o, k)) => format!(
                        "{differing} of {outputs} outputs differ (first: output {o}, token {k})"
                    ),
                },
                Some(Distance::Gradient { rel_l2 }) => format!("gradient relative L2 {rel_l2:.2e}"),
                Some(Distance::Bytes { equal: true }) => "same bytes".into(),
                Some(Distance::Bytes { equal: false }) => "different bytes".into(),
                None => String::new(),
            };
            let _ = write!(
                reps,
                r#"<span class="rep">{} · {} · {} {agrees} <small class="muted">{}</small></span>"#,
                worker_link(rr.worker),
                esc(rr.state.as_str()),
                rr.result_hash.map(hash).unwrap_or_else(|| "—".into()),
                esc(&distance)
            );
        }
        if reps.is_empty() {
            reps = r#"<span class="muted">no replica yet</span>"#.into();
        }
        let _ = write!(
            b,
            r#"<tr id="task-{i}"><td>{i}</td><td>{}</td><td>{verdict}</td><td>{reps}</td></tr>"#,
            badge(c.name()),
            i = t.index
        );
    }
    b.push_str("</tbody></table></section>");
}

fn payouts_section(b: &mut String, c: &ChainJob, report: Option<&Report>, token: &Token) {
    let Some(s) = &c.settled else {
        let _ = write!(
            b,
            r#"<section id="payouts"><h2>Payouts {}</h2><p class="muted">Not settled yet: no payout on the chain.</p></section>"#,
            source(Source::Chain, "WorkerPaid, JobSettled")
        );
        return;
    };
    let distributable = s.ev.pool.saturating_sub(s.ev.fee);
    let report = match report {
        Some(Report::Verified(r)) => Some(r.as_ref()),
        _ => None,
    };
    let tasks_of = |w: Address| {
        report.map(|r| {
            r.tasks
                .iter()
                .filter(|t| {
                    t.accepted_result.is_some()
                        && t.replicas.iter().any(|x| x.worker == w && x.in_quorum)
                })
                .count()
        })
    };
    let _ = write!(
        b,
        r#"<section id="payouts"><h2>Payouts {} {}</h2>"#,
        source(Source::Chain, "WorkerPaid units and amounts"),
        source(Source::Report, "tasks per worker")
    );
    let mut rows = Vec::new();
    let mut paid = c.paid.clone();
    paid.sort_by_key(|p| std::cmp::Reverse(p.ev.amount));
    for p in &paid {
        rows.push((
            worker_link(p.ev.worker),
            p.ev.amount,
            format!(
                "{} · {}",
                token.money(p.ev.amount),
                percent(p.ev.amount, c.paid_total())
            ),
        ));
    }
    b.push_str(&bars(&rows));
    b.push_str(r#"<table id="payout-table"><thead><tr><th>Worker</th><th class="num">Tasks (report)</th><th class="num">Units</th><th class="num">Payout</th><th class="num">Share</th></tr></thead><tbody>"#);
    for p in &paid {
        let _ = write!(
            b,
            r#"<tr class="payout" data-worker="{w}" data-amount="{amount}" data-units="{units}"><td>{}</td><td class="num">{}</td><td class="num">{units}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            worker_link(p.ev.worker),
            tasks_of(p.ev.worker).map_or("—".into(), |n| n.to_string()),
            token.money(p.ev.amount),
            percent(p.ev.units, s.ev.totalUnits),
            w = p.ev.worker,
            amount = p.ev.amount,
            units = p.ev.units
        );
    }
    let total = c.paid_total();
    let created_budget = c.created.as_ref().map(|c| c.ev.budget);
    let sum = total.saturating_add(s.ev.fee).saturating_add(s.ev.refund);
    let _ = write!(
        b,
        r#"</tbody><tfoot><tr><th>Total</th><th></th><th class="num">{}</th><th class="num">{}</th><th></th></tr></tfoot></table>
<table class="money-sum"><tbody>
<tr><td>Accepted tasks</td><td class="num">{}</td><td class="muted">JobSettled.acceptedTasks</td></tr>
<tr><td>Pool (escrow of accepted tasks)</td><td class="num">{}</td><td class="muted">JobSettled.pool</td></tr>
<tr><td>Fee to the treasury</td><td class="num">{}</td><td class="muted">JobSettled.fee</td></tr>
<tr><td>Shared by workers (pool − fee)</td><td class="num">{}</td><td class="muted">Σ WorkerPaid = {}</td></tr>
<tr id="refund" data-amount="{refund}"><td>Refund to the requester</td><td class="num">{}</td><td class="muted">JobSettled.refund (unaccepted share and rounding)</td></tr>
<tr><td>Escrow = payouts + fee + refund</td><td class="num">{}</td><td>{}</td></tr>
</tbody></table>"#,
        s.ev.totalUnits,
        token.money(total),
        s.ev.acceptedTasks,
        token.money(s.ev.pool),
        token.money(s.ev.fee),
        token.money(distributable),
        token.money(total),
        token.money(s.ev.refund),
        token.money(sum),
        match created_budget {
            Some(b) if b == sum => r#"<span class="yes">✓ adds up to the escrow</span>"#.to_owned(),
            Some(b) => format!(r#"<span class="no">✗ escrow was {}</span>"#, token.money(b)),
            None => String::new(),
        },
        refund = s.ev.refund
    );
    if !c.slashes.is_empty() {
        let _ = write!(
            b,
            r#"<h3>Slashed {}</h3><table id="slash-table"><thead><tr><th>Worker</th><th class="num">Taken</th><th>Sent to</th><th>Transaction</th><th>Evidence</th></tr></thead><tbody>"#,
            source(Source::Chain, "Slashed events")
        );
        for sl in &c.slashes {
            let _ = write!(
                b,
                r##"<tr class="slash" data-worker="{w}" data-amount="{}"><td>{}</td><td class="num">{}</td><td>{}</td><td>{}</td><td><a href="/workers/{w}#slashes">the signed result and the accepted one →</a></td></tr>"##,
                sl.ev.amount,
                worker_link(sl.ev.worker),
                token.money(sl.ev.amount),
                hash_addr(sl.ev.beneficiary),
                hash(sl.tx),
                w = sl.ev.worker
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("</section>");
}

fn report_section(b: &mut String, c: &ChainJob, report: Option<&Report>, token: &Token) {
    let Some(s) = &c.settled else { return };
    let _ = write!(
        b,
        r#"<section id="report"><h2>Settlement report {}</h2>"#,
        source(
            Source::Report,
            "served by the coordinator, keccak256 checked against JobSettled.reportHash"
        )
    );
    match report {
        Some(Report::Verified(r)) => {
            let _ = write!(
                b,
                r#"<p><span class="yes">✓</span> keccak256 of the report = on-chain reportHash {}. {} tasks, {} accepted, {} worker lines, {} slash{}.</p>"#,
                hash(s.ev.reportHash),
                r.tasks.len(),
                r.tasks
                    .iter()
                    .filter(|t| t.accepted_result.is_some())
                    .count(),
                r.workers.len(),
                r.slashes.len(),
                if r.slashes.len() == 1 { "" } else { "es" }
            );
            spot_checks_paragraph(b, r);
            b.push_str(r#"<table><thead><tr><th>Worker</th><th class="num">Confidence</th><th class="num">Units (report)</th></tr></thead><tbody>"#);
            for w in &r.workers {
                let _ = write!(
                    b,
                    r#"<tr><td>{}</td><td class="num">{}.{:04}</td><td class="num">{}</td></tr>"#,
                    worker_link(w.worker),
                    w.confidence_bps / 10_000,
                    w.confidence_bps % 10_000,
                    w.units
                );
            }
            b.push_str("</tbody></table>");
            for sl in &r.slashes {
                let _ = write!(
                    b,
                    r##"<p>Slash: {} signed {} for task <a href="#task-{t}">{t}</a>; {} taken (report).</p>"##,
                    worker_link(sl.worker),
                    hash(sl.result_hash),
                    token.money(sl.amount),
                    t = sl.task_index
                );
            }
        }
        Some(Report::Unavailable(why)) => {
            let _ = write!(b, r#"<p class="no">{}</p>"#, esc(why));
        }
        None => b.push_str(r#"<p class="muted">Not fetched.</p>"#),
    }
    b.push_str("</section>");
}

/// A job with spot checks: its policy, the revealed seed, and what the draw gave (the audit
/// recomputes the draw from chain data; this page reads the verified report).
fn spot_checks_paragraph(b: &mut String, r: &SettlementReport) {
    let Some(sc) = &r.spot_checks else { return };
    let drawn = r
        .tasks
        .iter()
        .filter(|t| sc.seed.is_checked(t.task_hash, sc.policy.check_ppm))
        .count();
    let alone = r
        .tasks
        .iter()
        .filter(|t| {
            t.accepted_result.is_some() && t.replicas.iter().filter(|x| x.in_quorum).count() == 1
        })
        .count();
    let _ = write!(
        b,
        r#"<p id="spot-checks">Spot checks: {}.{:04}% of tasks drawn for a check, workers trusted after {} checked results, up to {} replicas per task. Seed: secret {} (committed before leasing, revealed at settlement) with beacon {} (the commitment's block). {drawn} of {} tasks drawn for a check; {alone} accepted on a single replica.</p>"#,
        sc.policy.check_ppm / 10_000,
        sc.policy.check_ppm % 10_000,
        sc.policy.trust_after,
        sc.redundancy,
        hash(sc.seed.secret),
        hash(sc.seed.beacon),
        r.tasks.len(),
    );
}

fn txs_section(b: &mut String, c: &ChainJob) {
    let _ = write!(
        b,
        r#"<section id="transactions"><h2>Transactions {}</h2><table><thead><tr><th class="num">Block</th><th>Transaction</th><th>Events</th></tr></thead><tbody>"#,
        source(Source::Chain, "every transaction with an event of this job")
    );
    for (block, tx, names) in &c.txs {
        let mut counted: Vec<String> = Vec::new();
        for n in names {
            counted.push(esc(n));
        }
        let workers = if names.contains(&"WorkerPaid") {
            format!(
                " ({} worker{})",
                c.paid.iter().filter(|p| p.tx == *tx).count(),
                if c.paid.iter().filter(|p| p.tx == *tx).count() == 1 {
                    ""
                } else {
                    "s"
                }
            )
        } else {
            String::new()
        };
        let _ = write!(
            b,
            r#"<tr><td class="num">{block}</td><td><code>{tx}</code></td><td>{}{workers}</td></tr>"#,
            counted.join(", ")
        );
    }
    b.push_str("</tbody></table></section>");
}

fn audit_section(b: &mut String, p: &JobPage<'_>) {
    let _ = write!(
        b,
        r#"<section id="audit"><h2>Audit {}</h2>"#,
        source(
            Source::Audit,
            "gleaner audit job: chain events + report, every payout recomputed"
        )
    );
    match p.verdict {
        Some(Verdict::Done(d)) if d.is_empty() => b.push_str(
            r#"<div class="verdict ok" id="verdict" data-verdict="OK">✓ OK — every payout, unit, root, signature and the refund recompute to what the chain holds.</div>"#,
        ),
        Some(Verdict::Done(d)) => {
            let _ = write!(
                b,
                r#"<div class="verdict bad" id="verdict" data-verdict="DIFFERENCES">✗ {} difference{}</div><ul>"#,
                d.len(),
                if d.len() == 1 { "" } else { "s" }
            );
            for x in d {
                let _ = write!(b, "<li>{}</li>", esc(x));
            }
            b.push_str("</ul>");
        }
        Some(Verdict::Failed(why)) => {
            let _ = write!(
                b,
                r#"<div class="verdict wait" id="verdict" data-verdict="FAILED">The audit could not run: {}</div>"#,
                esc(why)
            );
        }
        Some(Verdict::ReportPending) => b.push_str(
            r#"<div class="verdict wait" id="verdict" data-verdict="REPORT_PENDING">Settled on-chain; the verifier has not named its report to the coordinator yet (it does right after settling). The audit runs when it has.</div>"#,
        ),
        None => b.push_str(
            r#"<div class="verdict wait" id="verdict" data-verdict="PENDING">Not settled yet: the audit runs once JobSettled is on the chain.</div>"#,
        ),
    }
    b.push_str("</section>");
}

/// Everything a worker page shows.
pub(crate) struct WorkerPage<'a> {
    pub(crate) address: Address,
    pub(crate) coord: &'a WorkerData,
    pub(crate) chain: Option<&'a ChainWorker>,
    pub(crate) stake: &'a StakeNow,
    /// `(job id, settlement block time, report)` of settled jobs the worker is in, in order.
    pub(crate) reports: Vec<(U256, Option<u64>, std::sync::Arc<SettlementReport>)>,
    /// The report of each slashed job, with its on-chain reportHash.
    pub(crate) slash_reports: Vec<(U256, B256, Report)>,
    pub(crate) chain_id: u64,
    pub(crate) market: Address,
}

/// The worker page.
pub(crate) fn worker(p: &WorkerPage<'_>, token: &Token) -> String {
    let a = p.address;
    let now = p.coord.now;
    let empty = ChainWorker::default();
    let c = p.chain.unwrap_or(&empty);
    let mut b = String::new();
    let _ = write!(
        b,
        r#"<h1>Worker <code class="addr">{a}</code> {}</h1>"#,
        if c.slashes.is_empty() {
            String::new()
        } else {
            badge("slashed")
        }
    );
    if let Some(w) = &p.coord.worker {
        let cap = &w.capabilities;
        let kinds = cap["kinds"]
            .as_array()
            .map(|k| {
                k.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let _ = write!(
            b,
            r#"<p class="sub">{} ({}) · {:.1} GFLOP/s · runs {} · last sign-in {}</p>"#,
            esc(cap["adapter"].as_str().unwrap_or("?")),
            esc(cap["backend"].as_str().unwrap_or("?")),
            w.gflops,
            esc(&kinds),
            ago(w.last_seen, now)
        );
    } else {
        b.push_str(r#"<p class="sub">Never signed in to this coordinator.</p>"#);
    }
    b.push_str(r#"<section class="cards">"#);
    b.push_str(&card(
        "Stake",
        &token.money(p.stake.stake),
        &source(Source::Chain, "WorkerRegistry.getStake()"),
    ));
    let unlock = if p.stake.unbonding.is_zero() {
        String::new()
    } else {
        format!(" <small>unlocks {}</small>", ago(p.stake.unlock_at, now))
    };
    b.push_str(&card(
        "Unbonding",
        &format!("{}{unlock}", token.money(p.stake.unbonding)),
        &source(Source::Chain, "WorkerRegistry.getStake()"),
    ));
    b.push_str(&card(
        "Eligible",
        if p.stake.eligible {
            r#"<span class="yes">yes</span>"#
        } else {
            r#"<span class="no">no</span>"#
        },
        &source(Source::Chain, "WorkerRegistry.isEligible()"),
    ));
    b.push_str(&card(
        "Earned",
        &format!(r#"<span id="earned">{}</span>"#, token.money(c.earned())),
        &source(Source::Chain, "Σ WorkerPaid.amount"),
    ));
    b.push_str(&card(
        "Withdrawable",
        &token.money(p.stake.withdrawable),
        &source(Source::Chain, "JobMarket.withdrawable()"),
    ));
    b.push_str(&card(
        "Slashed",
        &format!(r#"<span id="slashed">{}</span>"#, token.money(c.slashed())),
        &source(Source::Chain, "Σ Slashed.amount"),
    ));
    if let Some(w) = &p.coord.worker {
        b.push_str(&card(
            "Tasks done",
            &format!("{} <small>of {} results</small>", w.in_quorum, w.submitted),
            &source(Source::Coordinator, "results in an accepted quorum"),
        ));
    }
    b.push_str("</section>");

    // Reputation over time.
    let points: Vec<(String, f64)> = p
        .reports
        .iter()
        .filter_map(|(job, _, r)| {
            r.workers
                .iter()
                .find(|w| w.worker == a)
                .map(|w| (format!("job {job}"), f64::from(w.confidence_bps) / 10_000.0))
        })
        .collect();
    let _ = write!(
        b,
        r#"<div class="two"><section id="reputation"><h2>Reputation over time {}</h2>{}</section>"#,
        source(
            Source::Report,
            "confidence P_i in each settled job's report"
        ),
        line_chart(&points)
    );
    let _ = write!(
        b,
        r#"<section id="earnings"><h2>Earnings {}</h2><table><thead><tr><th>Job</th><th class="num">Units</th><th class="num">Payout</th><th class="num">Block</th></tr></thead><tbody>"#,
        source(Source::Chain, "WorkerPaid")
    );
    if c.paid.is_empty() {
        b.push_str(r#"<tr><td colspan="4" class="muted">Nothing paid yet.</td></tr>"#);
    }
    for e in &c.paid {
        let _ = write!(
            b,
            r#"<tr><td><a href="/jobs/{j}">Job {j}</a></td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            e.ev.units,
            token.money(e.ev.amount),
            e.block,
            j = e.ev.jobId
        );
    }
    b.push_str("</tbody></table></section></div>");

    // Slashes with evidence.
    let _ = write!(
        b,
        r#"<section id="slashes"><h2>Slashes {} {}</h2>"#,
        source(Source::Chain, "Slashed events"),
        source(
            Source::Report,
            "evidence: the signed result and the accepted one"
        )
    );
    if c.slashes.is_empty() {
        b.push_str(r#"<p class="muted">Never slashed.</p>"#);
    }
    for s in &c.slashes {
        slash_evidence(&mut b, p, s, token);
    }
    b.push_str("</section>");

    // Stake history.
    let _ = write!(
        b,
        r#"<section id="stake-history"><h2>Stake history {}</h2><table><thead><tr><th class="num">Block</th><th>Event</th><th class="num">Amount</th><th>Transaction</th></tr></thead><tbody>"#,
        source(Source::Chain, "WorkerRegistry events")
    );
    for ch in &c.stake_changes {
        let (what, amount) = match &ch.ev {
            StakeChange::Staked { amount, stake } => (
                format!("staked (stake now {})", token.money(*stake)),
                *amount,
            ),
            StakeChange::Unstake { amount, unlock_at } => (
                format!("unstake requested, unlocks {}", ago(*unlock_at, now)),
                *amount,
            ),
            StakeChange::Withdrawn { amount } => ("stake withdrawn".into(), *amount),
            StakeChange::Slashed { job, amount } => (
                format!(r#"slashed for <a href="/jobs/{job}">job {job}</a>"#),
                *amount,
            ),
        };
        let _ = write!(
            b,
            r#"<tr><td class="num">{}</td><td>{what}</td><td class="num">{}</td><td>{}</td></tr>"#,
            ch.block,
            token.money(amount),
            hash(ch.tx)
        );
    }
    b.push_str("</tbody></table></section>");

    // Recent results.
    let _ = write!(
        b,
        r#"<section id="results"><h2>Recent results {}</h2><table><thead><tr><th>Job</th><th class="num">Task</th><th>Lease</th><th>Result</th><th>Accepted</th></tr></thead><tbody>"#,
        source(Source::Coordinator, "replicas")
    );
    if p.coord.replicas.is_empty() {
        b.push_str(r#"<tr><td colspan="5" class="muted">None.</td></tr>"#);
    }
    for r in p.coord.replicas.iter().take(100) {
        let accepted = p
            .coord
            .accepted
            .iter()
            .find(|(j, i, _, _)| *j == r.job_id && *i == r.index);
        let verdict = match (r.result_hash, accepted) {
            (Some(_), Some((_, _, _, true))) => {
                r#"<span class="yes">✓ in quorum</span>"#.to_owned()
            }
            (Some(_), Some((_, _, y, false))) => {
                format!(
                    r#"<span class="no">✗ outside quorum</span>, accepted {}"#,
                    hash(*y)
                )
            }
            _ => String::new(),
        };
        let _ = write!(
            b,
            r##"<tr><td><a href="/jobs/{j}">Job {j}</a></td><td class="num"><a href="/jobs/{j}#task-{i}">{i}</a></td><td>{}</td><td>{}</td><td>{verdict}</td></tr>"##,
            esc(r.state.as_str()),
            r.result_hash.map(hash).unwrap_or_else(|| "—".into()),
            j = r.job_id,
            i = r.index
        );
    }
    b.push_str("</tbody></table></section>");
    page(&format!("Worker {}", short(&a.to_string())), &b, true)
}

fn slash_evidence(
    b: &mut String,
    p: &WorkerPage<'_>,
    s: &super::chain::At<gleaner_protocol::bindings::WorkerRegistry::Slashed>,
    token: &Token,
) {
    let job = s.ev.jobId;
    let _ = write!(
        b,
        r#"<div class="evidence" data-job="{job}" data-amount="{}"><strong>Slashed {} for <a href="/jobs/{job}">job {job}</a></strong> in block {}, transaction {}; taken {} from stake and {} from unbonding, sent to {}.<dl>
<dt>Evidence hash (on chain)</dt><dd><code>{}</code></dd>"#,
        s.ev.amount,
        token.money(s.ev.amount),
        s.block,
        hash(s.tx),
        token.money(s.ev.fromStake),
        token.money(s.ev.fromUnbonding),
        hash_addr(s.ev.beneficiary),
        s.ev.evidenceHash
    );
    let report = p.slash_reports.iter().find(|(j, _, _)| *j == job);
    match report {
        Some((_, report_hash, Report::Verified(r))) => {
            let entry = r
                .slashes
                .iter()
                .find(|e| e.evidence_hash(*report_hash) == s.ev.evidenceHash);
            match entry {
                Some(e) => {
                    let task = r.tasks.iter().find(|t| t.index == e.task_index);
                    let signed = task.and_then(|t| {
                        t.replicas
                            .iter()
                            .find(|x| x.worker == e.worker && x.result_hash == e.result_hash)
                    });
                    let sig_ok = match (task, signed) {
                        // A `TaskResult` signature or a batch member's (`TaskResults` + proof).
                        (Some(t), Some(x)) => eip712::verify_result(
                            &eip712::domain(p.chain_id, p.market),
                            t.task_hash,
                            x.result_hash,
                            e.worker,
                            &x.signature,
                        )
                        .is_ok(),
                        _ => false,
                    };
                    let accepted = task.and_then(|t| t.accepted_result);
                    let _ = write!(
                        b,
                        r##"<dt>Evidence hash recomputed</dt><dd><span class="yes" id="evidence-match">✓ matches</span> keccak256(reportHash, worker, task, result)</dd>
<dt>Task</dt><dd><a href="/jobs/{job}#task-{t}">task {t}</a> · task hash {}</dd>
<dt>Result it signed</dt><dd><code>{}</code></dd>
<dt>Its signature (EIP-712 TaskResult, or TaskResults + proof)</dt><dd><code>{}</code> {}</dd>
<dt>Accepted result</dt><dd><code>{}</code> {}</dd>"##,
                        task.map(|t| hash(t.task_hash)).unwrap_or_default(),
                        e.result_hash,
                        signed.map_or("—".into(), |x| esc(&x.signature.to_string())),
                        if sig_ok {
                            r#"<span class="yes" id="signature-ok">✓ signed by this worker</span>"#
                        } else {
                            r#"<span class="no">✗ signature does not verify</span>"#
                        },
                        accepted.map_or("—".into(), |h| h.to_string()),
                        if accepted.is_some_and(|h| h != e.result_hash) {
                            r#"<span class="no">≠ what it signed</span>"#
                        } else {
                            ""
                        },
                        t = e.task_index
                    );
                }
                None => b.push_str(
                    r#"<dt>Evidence</dt><dd class="no">No slash in the report hashes to the on-chain evidence hash.</dd>"#,
                ),
            }
        }
        Some((_, _, Report::Unavailable(why))) => {
            let _ = write!(b, r#"<dt>Evidence</dt><dd class="no">{}</dd>"#, esc(why));
        }
        None => b.push_str(
            r#"<dt>Evidence</dt><dd class="muted">The job is not settled: no report.</dd>"#,
        ),
    }
    b.push_str("</dl></div>");
}

/// An error page: `status` with a short title and what to do.
pub(crate) fn error(status: u16, title: &str, detail: &str) -> String {
    page(
        title,
        &format!(
            r#"<div class="error" id="error" data-status="{status}"><p class="code">{status}</p><h1>{}</h1><p>{}</p><p><a href="/">Back to the network</a></p></div>"#,
            esc(title),
            esc(detail)
        ),
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(state: TaskState, needed: u32) -> ExplorerTask {
        ExplorerTask {
            index: 0,
            state,
            cost: "1".into(),
            replicas_needed: needed,
            accepted_result: None,
            quorum: Vec::new(),
        }
    }

    #[test]
    fn grid_states() {
        let cases = [
            (TaskState::Accepted, 2, 0, Cell::Agreed),
            (TaskState::Failed, 3, 0, Cell::Failed),
            (TaskState::Open, 3, 2, Cell::Disputed),
            (TaskState::Open, 2, 1, Cell::Leased),
            (TaskState::Open, 2, 0, Cell::Open),
        ];
        for (state, needed, live, want) in cases {
            assert_eq!(Cell::of(&task(state, needed), 2, live), want, "{state:?}");
        }
    }

    /// A settled job whose report the coordinator does not have yet reads "report pending",
    /// not "audit failed", and its page keeps polling.
    #[test]
    fn a_pending_report_is_not_a_failed_audit() {
        assert!(verdict_badge(Some(&Verdict::ReportPending)).contains("report pending"));
        let failed = Verdict::Failed("no JobCreated event".into());
        assert!(verdict_badge(Some(&failed)).contains("audit failed"));
        let page = |verdict| JobPage {
            id: U256::from(7),
            coord: None,
            chain: None,
            report: None,
            verdict: Some(verdict),
            settled_at: None,
            now: 0,
        };
        let pending = Verdict::ReportPending;
        let mut b = String::new();
        audit_section(&mut b, &page(&pending));
        assert!(b.contains(r#"data-verdict="REPORT_PENDING""#), "{b}");
        assert!(!b.contains("could not run"), "{b}");
        assert!(page(&pending).live());
        let mut b = String::new();
        audit_section(&mut b, &page(&failed));
        assert!(b.contains(r#"data-verdict="FAILED""#), "{b}");
    }

    #[test]
    fn error_pages_escape_their_detail() {
        let e = error(400, "Bad job id", "\"<img src=x>\" is not a number");
        assert!(e.contains("&quot;&lt;img src=x&gt;&quot;"));
        assert!(!e.contains("<img"));
        assert!(e.contains(r#"data-status="400""#));
        assert!(!e.contains("data-live"));
    }
}
