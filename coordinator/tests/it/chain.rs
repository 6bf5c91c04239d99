//! The chain watcher against anvil: root posted exactly once, cancellation, reorgs.

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{B256, U256};
use alloy::providers::DynProvider;
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use alloy::rpc::types::anvil::ReorgOptions;
use alloy::signers::local::PrivateKeySigner;
use axum::http::StatusCode;
use gleaner_coordinator::{
    ApiSettings, AppState, JobState, RpcChain, Store, Watcher, WatcherConfig,
};
use gleaner_protocol::api::JobStatus;
use gleaner_protocol::bindings::{GleanerToken, JobMarket, confirm, job_status};
use gleaner_protocol::merkle::MerkleTree;
use gleaner_protocol::task::{JobManifest, TaskInput};
use gleaner_test_utils::{DevChain, Options, Roles};

use crate::common::{Harness, manifest, register_body_for};

/// anvil with the contracts, a coordinator's API state reading it, and an admin holding
/// `budget` tokens approved to the market.
struct Fixture {
    chain: DevChain,
    provider: DynProvider,
    admin: PrivateKeySigner,
    coordinator: PrivateKeySigner,
    state: AppState,
    h: Harness,
}

impl Fixture {
    async fn start(roles: Roles, budget: U256) -> Self {
        let chain = DevChain::start(Options {
            min_stake: U256::from(1),
            roles,
            ..Options::default()
        })
        .await;
        let admin = chain.admin().clone();
        let coordinator = chain.keys[1].clone();
        let provider = chain.provider(&admin);
        chain.faucet(admin.address(), budget).await;
        let token = GleanerToken::new(chain.d.token, &provider);
        confirm(
            "approve",
            token.approve(chain.d.market, budget).send().await,
        )
        .await
        .unwrap();
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let (rpc, info) = RpcChain::connect(&chain.anvil.endpoint(), chain.d.market, 1 << 20)
            .await
            .unwrap();
        let state = AppState::new(store, Arc::new(rpc), info, ApiSettings::default());
        let h = Harness {
            state: state.clone(),
            chain: Arc::default(),
            verifier: admin.clone(),
        };
        Self {
            chain,
            provider,
            admin,
            coordinator,
            state,
            h,
        }
    }

    /// Creates `m`'s job on-chain (redundancy `r`, `budget`) and registers it; its id.
    async fn create_and_register(&self, m: &JobManifest, r: u16, budget: U256) -> U256 {
        let market = JobMarket::new(self.chain.d.market, &self.provider);
        let tasks = m.tasks.len() as u32;
        let spec = m.spec_hash();
        confirm(
            "createJob",
            market
                .createJob(spec, tasks, r, budget, u64::MAX / 4)
                .send()
                .await,
        )
        .await
        .unwrap();
        let id = market.jobCount().call().await.unwrap();
        let d = &self.chain.d;
        let body = register_body_for(&self.admin, id.to(), m, d.chain_id, d.market);
        let (s, reply) = self.h.json("POST", "/v1/jobs", None, &body).await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&reply));
        id
    }
}

#[tokio::test]
async fn watcher_posts_roots_once_and_survives_a_reorg() {
    let budget = U256::from(1_000_000u64);
    let f = Fixture::start(Roles::Separate, budget * U256::from(4)).await;
    let (anvil, d, provider) = (&f.chain.anvil, f.chain.d, &f.provider);
    let (state, h, coordinator) = (&f.state, &f.h, &f.coordinator);
    let market = JobMarket::new(d.market, provider);

    // Two jobs on-chain, registered with the coordinator.
    let mut ids = Vec::new();
    let mut manifests = Vec::new();
    for j in 0..2u64 {
        let input = h.put_blob(format!("text {j}\n").as_bytes()).await;
        let m = manifest(vec![
            TaskInput {
                input_hash: input,
                cost: 5,
            },
            TaskInput {
                input_hash: input,
                cost: 6,
            },
        ]);
        let id = f.create_and_register(&m, 2, budget).await;
        ids.push(id);
        manifests.push(m);
    }
    // The requester cancels the second before the root is posted: cancel it on-chain first.
    market
        .cancel(ids[1])
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();

    let watcher = Watcher::new(
        state.store().clone(),
        state.work_notifier(),
        WatcherConfig {
            poll_interval: Duration::from_millis(50),
            ..WatcherConfig::new(anvil.endpoint(), d.market)
        },
        coordinator.clone(),
    )
    .unwrap()
    .with_metrics(state.shared_metrics());
    // Poll a few times: one postTasks, then the job becomes posted; never a second post.
    for _ in 0..4 {
        watcher.poll().await.unwrap();
    }
    let j0 = market.getJob(ids[0]).call().await.unwrap();
    assert_eq!(j0.status, job_status::POSTED);
    assert_eq!(
        j0.tasksRoot,
        MerkleTree::from_task_hashes(&manifests[0].task_hashes(ids[0])).root()
    );
    assert_eq!(
        state.store().job(ids[0]).await.unwrap().unwrap().state,
        "posted"
    );
    assert_eq!(
        state.store().job(ids[1]).await.unwrap().unwrap().state,
        "cancelled"
    );
    let coord_nonce = provider
        .get_transaction_count(coordinator.address())
        .await
        .unwrap();
    assert_eq!(coord_nonce, 1, "postTasks sent exactly once");
    let text = String::from_utf8(h.get("/metrics", None).await.1).unwrap();
    assert!(
        text.contains("gleaner_coordinator_roots_posted_total 1"),
        "{text}"
    );

    // A reorg replaces the 2 empty blocks on top with other ones: the stored hashes no longer match,
    // the watcher rolls back and re-ingests.
    let events_before = state.store().chain_event_count().await.unwrap();
    provider.anvil_mine(Some(2), None).await.unwrap();
    watcher.poll().await.unwrap();
    provider
        .anvil_reorg(ReorgOptions {
            depth: 2,
            tx_block_pairs: vec![],
        })
        .await
        .unwrap();
    watcher.poll().await.unwrap();
    let text = String::from_utf8(h.get("/metrics", None).await.1).unwrap();
    assert!(
        text.contains("gleaner_coordinator_chain_reorgs_total 1"),
        "{text}"
    );
    let blocks = state.store().chain_blocks(1).await.unwrap();
    let head = provider.get_block_number().await.unwrap();
    let head_hash = provider
        .get_block_by_number(head.into())
        .await
        .unwrap()
        .unwrap()
        .header
        .hash;
    assert_eq!(blocks[0], (head, head_hash));
    // Re-ingested to match the chain: anvil's reorg may also drop the postTasks block, and
    // then the job goes back to `registered` (derived afresh from the chain).
    let stored = state.store().chain_event_count().await.unwrap();
    let j0_state = state.store().job(ids[0]).await.unwrap().unwrap().state;
    let on_chain = market.getJob(ids[0]).call().await.unwrap().status;
    if stored == events_before {
        assert_eq!(
            (on_chain, j0_state.as_str()),
            (job_status::POSTED, "posted")
        );
    } else {
        assert_eq!(stored + 1, events_before);
        assert_eq!(
            (on_chain, j0_state.as_str()),
            (job_status::OPEN, "registered")
        );
    }
}

/// Someone else posts a root for a registered job before the coordinator does: the watcher
/// records `root_mismatch`, a terminal state the API reports, and never posts its own.
#[tokio::test]
async fn a_foreign_root_on_chain_ends_the_job_as_root_mismatch() {
    // The admin also holds the coordinator role here, so it can post a root of its own.
    let budget = U256::from(1_000_000u64);
    let f = Fixture::start(Roles::Admin, budget).await;
    let (anvil, d, provider) = (&f.chain.anvil, f.chain.d, &f.provider);
    let (state, h, coordinator) = (&f.state, &f.h, &f.coordinator);
    let market = JobMarket::new(d.market, provider);
    let input = h.put_blob(b"text\n").await;
    let m = manifest(vec![TaskInput {
        input_hash: input,
        cost: 5,
    }]);
    let id = f.create_and_register(&m, 1, budget).await;
    market
        .postTasks(id, B256::repeat_byte(0x66), 1)
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();

    let watcher = Watcher::new(
        state.store().clone(),
        state.work_notifier(),
        WatcherConfig::new(anvil.endpoint(), d.market),
        coordinator.clone(),
    )
    .unwrap();
    for _ in 0..2 {
        watcher.poll().await.unwrap();
    }
    let (s, body) = h.get(&format!("/v1/jobs/{id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    let status: JobStatus = serde_json::from_slice(&body).unwrap();
    assert_eq!(status.state, JobState::RootMismatch);
    assert!(status.state.is_terminal());
    let coordinator_nonce = provider
        .get_transaction_count(coordinator.address())
        .await
        .unwrap();
    assert_eq!(coordinator_nonce, 0, "the coordinator posted nothing");
}

/// A worker slashed below the minimum stake loses its session and leases as soon as the
/// watcher sees the slash: its old token is refused, another worker's is not.
#[tokio::test]
async fn a_slashed_worker_is_signed_out_at_once() {
    let f = Fixture::start(Roles::Admin, U256::from(1_000u64)).await;
    let (cheat, honest) = (f.chain.keys[5].clone(), f.chain.keys[6].clone());
    let stake = U256::from(10u64);
    f.chain
        .stake(&[cheat.clone(), honest.clone()], stake, stake)
        .await;
    let sign_in = |w: &alloy::signers::local::PrivateKeySigner, nonce: u64| {
        let d = &f.chain.d;
        let domain = gleaner_protocol::eip712::domain(d.chain_id, d.market);
        let expiry = crate::common::now() + 300;
        gleaner_client::sign::sign_in(w, &domain, crate::common::caps(1.0), nonce, expiry).unwrap()
    };
    let session = |w: &alloy::signers::local::PrivateKeySigner| {
        let body = sign_in(w, 1);
        let h = &f.h;
        async move {
            let (s, reply) = h.json("POST", "/v1/sign-in", None, &body).await;
            assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&reply));
            serde_json::from_slice::<gleaner_protocol::api::Session>(&reply)
                .unwrap()
                .token
        }
    };
    let cheat_token = session(&cheat).await;
    let honest_token = session(&honest).await;
    let lease = |token: String| {
        let h = &f.h;
        async move {
            h.json(
                "POST",
                "/v1/leases",
                Some(&token),
                &gleaner_protocol::api::LeaseRequest { wait_ms: 0 },
            )
            .await
            .0
        }
    };
    assert_eq!(lease(cheat_token.clone()).await, StatusCode::NO_CONTENT);

    // The verifier (here the admin) slashes the whole stake.
    let registry = gleaner_protocol::bindings::WorkerRegistry::new(f.chain.d.registry, &f.provider);
    confirm(
        "slash",
        registry
            .slash(cheat.address(), stake, U256::ZERO, B256::repeat_byte(1))
            .send()
            .await,
    )
    .await
    .unwrap();
    let watcher = Watcher::new(
        f.state.store().clone(),
        f.state.work_notifier(),
        WatcherConfig::new(f.chain.anvil.endpoint(), f.chain.d.market),
        f.coordinator.clone(),
    )
    .unwrap();
    watcher.poll().await.unwrap();

    assert_eq!(lease(cheat_token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(lease(honest_token).await, StatusCode::NO_CONTENT);
    // Signing in again is refused too: the chain says it is not eligible.
    let body = sign_in(&cheat, 2);
    assert_eq!(
        f.h.json("POST", "/v1/sign-in", None, &body).await.0,
        StatusCode::FORBIDDEN
    );
}
