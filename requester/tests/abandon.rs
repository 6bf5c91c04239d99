//! A chunked settlement begun and never finalised does not lock the escrow: past the deadline
//! and the grace period, `reclaim` abandons it and the requester gets back what no chunk paid.

use alloy::primitives::{B256, U256};
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use gleaner_protocol::bindings::{GleanerToken, JobMarket, confirm, job_status};
use gleaner_protocol::devnet::{NewJob, create_funded_job};
use gleaner_test_utils::{DevChain, Options, e18};

#[tokio::test]
async fn reclaim_abandons_a_settlement_left_unfinished() {
    let chain = DevChain::start(Options::default()).await;
    let admin = chain.admin().clone(); // requester, coordinator and verifier here
    let worker = chain.keys[1].clone();
    chain
        .stake(std::slice::from_ref(&worker), e18(100), e18(100))
        .await;
    let p = chain.provider(&admin);
    let market = JobMarket::new(chain.d.market, &p);
    let budget = e18(10);
    let now = p
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await
        .unwrap()
        .unwrap()
        .header
        .timestamp;
    let deadline = now + 3_600;
    let job = create_funded_job(
        &p,
        &chain.d,
        admin.address(),
        NewJob {
            spec: B256::repeat_byte(1),
            tasks: 2,
            redundancy: 1,
            budget,
            deadline,
        },
    )
    .await
    .unwrap();
    let root = B256::repeat_byte(2);
    confirm("postTasks", market.postTasks(job, root, 2).send().await)
        .await
        .unwrap();
    // Both tasks accepted, 10 units in all; one chunk pays the worker 4 of them, then nothing.
    confirm(
        "beginSettlement",
        market
            .beginSettlement(job, 2, U256::from(10), B256::repeat_byte(3))
            .send()
            .await,
    )
    .await
    .unwrap();
    confirm(
        "settleChunk",
        market
            .settleChunk(job, vec![worker.address()], vec![U256::from(4)])
            .send()
            .await,
    )
    .await
    .unwrap();
    let paid = market.withdrawable(worker.address()).call().await.unwrap();
    assert_eq!(paid, budget * U256::from(4) / U256::from(10));

    // Within the grace period the escrow stays for the verifier to finish.
    p.anvil_set_next_block_timestamp(deadline + 1)
        .await
        .unwrap();
    p.anvil_mine(Some(1), None).await.unwrap();
    assert!(
        gleaner_requester::reclaim(&p, chain.d.market, job)
            .await
            .is_err()
    );

    let grace = market.SETTLEMENT_GRACE().call().await.unwrap();
    p.anvil_set_next_block_timestamp(deadline + grace + 1)
        .await
        .unwrap();
    p.anvil_mine(Some(1), None).await.unwrap();
    // A fresh provider: the refused attempt above advanced the cached nonce of `p`.
    let p = chain.provider(&admin);
    let token = GleanerToken::new(chain.d.token, &p);
    let before = token.balanceOf(admin.address()).call().await.unwrap();
    gleaner_requester::reclaim(&p, chain.d.market, job)
        .await
        .unwrap();
    let after = token.balanceOf(admin.address()).call().await.unwrap();
    assert_eq!(after - before, budget - paid);
    let market = JobMarket::new(chain.d.market, &p);
    assert_eq!(
        market.getJob(job).call().await.unwrap().status,
        job_status::RECLAIMED
    );
    // The worker keeps what it was paid.
    assert_eq!(
        market.withdrawable(worker.address()).call().await.unwrap(),
        paid
    );
}
