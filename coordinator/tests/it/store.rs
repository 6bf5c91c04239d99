//! The store on SQLite (file, across a restart) and on a real PostgreSQL.

use alloy::primitives::{Address, B256, Bytes, U256};
use gleaner_coordinator::{JobRow, JobState, NewTask, QueueStats, ReplicaState, Store};

use gleaner_test_utils::Postgres;

fn job(id: u64, n: u32, redundancy: u16) -> (JobRow, Vec<NewTask>) {
    let row = JobRow {
        job_id: U256::from(id),
        manifest: "{}".into(),
        spec_hash: B256::repeat_byte(1),
        requester: Address::repeat_byte(9),
        redundancy,
        task_count: n,
        deadline: 10_000,
        state: JobState::Registered,
        tasks_root: B256::repeat_byte(2),
        post_tx: None,
        report_hash: None,
    };
    let tasks = (0..n)
        .map(|i| NewTask {
            task_hash: B256::with_last_byte(i as u8 + 1),
            input_hash: B256::with_last_byte(100 + i as u8),
            cost: u64::MAX,
        })
        .collect();
    (row, tasks)
}

async fn worker(s: &Store, a: Address, gflops: f64, now: u64) {
    s.sign_in(
        a,
        "{}",
        gflops,
        1,
        now,
        &format!("tok-{a}"),
        "worker",
        now + 3600,
    )
    .await
    .unwrap();
}

/// Each job's `wanted` (kept by triggers) equals the sum it stands for, recomputed.
async fn assert_wanted_consistent(url: &str, when: &str) {
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let rows = sqlx::query(
        "SELECT j.job_id AS job_id, w.wanted AS wanted, \
         (SELECT CAST(COALESCE(SUM(CASE WHEN t.replicas_needed > t.live \
          THEN t.replicas_needed - t.live ELSE 0 END), 0) AS BIGINT) \
          FROM tasks t WHERE t.job_id = j.job_id AND t.state = 'open') AS recomputed, \
         (SELECT COUNT(*) FROM tasks t WHERE t.job_id = j.job_id AND t.live <> \
          (SELECT COUNT(*) FROM replicas r WHERE r.job_id = t.job_id AND r.idx = t.idx \
           AND r.state IN ('leased', 'submitted'))) AS live_drift \
         FROM jobs j JOIN job_wanted w ON w.job_id = j.job_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(!rows.is_empty());
    for row in rows {
        use sqlx::Row;
        let job: String = row.get("job_id");
        let (wanted, recomputed): (i64, i64) = (row.get("wanted"), row.get("recomputed"));
        assert_eq!(wanted, recomputed, "job {job} {when}");
        assert_eq!(row.get::<i64, _>("live_drift"), 0, "job {job} {when}");
    }
    pool.close().await;
}

/// The scenario both databases run: blobs, jobs, sessions, leasing rules, results, decisions.
async fn exercise(s: &Store, url: &str) {
    s.put_blob(B256::repeat_byte(7), b"bytes").await.unwrap();
    s.put_blob(B256::repeat_byte(7), b"bytes").await.unwrap();
    assert_eq!(
        s.blob(B256::repeat_byte(7)).await.unwrap().unwrap(),
        b"bytes"
    );
    assert_eq!(
        s.missing_blobs(&[B256::repeat_byte(7), B256::ZERO, B256::ZERO])
            .await
            .unwrap(),
        vec![B256::ZERO]
    );

    let (row, tasks) = job(1, 2, 2);
    assert!(s.insert_job(&row, &tasks, 1).await.unwrap());
    assert!(!s.insert_job(&row, &tasks, 1).await.unwrap());
    assert_wanted_consistent(url, "after insert").await;
    assert_eq!(s.job(U256::from(1)).await.unwrap().unwrap(), row);
    let (w1, w2, w3) = (
        Address::repeat_byte(1),
        Address::repeat_byte(2),
        Address::repeat_byte(3),
    );
    for w in [w1, w2, w3] {
        worker(s, w, 1.0, 100).await;
    }
    assert!(
        s.sign_in(w1, "{}", 1.0, 1, 100, "t2", "worker", 200)
            .await
            .is_err(),
        "replayed nonce"
    );
    assert_eq!(
        s.session(&format!("tok-{w1}"), 100)
            .await
            .unwrap()
            .unwrap()
            .0,
        w1
    );
    assert!(
        s.session(&format!("tok-{w1}"), 5000)
            .await
            .unwrap()
            .is_none()
    );

    // Not leased before it is posted.
    assert!(s.lease(w1, 100, 60, 600).await.unwrap().is_none());
    assert!(
        s.set_job_state(U256::from(1), JobState::Registered, JobState::Posted)
            .await
            .unwrap()
    );
    let a = s.lease(w1, 100, 60, 600).await.unwrap().unwrap();
    let b = s.lease(w1, 100, 60, 600).await.unwrap().unwrap();
    assert_ne!(a.index, b.index);
    assert!(
        s.lease(w1, 100, 60, 600).await.unwrap().is_none(),
        "w1 holds both tasks"
    );
    // Equal workers, 4 replicas: each may hold ceil(4/3) = 2.
    let c = s.lease(w2, 100, 60, 600).await.unwrap().unwrap();
    let d = s.lease(w2, 100, 60, 600).await.unwrap().unwrap();
    assert_ne!(c.index, d.index);
    assert!(
        s.lease(w3, 100, 60, 600).await.unwrap().is_none(),
        "all replicas out"
    );
    assert_eq!(
        s.queue_stats(100).await.unwrap(),
        QueueStats {
            queued: 0,
            leased: 4
        }
    );
    assert_wanted_consistent(url, "after leasing").await;

    // Submit one, let the others expire: they return to the queue.
    assert!(
        s.submit(
            &a.lease_id,
            B256::repeat_byte(7),
            &Bytes::from(vec![1u8; 65]),
            120
        )
        .await
        .unwrap()
    );
    assert!(
        !s.submit(&a.lease_id, B256::repeat_byte(7), &Bytes::new(), 120)
            .await
            .unwrap()
    );
    let e = s.lease(w3, 200, 60, 600).await.unwrap().unwrap();
    assert_eq!(
        s.replica(&b.lease_id).await.unwrap().unwrap().state,
        ReplicaState::Expired
    );
    assert!(
        !s.submit(&b.lease_id, B256::repeat_byte(7), &Bytes::new(), 200)
            .await
            .unwrap()
    );
    // w1 never gets a second replica of the task it submitted.
    let f = s.lease(w1, 200, 60, 600).await.unwrap().unwrap();
    assert_ne!(f.index, a.index);
    let reps = s.submitted_replicas(U256::from(1)).await.unwrap();
    assert_eq!(reps.len(), 1);
    assert_eq!(reps[0].signature.as_ref().unwrap().len(), 65);
    let _ = (&c, &d, &e);
    assert_wanted_consistent(url, "after submit and expiry").await;

    // Decisions.
    assert!(
        s.accept_task(U256::from(1), a.index, B256::repeat_byte(7), &[w1])
            .await
            .unwrap()
    );
    assert!(!s.fail_task(U256::from(1), a.index).await.unwrap());
    assert!(s.more_replicas(U256::from(1), f.index, 2).await.unwrap());
    let tasks = s.tasks(U256::from(1)).await.unwrap();
    assert_eq!(tasks[a.index as usize].quorum, vec![w1]);
    assert_eq!(tasks[f.index as usize].replicas_needed, 4);
    assert_eq!(s.job_progress(U256::from(1)).await.unwrap(), (1, 1, 0));
    assert_wanted_consistent(url, "after decisions").await;
    // Two more replicas of task f are wanted now; a batch lease takes at most one per task.
    let now = 300;
    let got = s.lease_many(w2, now, 60, 600, 10).await.unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].index, f.index);
    assert_wanted_consistent(url, "after a batch lease").await;
    // Results in one transaction: all or nothing (b's lease expired long ago).
    let out = (B256::repeat_byte(0x51), b"batched output".to_vec());
    let sig = Bytes::from(vec![2u8; 69]);
    let refused = s
        .submit_many(
            vec![
                (got[0].lease_id.clone(), out.0, sig.clone()),
                (b.lease_id.clone(), out.0, sig.clone()),
            ],
            vec![out.clone()],
            now,
        )
        .await
        .unwrap();
    assert_eq!(refused, Err(b.lease_id.clone()));
    assert_eq!(
        s.replica(&got[0].lease_id).await.unwrap().unwrap().state,
        ReplicaState::Leased
    );
    assert!(!s.has_blob(out.0).await.unwrap());
    // Checked by the writing statement: another worker's lease, or another task's hash, is
    // refused whole (the blob too), and the lease stays live.
    let one = [(got[0].lease_id.clone(), out.0, sig.clone())];
    for (who, task, why) in [
        (w1, got[0].task_hash, "another worker's lease"),
        (w2, B256::repeat_byte(0x77), "another task's hash"),
    ] {
        let taken = s
            .submit_many_owned(who, one.to_vec(), vec![task], vec![out.clone()], now)
            .await
            .unwrap()
            .is_ok();
        assert!(!taken, "{why}");
        assert_eq!(
            s.replica(&got[0].lease_id).await.unwrap().unwrap().state,
            ReplicaState::Leased,
            "{why}"
        );
        assert!(!s.has_blob(out.0).await.unwrap(), "{why}");
    }
    // Nor a batch with one of the worker's leases that expired long ago among them (d's).
    let two = [one[0].clone(), (d.lease_id.clone(), out.0, sig.clone())];
    let taken = s
        .submit_many_owned(
            w2,
            two.to_vec(),
            vec![got[0].task_hash, d.task_hash],
            Vec::new(),
            now,
        )
        .await
        .unwrap()
        .is_ok();
    assert!(!taken, "an expired lease in the batch");
    let taken = s
        .submit_many_owned(
            w2,
            one.to_vec(),
            vec![got[0].task_hash],
            vec![out.clone()],
            now,
        )
        .await
        .unwrap()
        .is_ok();
    assert!(taken);
    let r = s.replica(&got[0].lease_id).await.unwrap().unwrap();
    assert_eq!(
        (r.state, r.result_hash, r.signature),
        (ReplicaState::Submitted, Some(out.0), Some(sig))
    );
    assert_eq!(s.blob(out.0).await.unwrap().unwrap(), out.1);
    assert_wanted_consistent(url, "after batched results").await;
    assert!(s.settle(U256::from(1), B256::repeat_byte(3)).await.unwrap());
    assert!(s.settle(U256::from(1), B256::repeat_byte(3)).await.unwrap());
    assert!(!s.settle(U256::from(1), B256::repeat_byte(4)).await.unwrap());

    // A job with spot checks: a secret of its own, kept; its tasks want one replica to start
    // with (the verifier asks for more); a job without them has no secret.
    assert_eq!(s.check_secret(U256::from(1)).await.unwrap(), None);
    let (mut spot, tasks) = job(40, 3, 2);
    spot.manifest = r#"{"kind":"embed","spot_checks":{"check_ppm":50000,"trust_after":20}}"#.into();
    assert!(s.insert_job(&spot, &tasks, 1).await.unwrap());
    let secret = s.check_secret(U256::from(40)).await.unwrap().unwrap();
    assert_ne!(secret, B256::ZERO);
    let (mut other, _) = job(41, 3, 2);
    other.manifest = spot.manifest.clone();
    assert!(s.insert_job(&other, &tasks, 1).await.unwrap());
    assert_ne!(s.check_secret(U256::from(41)).await.unwrap(), Some(secret));
    assert_eq!(s.check_secret(U256::from(40)).await.unwrap(), Some(secret));
    for i in 0..3 {
        let t = s.task(U256::from(40), i).await.unwrap().unwrap();
        assert_eq!(t.replicas_needed, 1, "task {i}");
    }
    assert_wanted_consistent(url, "after a spot-checked job").await;
    shares_follow_scores(s).await;
}

#[tokio::test]
async fn sqlite_file_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("c.db").display());
    let s = Store::connect(&url).await.unwrap();
    exercise(&s, &url).await;
    let (row, tasks) = job(2, 1, 1);
    s.insert_job(&row, &tasks, 1).await.unwrap();
    s.set_job_state(U256::from(2), JobState::Registered, JobState::Posted)
        .await
        .unwrap();
    let w = Address::repeat_byte(4);
    worker(&s, w, 1.0, 300).await;
    let l = s.lease(w, 300, 60, 600).await.unwrap().unwrap();
    s.close().await;
    drop(s);

    // Reopen: everything accepted is there, the live lease is still live, then expires.
    let s = Store::connect(&url).await.unwrap();
    assert_eq!(
        s.job(U256::from(1)).await.unwrap().unwrap().state,
        JobState::Settled
    );
    assert_eq!(s.submitted_replicas(U256::from(1)).await.unwrap().len(), 2);
    assert_eq!(
        s.replica(&l.lease_id).await.unwrap().unwrap().state,
        ReplicaState::Leased
    );
    assert_eq!(s.last_nonce(w).await.unwrap(), Some(1));
    assert!(s.lease(w, 310, 60, 600).await.unwrap().is_none());
    let again = s.lease(w, 400, 60, 600).await.unwrap().unwrap();
    assert_eq!((again.job_id, again.index), (U256::from(2), 0));
}

/// Each worker may hold its share of the replicas open or in flight, by score, as the
/// database sums the scores (a negative one counts as zero): 8 replicas among scores 3, 1 and
/// -1 give 6, 2 and 1. The live leases are counted only when the queued replicas alone do not
/// settle the answer (the second lease is answered without them, the third with them).
async fn shares_follow_scores(s: &Store) {
    let now = 10_000;
    let (mut row, tasks) = job(77, 8, 1);
    row.deadline = 20_000;
    assert!(s.insert_job(&row, &tasks, 1).await.unwrap());
    s.set_job_state(U256::from(77), JobState::Registered, JobState::Posted)
        .await
        .unwrap();
    let (fast, slow, broken) = (
        Address::repeat_byte(0x41),
        Address::repeat_byte(0x42),
        Address::repeat_byte(0x43),
    );
    for (w, gflops) in [(fast, 3.0), (slow, 1.0), (broken, -1.0)] {
        worker(s, w, gflops, now).await;
    }
    let lease = |w: Address, max: u64| async move {
        s.lease_many(w, now, 60, 100, max).await.unwrap().len()
    };
    assert_eq!(
        lease(broken, 100).await,
        1,
        "a score of zero still gets one"
    );
    assert_eq!(lease(fast, 2).await, 2);
    assert_eq!(lease(fast, 100).await, 4, "3/4 of 8 is 6, two held");
    assert_eq!(
        lease(slow, 100).await,
        1,
        "its share is 2, one replica left"
    );
    assert_eq!(lease(broken, 100).await, 0);
}

/// A batch lease walks the leasable jobs by deadline, then by numeric job id (9 before 11), and
/// each job's tasks in order, skipping tasks the worker already holds, until it has `max`.
async fn batch_lease_order(s: &Store) {
    for (id, n, deadline) in [(11, 2, 5_000), (9, 2, 5_000), (10, 3, 4_000)] {
        let (mut row, tasks) = job(id, n, 1);
        row.deadline = deadline;
        assert!(s.insert_job(&row, &tasks, 1).await.unwrap());
        s.set_job_state(U256::from(id), JobState::Registered, JobState::Posted)
            .await
            .unwrap();
    }
    let w = Address::repeat_byte(5);
    worker(s, w, 1.0, 100).await;
    let first = s.lease(w, 100, 60, 600).await.unwrap().unwrap();
    assert_eq!((first.job_id, first.index), (U256::from(10), 0));
    let order = |got: Vec<gleaner_coordinator::LeasedTask>| -> Vec<(u64, u32)> {
        got.iter()
            .map(|l| (l.job_id.to::<u64>(), l.index))
            .collect()
    };
    let got = order(s.lease_many(w, 100, 60, 600, 4).await.unwrap());
    assert_eq!(got, [(10, 1), (10, 2), (9, 0), (9, 1)]);
    let got = order(s.lease_many(w, 100, 60, 600, 64).await.unwrap());
    assert_eq!(got, [(11, 0), (11, 1)]);
    assert!(s.lease_many(w, 100, 60, 600, 64).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_batch_lease_takes_jobs_by_deadline_and_tasks_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("o.db").display());
    let s = Store::connect(&url).await.unwrap();
    batch_lease_order(&s).await;
    assert_wanted_consistent(&url, "after the ordered leases").await;
}

/// A worker is leased only the task kinds its signed capabilities list (none listed, as in
/// sessions from before kinds existed: embed only).
#[tokio::test]
async fn leases_only_the_kinds_a_worker_runs() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("k.db").display());
    let s = Store::connect(&url).await.unwrap();
    let (mut row, tasks) = job(1, 1, 2);
    row.manifest = r#"{"version":1,"kind":"generate"}"#.into();
    s.insert_job(&row, &tasks, 1).await.unwrap();
    s.set_job_state(U256::from(1), JobState::Registered, JobState::Posted)
        .await
        .unwrap();
    let caps = |kinds: &str| {
        format!(
            r#"{{"adapter":"cpu","backend":"flex","memory_bytes":0,"gflops":1.0,"kinds":{kinds}}}"#
        )
    };
    let (old, embed, both) = (
        Address::repeat_byte(1),
        Address::repeat_byte(2),
        Address::repeat_byte(3),
    );
    worker(&s, old, 1.0, 100).await;
    for (w, c) in [
        (embed, caps(r#"["embed"]"#)),
        (both, caps(r#"["embed","generate"]"#)),
    ] {
        s.sign_in(w, &c, 1.0, 1, 100, &format!("tok-{w}"), "worker", 3700)
            .await
            .unwrap();
    }
    assert!(s.lease(old, 100, 60, 600).await.unwrap().is_none());
    assert!(s.lease(embed, 100, 60, 600).await.unwrap().is_none());
    let l = s.lease(both, 100, 60, 600).await.unwrap().unwrap();
    assert_eq!((l.job_id, l.index), (U256::from(1), 0));
    // An embed job is still leased to the embed-only worker.
    let (row2, tasks2) = job(2, 1, 1);
    s.insert_job(&row2, &tasks2, 1).await.unwrap();
    s.set_job_state(U256::from(2), JobState::Registered, JobState::Posted)
        .await
        .unwrap();
    let l = s.lease(embed, 101, 60, 600).await.unwrap().unwrap();
    assert_eq!(l.job_id, U256::from(2));
}

/// A new job leaves PostgreSQL's planner statistics fresh (`reltuples` is -1 on a table never
/// analyzed): the lease's pick is planned for the job's tasks, not for an empty table.
#[tokio::test]
async fn postgres_analyzes_a_new_jobs_tasks() {
    let pg = Postgres::start();
    let s = Store::connect(&pg.url).await.unwrap();
    let rows = || async {
        let pool = sqlx::AnyPool::connect(&pg.url).await.unwrap();
        let (n,): (f64,) = sqlx::query_as(
            "SELECT CAST(reltuples AS DOUBLE PRECISION) FROM pg_class WHERE relname = 'tasks'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        n
    };
    assert!(rows().await < 0.0, "a fresh table is not analyzed");
    let (row, tasks) = job(6, 120, 2);
    assert!(s.insert_job(&row, &tasks, 1).await.unwrap());
    assert_eq!(rows().await, 120.0);
}

#[tokio::test]
async fn postgres_runs_the_same_scenario_and_leases_atomically() {
    let pg = Postgres::start();
    let s = Store::connect(&pg.url).await.unwrap();
    exercise(&s, &pg.url).await;

    // 20 workers race for 10 tasks x 3 replicas: exactly 30 leases, distinct per task.
    let (row, tasks) = job(5, 10, 3);
    s.insert_job(&row, &tasks, 1).await.unwrap();
    s.set_job_state(U256::from(5), JobState::Registered, JobState::Posted)
        .await
        .unwrap();
    let workers: Vec<Address> = (10..30u8).map(Address::repeat_byte).collect();
    for w in &workers {
        worker(&s, *w, 1.0, 500).await;
    }
    let mut handles = Vec::new();
    for w in workers.clone() {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(l) = s.lease(w, 500, 60, 100).await.unwrap() {
                got.push((l.job_id, l.index, w));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    // Shares shrink as replicas go out, so a worker may have stopped early: sweep until dry.
    loop {
        let before = all.len();
        for w in &workers {
            while let Some(l) = s.lease(*w, 500, 60, 100).await.unwrap() {
                all.push((l.job_id, l.index, *w));
            }
        }
        if all.len() == before {
            break;
        }
    }
    // Shares shrink as replicas go out, so a worker may have stopped early: sweep until dry.
    loop {
        let before = all.len();
        for w in &workers {
            while let Some(l) = s.lease(*w, 500, 60, 100).await.unwrap() {
                all.push((l.job_id, l.index, *w));
            }
        }
        if all.len() == before {
            break;
        }
    }
    let job5: Vec<_> = all.iter().filter(|(j, _, _)| *j == U256::from(5)).collect();
    assert_eq!(job5.len(), 30, "{all:?}");
    let mut distinct: Vec<_> = job5.iter().map(|(_, i, w)| (*i, *w)).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 30);

    // The CHECK constraints of migration 0003 refuse unknown states here too.
    let pool = sqlx::AnyPool::connect(&pg.url).await.unwrap();
    for sql in [
        "UPDATE jobs SET state = 'verifying' WHERE job_id = '5'",
        "UPDATE tasks SET state = 'done' WHERE job_id = '5'",
        "UPDATE replicas SET state = 'live' WHERE job_id = '5'",
    ] {
        let err = sqlx::query(sql).execute(&pool).await.unwrap_err();
        assert!(err.to_string().contains("check constraint"), "{sql}: {err}");
    }
    pool.close().await;
    s.close().await;
}
