//! Reputation: each worker's confidence P_i in basis points, updated per decided task.
//!
//! - A worker the verifier has never seen starts at [`INITIAL_CONFIDENCE`] (0.9).
//! - In the accepted quorum of a task: +[`AGREE_STEP`] (slow to earn).
//! - A signed result that contradicts an accepted quorum (another output, or a malformed blob):
//!   −[`CONTRADICT_PENALTY`] (quick to lose: five contradictions from full trust reach zero).
//! - A malformed signed blob on a task that failed: −[`CONTRADICT_PENALTY`] as well (garbage is
//!   garbage with or without a quorum). Anything else (a well-formed output on a failed task,
//!   an unattributable replica) changes nothing.
//!
//! Always within [0, 10000]. The values are the verifier's policy, published in each report
//! (`confidence_bps`), so an auditor never needs to replay them.

use alloy::primitives::Address;
use gleaner_protocol::formulas::{ConfidenceBps, FULL_CONFIDENCE};
use gleaner_protocol::replication::Evidence;

use gleaner_kinds::Checked;

use crate::decide::{Replica, Verdict};

/// Confidence of a worker never seen before.
pub const INITIAL_CONFIDENCE: ConfidenceBps = 9_000;
/// Gain for being in an accepted quorum.
pub const AGREE_STEP: ConfidenceBps = 100;
/// Loss for a signed result that contradicts an accepted quorum, or for a malformed blob.
pub const CONTRADICT_PENALTY: ConfidenceBps = 2_000;

/// How a worker behaved on one decided task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conduct {
    /// In the accepted quorum.
    Agreed,
    /// Signed a result that contradicts the accepted quorum, or signed a malformed blob.
    Contradicted,
    /// Nothing to hold for or against it.
    Neutral,
}

/// The new confidence after `conduct`, bounded in [0, 10000].
pub fn update(p: ConfidenceBps, conduct: Conduct) -> ConfidenceBps {
    let p = p.min(FULL_CONFIDENCE);
    match conduct {
        Conduct::Agreed => p.saturating_add(AGREE_STEP).min(FULL_CONFIDENCE),
        Conduct::Contradicted => p.saturating_sub(CONTRADICT_PENALTY),
        Conduct::Neutral => p,
    }
}

/// Each attributable replica's conduct under a final verdict (`More` gives none: nothing is
/// decided yet). One entry per replica, in replica order.
pub fn conducts(replicas: &[Replica], verdict: &Verdict) -> Vec<(Address, Conduct)> {
    replicas
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let c = match (verdict, &r.checked) {
                (_, Checked::Unattributable(_)) | (Verdict::More { .. }, _) => Conduct::Neutral,
                (Verdict::Accept { quorum }, _) if quorum.contains(&i) => Conduct::Agreed,
                (Verdict::Accept { .. }, _) => Conduct::Contradicted,
                (Verdict::Fail, Checked::Malformed(_)) => Conduct::Contradicted,
                (Verdict::Fail, Checked::Valid(_)) => Conduct::Neutral,
            };
            (r.worker, c)
        })
        .collect()
}

/// Each attributable replica's bearing on its worker's trust streak
/// ([`gleaner_protocol::replication::streak_after`]): agreeing counts as *checked* only when
/// the task had at least two valid replicas to compare; a contradiction is a contradiction.
pub fn evidence(replicas: &[Replica], verdict: &Verdict) -> Vec<(Address, Evidence)> {
    let valid = replicas
        .iter()
        .filter(|r| r.checked.output().is_some())
        .count();
    conducts(replicas, verdict)
        .into_iter()
        .map(|(w, c)| {
            let e = match c {
                Conduct::Agreed if valid >= 2 => Evidence::CheckedAgreed,
                Conduct::Contradicted => Evidence::Contradicted,
                Conduct::Agreed | Conduct::Neutral => Evidence::None,
            };
            (w, e)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::tests::{embedding, replica, valid, w};

    #[test]
    fn updates_are_bounded() {
        let cases = [
            (9_000, Conduct::Agreed, 9_100),
            (9_950, Conduct::Agreed, 10_000),
            (10_000, Conduct::Agreed, 10_000),
            (12_000, Conduct::Neutral, 10_000),
            (9_000, Conduct::Contradicted, 7_000),
            (1_500, Conduct::Contradicted, 0),
            (0, Conduct::Contradicted, 0),
            (4_321, Conduct::Neutral, 4_321),
        ];
        for (p, c, want) in cases {
            assert_eq!(update(p, c), want, "{p} {c:?}");
        }
    }

    #[test]
    fn conduct_per_verdict() {
        let ok = || valid(embedding(1, 0, 0.0));
        let reps = vec![
            replica(1, 9_000, ok()),
            replica(2, 9_000, ok()),
            replica(3, 9_000, valid(embedding(1, 5, 0.0))),
            replica(4, 9_000, Checked::Malformed("junk".into())),
            replica(5, 9_000, Checked::Unattributable("bad sig".into())),
        ];
        let accept = Verdict::Accept { quorum: vec![0, 1] };
        use Conduct::*;
        let got: Vec<Conduct> = conducts(&reps, &accept).into_iter().map(|x| x.1).collect();
        assert_eq!(
            got,
            vec![Agreed, Agreed, Contradicted, Contradicted, Neutral]
        );
        let got: Vec<Conduct> = conducts(&reps, &Verdict::Fail)
            .into_iter()
            .map(|x| x.1)
            .collect();
        assert_eq!(got, vec![Neutral, Neutral, Neutral, Contradicted, Neutral]);
        assert!(
            conducts(&reps, &Verdict::More { extra: 1 })
                .iter()
                .all(|x| x.1 == Neutral)
        );
        assert_eq!(conducts(&reps, &accept)[2].0, w(3));
        use Evidence as E;
        let got: Vec<Evidence> = evidence(&reps, &accept).into_iter().map(|x| x.1).collect();
        assert_eq!(
            got,
            vec![
                E::CheckedAgreed,
                E::CheckedAgreed,
                E::Contradicted,
                E::Contradicted,
                E::None
            ]
        );
        // A lone replica accepted proves nothing about its worker.
        let lone = vec![replica(1, 9_000, ok())];
        let q0 = Verdict::Accept { quorum: vec![0] };
        assert_eq!(evidence(&lone, &q0), vec![(w(1), E::None)]);
        assert_eq!(conducts(&lone, &q0), vec![(w(1), Agreed)]);
    }
}
