//! The verifier's own store: reputations, final task decisions, fixed settlement reports.
//!
//! SQLite by default (`sqlite://verifier.sqlite?mode=rwc`), PostgreSQL by URL, through sqlx's
//! Any driver with one portable migration (`verifier/migrations`). Chosen over a JSON state
//! file because a decision and the reputation changes it causes must land together or not at
//! all (one transaction), and because the state grows with every worker and task: a database
//! updates one row where a state file would be rewritten whole on every decision.

use std::collections::HashMap;

use alloy::primitives::{Address, B256, U256};
use gleaner_protocol::formulas::ConfidenceBps;
use gleaner_protocol::report::SettlementReport;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

use gleaner_protocol::replication::{Evidence, streak_after};

use crate::reputation::{Conduct, INITIAL_CONFIDENCE, update};
use crate::settlement::TaskRecord;
use crate::{Error, Result};

/// The verifier's store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
}

fn key(a: Address) -> String {
    hex::encode(a)
}

fn job_key(id: U256) -> String {
    id.to_string()
}

fn json_err(e: serde_json::Error) -> Error {
    Error::Invalid(format!("stored record does not parse: {e}"))
}

impl Store {
    /// Opens (creating if need be) and migrates the store at `url`: `sqlite://PATH?mode=rwc`,
    /// `sqlite::memory:` or `postgres://...`.
    pub async fn open(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let mut opts = AnyPoolOptions::new();
        if url.starts_with("sqlite") {
            // One writer: SQLite serialises writes anyway, and `sqlite::memory:` is per connection.
            // A write-ahead log synced at checkpoints: a decision's commit is one append, not a
            // handful of fsyncs (they capped the verifier at ~12 decisions/s). A killed process
            // loses nothing; a power cut may lose the last decisions, which are made again from
            // the same replicas (the coordinator keeps the first it was told).
            opts = opts.max_connections(1).after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::Executor::execute(
                        &mut *conn,
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;",
                    )
                    .await?;
                    Ok(())
                })
            });
        }
        let pool = opts.connect(url).await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    /// A worker's confidence ([`INITIAL_CONFIDENCE`] when never seen).
    pub async fn confidence(&self, worker: Address) -> Result<ConfidenceBps> {
        let row = sqlx::query("SELECT bps FROM reputation WHERE worker = $1")
            .bind(key(worker))
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => bps(r.try_get::<i64, _>(0)?),
            None => INITIAL_CONFIDENCE,
        })
    }

    /// Confidences of several workers.
    pub async fn confidences(
        &self,
        workers: impl IntoIterator<Item = Address>,
    ) -> Result<HashMap<Address, ConfidenceBps>> {
        let mut out = HashMap::new();
        for w in workers {
            if let std::collections::hash_map::Entry::Vacant(e) = out.entry(w) {
                e.insert(self.confidence(w).await?);
            }
        }
        Ok(out)
    }

    /// A worker's trust streak (0 when never seen).
    pub async fn streak(&self, worker: Address) -> Result<u32> {
        let row = sqlx::query("SELECT streak FROM trust WHERE worker = $1")
            .bind(key(worker))
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => u32::try_from(r.try_get::<i64, _>(0)?.max(0)).unwrap_or(u32::MAX),
            None => 0,
        })
    }

    /// Records a final decision and applies its reputation and trust changes, in one
    /// transaction. Returns false (and changes nothing) when the task was already recorded.
    pub async fn record_decision(
        &self,
        job_id: U256,
        record: &TaskRecord,
        conducts: &[(Address, Conduct)],
        evidence: &[(Address, Evidence)],
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let exists = sqlx::query("SELECT 1 FROM decisions WHERE job_id = $1 AND task_index = $2")
            .bind(job_key(job_id))
            .bind(i64::from(record.index))
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if exists {
            return Ok(false);
        }
        let json = serde_json::to_string(record).map_err(json_err)?;
        sqlx::query("INSERT INTO decisions (job_id, task_index, record) VALUES ($1, $2, $3)")
            .bind(job_key(job_id))
            .bind(i64::from(record.index))
            .bind(json)
            .execute(&mut *tx)
            .await?;
        for &(worker, conduct) in conducts {
            let old = sqlx::query("SELECT bps FROM reputation WHERE worker = $1")
                .bind(key(worker))
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get::<i64, _>(0).map(bps))
                .transpose()?
                .unwrap_or(INITIAL_CONFIDENCE);
            sqlx::query(
                "INSERT INTO reputation (worker, bps) VALUES ($1, $2) \
                 ON CONFLICT (worker) DO UPDATE SET bps = excluded.bps",
            )
            .bind(key(worker))
            .bind(i64::from(update(old, conduct)))
            .execute(&mut *tx)
            .await?;
        }
        for &(worker, e) in evidence {
            if e == Evidence::None {
                continue;
            }
            let old = sqlx::query("SELECT streak FROM trust WHERE worker = $1")
                .bind(key(worker))
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get::<i64, _>(0))
                .transpose()?
                .map_or(0, |s| u32::try_from(s.max(0)).unwrap_or(u32::MAX));
            sqlx::query(
                "INSERT INTO trust (worker, streak) VALUES ($1, $2) \
                 ON CONFLICT (worker) DO UPDATE SET streak = excluded.streak",
            )
            .bind(key(worker))
            .bind(i64::from(streak_after(old, e)))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The recorded decision of one task.
    pub async fn decision(&self, job_id: U256, index: u32) -> Result<Option<TaskRecord>> {
        let row = sqlx::query("SELECT record FROM decisions WHERE job_id = $1 AND task_index = $2")
            .bind(job_key(job_id))
            .bind(i64::from(index))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| serde_json::from_str(&r.try_get::<String, _>(0)?).map_err(json_err))
            .transpose()
    }

    /// Every recorded decision of a job, by task index.
    pub async fn decisions(&self, job_id: U256) -> Result<Vec<TaskRecord>> {
        let rows =
            sqlx::query("SELECT record FROM decisions WHERE job_id = $1 ORDER BY task_index")
                .bind(job_key(job_id))
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|r| serde_json::from_str(&r.try_get::<String, _>(0)?).map_err(json_err))
            .collect()
    }

    /// Fixes a job's settlement report: the first one saved wins and is returned ever after.
    pub async fn fix_report(
        &self,
        job_id: U256,
        report: &SettlementReport,
    ) -> Result<SettlementReport> {
        if let Some(r) = self.report(job_id).await? {
            return Ok(r);
        }
        let text = String::from_utf8(report.canonical())
            .map_err(|e| Error::Invalid(format!("report is not UTF-8: {e}")))?;
        sqlx::query(
            "INSERT INTO settlements (job_id, report, notified) VALUES ($1, $2, 0) \
             ON CONFLICT (job_id) DO NOTHING",
        )
        .bind(job_key(job_id))
        .bind(text)
        .execute(&self.pool)
        .await?;
        self.report(job_id)
            .await?
            .ok_or_else(|| Error::Invalid("report vanished after saving".into()))
    }

    /// The fixed report of a job, if any.
    pub async fn report(&self, job_id: U256) -> Result<Option<SettlementReport>> {
        let row = sqlx::query("SELECT report FROM settlements WHERE job_id = $1")
            .bind(job_key(job_id))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let text: String = r.try_get(0)?;
            Ok(SettlementReport::from_canonical(text.as_bytes())?)
        })
        .transpose()
    }

    /// Whether the coordinator was told the job is settled.
    pub async fn notified(&self, job_id: U256) -> Result<bool> {
        let row = sqlx::query("SELECT notified FROM settlements WHERE job_id = $1")
            .bind(job_key(job_id))
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<i64, _>(0)? != 0,
            None => false,
        })
    }

    /// Notes that the coordinator was told the job is settled by `tx`.
    pub async fn mark_notified(&self, job_id: U256, tx: B256) -> Result<()> {
        sqlx::query("UPDATE settlements SET notified = 1, settle_tx = $1 WHERE job_id = $2")
            .bind(tx.to_string())
            .bind(job_key(job_id))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn bps(v: i64) -> ConfidenceBps {
    ConfidenceBps::try_from(v.clamp(0, 10_000)).unwrap_or(INITIAL_CONFIDENCE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::Verdict;
    use crate::decide::tests::{embedding, replica, valid, w};
    use gleaner_protocol::report::REPORT_VERSION;

    #[tokio::test]
    async fn decisions_apply_reputation_once_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("v.sqlite").display()
        );
        let store = Store::open(&url).await.unwrap();
        assert_eq!(store.confidence(w(1)).await.unwrap(), INITIAL_CONFIDENCE);
        let reps = vec![
            replica(1, 9_000, valid(embedding(1, 0, 0.0))),
            replica(2, 9_000, valid(embedding(1, 0, 0.0))),
            replica(3, 9_000, valid(embedding(1, 7, 0.0))),
        ];
        let v = Verdict::Accept { quorum: vec![0, 1] };
        let rec = TaskRecord::new(0, B256::ZERO, &reps, &v, Some(B256::ZERO)).unwrap();
        let conducts = crate::reputation::conducts(&reps, &v);
        let evidence = crate::reputation::evidence(&reps, &v);
        let job = U256::from(5);
        assert!(
            store
                .record_decision(job, &rec, &conducts, &evidence)
                .await
                .unwrap()
        );
        assert!(
            !store
                .record_decision(job, &rec, &conducts, &evidence)
                .await
                .unwrap()
        );
        // Trust: the two that agreed were checked (one streak each); a second decision adds
        // one; the contradicting worker stays at 0.
        let rec2 = TaskRecord::new(1, B256::ZERO, &reps, &v, Some(B256::ZERO)).unwrap();
        assert!(
            store
                .record_decision(job, &rec2, &conducts, &evidence)
                .await
                .unwrap()
        );
        assert_eq!(store.streak(w(1)).await.unwrap(), 2);
        assert_eq!(store.streak(w(3)).await.unwrap(), 0);
        assert_eq!(store.streak(w(9)).await.unwrap(), 0);
        drop(store);
        let store = Store::open(&url).await.unwrap();
        let c = store.confidences([w(1), w(2), w(3), w(4)]).await.unwrap();
        assert_eq!(c[&w(1)], 9_200);
        assert_eq!(c[&w(3)], 5_000);
        assert_eq!(c[&w(4)], INITIAL_CONFIDENCE);
        assert_eq!(store.decision(job, 0).await.unwrap(), Some(rec.clone()));
        assert_eq!(store.decision(job, 2).await.unwrap(), None);
        assert_eq!(store.decisions(job).await.unwrap(), vec![rec, rec2]);
        assert_eq!(store.streak(w(2)).await.unwrap(), 2);

        let mut report = SettlementReport {
            version: REPORT_VERSION,
            chain_id: 1,
            market: w(9),
            job_id: job,
            spec_hash: B256::ZERO,
            tasks_root: B256::ZERO,
            tasks: vec![],
            workers: vec![],
            slashes: vec![],
            spot_checks: None,
        };
        assert_eq!(store.fix_report(job, &report).await.unwrap(), report);
        let first = report.clone();
        report.chain_id = 2;
        assert_eq!(store.fix_report(job, &report).await.unwrap(), first);
        assert!(!store.notified(job).await.unwrap());
        store
            .mark_notified(job, B256::repeat_byte(1))
            .await
            .unwrap();
        assert!(store.notified(job).await.unwrap());
    }
}
