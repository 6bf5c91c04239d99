//! The explorer's queries on SQLite and on a real PostgreSQL: the same rows from both.

use alloy::primitives::{Address, B256, Bytes, U256};
use gleaner_coordinator::{JobRow, JobState, NewTask, ReplicaState, Store, TaskState};
use gleaner_test_utils::Postgres;

async fn scenario(s: &Store) {
    let row = JobRow {
        job_id: U256::from(9),
        manifest: r#"{"kind":"embed"}"#.into(),
        spec_hash: B256::repeat_byte(1),
        requester: Address::repeat_byte(9),
        redundancy: 2,
        task_count: 3,
        deadline: 10_000,
        state: JobState::Registered,
        tasks_root: B256::repeat_byte(2),
        post_tx: None,
        report_hash: None,
    };
    let tasks: Vec<NewTask> = (0..3u8)
        .map(|i| NewTask {
            task_hash: B256::with_last_byte(i + 1),
            input_hash: B256::with_last_byte(100 + i),
            cost: 10,
        })
        .collect();
    assert!(s.insert_job(&row, &tasks, 1_000).await.unwrap());
    s.set_job_state(row.job_id, JobState::Registered, JobState::Posted)
        .await
        .unwrap();
    let (w1, w2) = (Address::repeat_byte(0xa1), Address::repeat_byte(0xb2));
    for w in [w1, w2] {
        s.sign_in(
            w,
            r#"{"adapter":"cpu","backend":"flex"}"#,
            2.5,
            1,
            1_000,
            &format!("t-{w}"),
            "worker",
            9_000,
        )
        .await
        .unwrap();
    }
    let sig = Bytes::from(vec![7u8; 65]);
    let a = s.lease(w1, 1_010, 60, 600).await.unwrap().unwrap();
    let submitted = s.submit(&a.lease_id, B256::repeat_byte(5), &sig, 1_030);
    assert!(submitted.await.unwrap());
    let b = s.lease(w2, 1_090, 60, 600).await.unwrap().unwrap();
    assert_eq!(a.index, b.index);
    let submitted = s.submit(&b.lease_id, B256::repeat_byte(6), &sig, 1_100);
    assert!(submitted.await.unwrap());
    assert!(
        s.accept_task(row.job_id, a.index, B256::repeat_byte(5), &[w1])
            .await
            .unwrap()
    );

    let jobs = s.explorer_jobs().await.unwrap();
    assert_eq!(jobs.len(), 1);
    let j = &jobs[0];
    assert_eq!(
        (j.kind.as_str(), j.state, j.task_count, j.redundancy),
        ("embed", JobState::Posted, 3, 2)
    );
    assert_eq!(
        (j.accepted, j.failed, j.in_progress, j.submitted),
        (1, 0, 0, 2)
    );
    assert_eq!(j.created_at, 1_000);
    assert_eq!(s.explorer_job(row.job_id).await.unwrap().as_ref(), Some(j));
    assert!(s.explorer_job(U256::from(10)).await.unwrap().is_none());

    let t = s.explorer_tasks(row.job_id).await.unwrap();
    assert_eq!(t.len(), 3);
    assert_eq!(t[a.index as usize].state, TaskState::Accepted);
    assert_eq!(t[a.index as usize].quorum, [w1]);
    assert_eq!(t[a.index as usize].cost, "10");

    let r = s.explorer_replicas(row.job_id).await.unwrap();
    assert_eq!(r.len(), 2);
    assert!(
        r.iter()
            .all(|x| x.state == ReplicaState::Submitted && x.signature.as_ref() == Some(&sig))
    );
    assert_eq!(
        r.iter().find(|x| x.worker == w2).unwrap().submitted_at,
        Some(1_100)
    );

    let workers = s.explorer_workers().await.unwrap();
    assert_eq!(workers.len(), 2);
    let one = workers.iter().find(|w| w.address == w1).unwrap();
    assert_eq!(
        (one.submitted, one.in_quorum, one.last_active),
        (1, 1, Some(1_030))
    );
    assert_eq!(one.capabilities["backend"], "flex");
    let two = workers.iter().find(|w| w.address == w2).unwrap();
    assert_eq!(
        (two.submitted, two.in_quorum),
        (1, 0),
        "w2 is outside the quorum"
    );
    assert_eq!(s.explorer_worker_replicas(w2).await.unwrap().len(), 1);

    // Results per minute: 1,030 is in the minute from 1,020; 1,100 in the minute from 1,080.
    assert_eq!(
        s.explorer_throughput(0).await.unwrap(),
        [(1_020, 1), (1_080, 1)]
    );
    assert_eq!(s.explorer_throughput(1_101).await.unwrap(), []);
}

#[tokio::test]
async fn explorer_queries_on_sqlite() {
    scenario(&Store::connect("sqlite::memory:").await.unwrap()).await;
}

#[tokio::test]
async fn explorer_queries_on_postgres() {
    let pg = Postgres::start();
    scenario(&Store::connect(&pg.url).await.unwrap()).await;
}
