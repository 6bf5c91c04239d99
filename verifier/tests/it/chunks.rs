use alloy::primitives::{B256, Bytes, U256};
use alloy::providers::ext::AnvilApi;
use alloy::signers::local::PrivateKeySigner;
use gleaner_protocol::bindings::{JobMarket, job_status};
use gleaner_protocol::devnet::{NewJob, create_funded_job, fund_and_stake};
use gleaner_protocol::formulas;
use gleaner_protocol::report::ReplicaEntry;
use gleaner_test_utils::{DevChain, Options};
use gleaner_verifier::{
    JobContext, MAX_SETTLEMENT_CHUNK, SettlementPlan, TaskRecord, build_report, settle_and_slash,
};

const WORKERS: usize = 260;

/// More workers than one call can pay: the chunked path, fresh and resumed after a crash.
#[tokio::test]
async fn chunked_settlement_pays_everyone_and_resumes() {
    let stake = U256::from(1_000u64);
    let chain = DevChain::start(Options {
        min_stake: stake,
        ..Options::default()
    })
    .await;
    let (anvil, d, admin) = (&chain.anvil, chain.d, chain.admin().clone());
    let requester = admin.address();
    let provider = chain.provider(&admin);
    let market = JobMarket::new(d.market, &provider);

    // Workers set up in parallel, each from its own key (faucet, approve, stake).
    let mut setup = tokio::task::JoinSet::new();
    for _ in 0..WORKERS {
        let w = PrivateKeySigner::random();
        provider
            .anvil_set_balance(w.address(), U256::from(10u64).pow(U256::from(18)))
            .await
            .unwrap();
        let url = anvil.endpoint_url();
        setup.spawn(async move {
            fund_and_stake(url.as_str(), &d, &w, stake, stake)
                .await
                .unwrap();
            w.address()
        });
    }
    let mut workers = setup.join_all().await;
    workers.sort();

    // Task i is computed by worker i alone (redundancy 1), cost i + 1.
    let budget = U256::from(10u64).pow(U256::from(21));
    let n = WORKERS as u32;
    let records: Vec<TaskRecord> = workers
        .iter()
        .enumerate()
        .map(|(i, w)| TaskRecord {
            index: i as u32,
            task_hash: B256::from(U256::from(i + 1)),
            accepted_result: Some(B256::repeat_byte(1)),
            replicas: vec![ReplicaEntry {
                worker: *w,
                result_hash: B256::repeat_byte(1),
                signature: Bytes::new(),
                in_quorum: true,
            }],
            contradictions: vec![],
        })
        .collect();
    let mut before = vec![U256::ZERO; WORKERS];
    for (round, spec_byte) in [(0, 0x51u8), (1, 0x61)] {
        let spec = B256::repeat_byte(spec_byte);
        let root = B256::repeat_byte(spec_byte + 1);
        let job_id = create_funded_job(
            &provider,
            &d,
            requester,
            NewJob {
                spec,
                tasks: n,
                redundancy: 1,
                budget,
                deadline: u64::MAX / 2,
            },
        )
        .await
        .unwrap();
        market
            .postTasks(job_id, root, n)
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        let ctx = JobContext {
            chain_id: d.chain_id,
            market: d.market,
            job_id,
            spec_hash: spec,
            tasks_root: root,
            costs: (1..=WORKERS as u64).collect(),
            task_hashes: records.iter().map(|r| r.task_hash).collect(),
            spot_checks: None,
        };
        let report = build_report(&ctx, &records, |_| Some(9_000), U256::ZERO).unwrap();
        let plan = SettlementPlan::of(&report).unwrap();
        assert!(!plan.fits_one_call());
        if round == 1 {
            // A verifier that crashed after its first chunk.
            market
                .beginSettlement(
                    job_id,
                    plan.accepted_tasks,
                    plan.total_units,
                    plan.report_hash,
                )
                .send()
                .await
                .unwrap()
                .get_receipt()
                .await
                .unwrap();
            market
                .settleChunk(
                    job_id,
                    plan.workers[..100].to_vec(),
                    plan.units[..100].to_vec(),
                )
                .send()
                .await
                .unwrap()
                .get_receipt()
                .await
                .unwrap();
            assert_eq!(
                market.getJob(job_id).call().await.unwrap().status,
                job_status::SETTLING
            );
        }
        let out = settle_and_slash(&provider, d.market, &report, 0)
            .await
            .unwrap();
        assert!(out.settled_now);
        assert_eq!(
            market.getJob(job_id).call().await.unwrap().status,
            job_status::SETTLED
        );
        let units: Vec<u128> = plan.units.iter().map(|u| u.to::<u128>()).collect();
        let (pay, _) = formulas::payouts(budget.to::<u128>(), &units).unwrap();
        for (i, w) in plan.workers.iter().enumerate() {
            let now = market.withdrawable(*w).call().await.unwrap();
            assert_eq!(
                now - before[i],
                U256::from(pay[i]),
                "round {round}, worker {i}"
            );
            before[i] = now;
        }
        assert!(
            !settle_and_slash(&provider, d.market, &report, 0)
                .await
                .unwrap()
                .settled_now
        );
    }
    const { assert!(WORKERS > MAX_SETTLEMENT_CHUNK) };
}
