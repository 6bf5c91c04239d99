use alloy::primitives::{Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use gleaner_protocol::bindings::{JobMarket, WorkerRegistry, job_status};
use gleaner_protocol::devnet::{NewJob, create_funded_job, fund_and_stake};
use gleaner_protocol::formulas;
use gleaner_test_utils::{DevChain, Options, e18};

#[tokio::test]
async fn deploy_link_and_settle_match_the_formulas() {
    let chain = DevChain::start(Options::default()).await;
    let (anvil, d) = (&chain.anvil, chain.d);
    let admin_addr = chain.admin().address();
    let provider = chain.provider(chain.admin());
    assert_eq!(d.chain_id, 31337);
    let market = JobMarket::new(d.market, &provider);
    let registry = WorkerRegistry::new(d.registry, &provider);
    assert_eq!(market.registry().call().await.unwrap(), d.registry);
    assert_eq!(registry.market().call().await.unwrap(), d.market);

    // Three workers mint from the dev faucet and stake.
    let workers: Vec<PrivateKeySigner> = anvil.keys()[1..4]
        .iter()
        .map(|k| k.clone().into())
        .collect();
    for w in &workers {
        fund_and_stake(anvil.endpoint().as_str(), &d, w, e18(1_000), e18(100))
            .await
            .unwrap();
        assert!(registry.isEligible(w.address()).call().await.unwrap());
    }

    // A job of 4 tasks, 3 accepted; units 1000/1500/2500.
    let budget = e18(10);
    let job = create_funded_job(
        &provider,
        &d,
        admin_addr,
        NewJob {
            spec: B256::repeat_byte(1),
            tasks: 4,
            redundancy: 2,
            budget,
            deadline: u64::MAX / 2,
        },
    )
    .await
    .unwrap();
    market
        .postTasks(job, B256::repeat_byte(2), 4)
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let mut ws: Vec<Address> = workers.iter().map(|w| w.address()).collect();
    ws.sort();
    let units = vec![U256::from(1000), U256::from(1500), U256::from(2500)];
    market
        .settle(job, 3, ws.clone(), units.clone(), B256::repeat_byte(3))
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert_eq!(
        market.getJob(job).call().await.unwrap().status,
        job_status::SETTLED
    );

    let pool = formulas::pool(budget.to::<u128>(), 3, 4).unwrap();
    let (pay, _dust) = formulas::payouts(
        pool,
        &units.iter().map(|u| u.to::<u128>()).collect::<Vec<_>>(),
    )
    .unwrap();
    for (w, p) in ws.iter().zip(pay) {
        assert_eq!(
            market.withdrawable(*w).call().await.unwrap(),
            U256::from(p),
            "worker {w}"
        );
    }
}
