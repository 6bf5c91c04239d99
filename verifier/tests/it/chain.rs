use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::signers::local::PrivateKeySigner;
use gleaner_protocol::bindings::{GleanerToken, JobMarket, WorkerRegistry, job_status};
use gleaner_protocol::devnet::{NewJob, create_funded_job, fund_and_stake};
use gleaner_protocol::formulas;
use gleaner_protocol::report::ReplicaEntry;
use gleaner_test_utils::{DevChain, Options, e18};
use gleaner_verifier::{
    Error, JobContext, SettlementPlan, TaskRecord, build_report, evidence_hash, settle_and_slash,
};

/// A decided task: `quorum` workers agree, `liars` signed something else.
fn record(index: u32, hash: B256, quorum: &[Address], liars: &[Address]) -> TaskRecord {
    let mut replicas: Vec<ReplicaEntry> = quorum
        .iter()
        .map(|w| ReplicaEntry {
            worker: *w,
            result_hash: B256::repeat_byte(0xa0),
            signature: Bytes::from(vec![1; 65]),
            in_quorum: true,
        })
        .collect();
    replicas.extend(liars.iter().map(|w| ReplicaEntry {
        worker: *w,
        result_hash: B256::repeat_byte(0xbb),
        signature: Bytes::from(vec![2; 65]),
        in_quorum: false,
    }));
    let contradictions = (quorum.len()..quorum.len() + liars.len()).collect();
    TaskRecord {
        index,
        task_hash: hash,
        accepted_result: (!quorum.is_empty()).then(|| B256::repeat_byte(0xa0)),
        replicas,
        contradictions,
    }
}

#[tokio::test]
async fn settles_in_proportion_slashes_the_liar_and_never_twice() {
    let chain = DevChain::start(Options::default()).await;
    let (anvil, d, admin) = (&chain.anvil, chain.d, chain.admin().clone());
    let requester = admin.address();
    let provider = chain.provider(&admin);
    let market = JobMarket::new(d.market, &provider);
    let registry = WorkerRegistry::new(d.registry, &provider);
    let token = GleanerToken::new(d.token, &provider);

    // Three workers stake the minimum.
    let mut workers: Vec<Address> = Vec::new();
    for k in &anvil.keys()[1..4] {
        let w: PrivateKeySigner = k.clone().into();
        fund_and_stake(anvil.endpoint().as_str(), &d, &w, e18(100), e18(100))
            .await
            .unwrap();
        workers.push(w.address());
    }
    workers.sort();
    let [a, b, liar] = [workers[0], workers[1], workers[2]];

    // A job of 4 tasks, redundancy 2, budget 12 tokens.
    let budget = e18(12);
    let spec = B256::repeat_byte(0x51);
    let root = B256::repeat_byte(0x52);
    let job_id = create_funded_job(
        &provider,
        &d,
        requester,
        NewJob {
            spec,
            tasks: 4,
            redundancy: 2,
            budget,
            deadline: u64::MAX / 2,
        },
    )
    .await
    .unwrap();
    market
        .postTasks(job_id, root, 4)
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();

    // Tasks 0-2 accepted, 3 failed; the liar contradicts task 0 but is honest on task 2.
    let hashes: Vec<B256> = (0..4u8).map(|i| B256::repeat_byte(0x60 + i)).collect();
    let ctx = JobContext {
        chain_id: d.chain_id,
        market: d.market,
        job_id,
        spec_hash: spec,
        tasks_root: root,
        costs: vec![10, 20, 30, 40],
        task_hashes: hashes.clone(),
        spot_checks: None,
    };
    let records = vec![
        record(0, hashes[0], &[a, b], &[liar]),
        record(1, hashes[1], &[a, b], &[]),
        record(2, hashes[2], &[b, liar], &[]),
        TaskRecord {
            index: 3,
            task_hash: hashes[3],
            accepted_result: None,
            replicas: vec![],
            contradictions: vec![],
        },
    ];
    let min_stake = registry.minStake().call().await.unwrap();
    let conf = |w: Address| Some(if w == liar { 7_000 } else { 9_000 });
    let report = build_report(&ctx, &records, conf, min_stake / U256::from(10)).unwrap();
    assert_eq!(report.slashes.len(), 1);
    let plan = SettlementPlan::of(&report).unwrap();
    assert_eq!(plan.workers, vec![a, b, liar]);
    assert_eq!(
        plan.units,
        vec![
            U256::from(30 * 9_000),
            U256::from(60 * 9_000),
            U256::from(30 * 7_000)
        ]
    );

    // A report for another job spec is refused before anything is sent.
    let mut wrong = report.clone();
    wrong.spec_hash = B256::repeat_byte(9);
    let err = settle_and_slash(&provider, d.market, &wrong, 0)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");

    let out = settle_and_slash(&provider, d.market, &report, 0)
        .await
        .unwrap();
    assert!(out.settled_now);
    assert_eq!(
        market.getJob(job_id).call().await.unwrap().status,
        job_status::SETTLED
    );

    // Payouts in proportion to units; the requester gets the rest (unaccepted task, dust).
    let pool = formulas::pool(budget.to::<u128>(), 3, 4).unwrap();
    let units: Vec<u128> = plan.units.iter().map(|u| u.to::<u128>()).collect();
    let (pay, _) = formulas::payouts(pool, &units).unwrap();
    let mut paid = 0u128;
    for (w, p) in plan.workers.iter().zip(&pay) {
        assert_eq!(
            market.withdrawable(*w).call().await.unwrap(),
            U256::from(*p),
            "{w}"
        );
        paid += p;
    }
    assert_eq!(
        market.withdrawable(requester).call().await.unwrap(),
        U256::from(budget.to::<u128>() - paid)
    );

    // The liar lost a tenth of the minimum stake to the requester, with the evidence hash.
    let amount = min_stake / U256::from(10);
    assert_eq!(out.slashes.len(), 1);
    assert_eq!(out.slashes[0].taken, amount);
    assert_eq!(
        registry.stakeOf(liar).call().await.unwrap(),
        e18(100) - amount
    );
    let events = registry
        .Slashed_filter()
        .from_block(0)
        .query()
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    let ev = &events[0].0;
    assert_eq!((ev.worker, ev.jobId, ev.amount), (liar, job_id, amount));
    assert_eq!(ev.beneficiary, requester);
    assert_eq!(
        ev.evidenceHash,
        evidence_hash(report.hash(), &report.slashes[0])
    );
    assert_eq!(token.balanceOf(requester).call().await.unwrap(), amount);

    // Running again (a restart) neither settles nor slashes twice.
    let again = settle_and_slash(&provider, d.market, &report, 0)
        .await
        .unwrap();
    assert!(!again.settled_now);
    assert_eq!(again.settle_tx, out.settle_tx);
    assert_eq!(again.slashes[0].skipped, Some("already slashed"));
    assert_eq!(
        registry.stakeOf(liar).call().await.unwrap(),
        e18(100) - amount
    );
    assert_eq!(
        registry
            .Slashed_filter()
            .from_block(0)
            .query()
            .await
            .unwrap()
            .len(),
        1
    );
    // Settling the same job under another report is a conflict.
    let mut other = report.clone();
    other.slashes.clear();
    let err = settle_and_slash(&provider, d.market, &other, 0)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");
}

/// The verifier's beacon check: the job's commitment is found in the block of its
/// `postTasksCommitted` and nowhere else (an earlier block, an unknown hash, another job).
#[tokio::test]
async fn a_spot_check_beacon_is_only_the_commitments_block() {
    use alloy::eips::BlockNumberOrTag;
    use alloy::providers::Provider;
    use gleaner_verifier::commitment_in_block;
    let chain = DevChain::start(Options::default()).await;
    let (d, admin) = (chain.d, chain.admin().clone());
    let provider = chain.provider(&admin);
    let market = JobMarket::new(d.market, &provider);
    let new_job = || NewJob {
        spec: B256::repeat_byte(0x51),
        tasks: 4,
        redundancy: 2,
        budget: e18(12),
        deadline: u64::MAX / 2,
    };
    let job_id = create_funded_job(&provider, &d, admin.address(), new_job())
        .await
        .unwrap();
    let other_job = create_funded_job(&provider, &d, admin.address(), new_job())
        .await
        .unwrap();
    let commitment = gleaner_protocol::replication::commitment(B256::repeat_byte(7));
    let receipt = market
        .postTasksCommitted(job_id, B256::repeat_byte(0x52), 4, commitment)
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let beacon = receipt.block_hash.unwrap();
    let found = |job, hash| commitment_in_block(&provider, d.market, job, hash);
    assert_eq!(found(job_id, beacon).await.unwrap(), Some(commitment));
    assert_eq!(found(other_job, beacon).await.unwrap(), None);
    let before = provider
        .get_block_by_number(BlockNumberOrTag::Number(receipt.block_number.unwrap() - 1))
        .await
        .unwrap()
        .unwrap()
        .header
        .hash;
    assert_eq!(found(job_id, before).await.unwrap(), None);
    assert_eq!(
        found(job_id, B256::repeat_byte(0x99)).await.unwrap(),
        None,
        "an unknown block"
    );
}
