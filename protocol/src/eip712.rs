//! EIP-712 messages that workers, requesters and the verifier sign for the coordinator.
//!
//! The domain is bound to the chain id and the `JobMarket` address, so a signature for one
//! deployment is worthless on another. Each message carries an expiry; sign-in also a nonce
//! that the coordinator requires to increase, so no message can be replayed.

use alloy::primitives::{Address, B256, Bytes, Signature};
use alloy::sol_types::{Eip712Domain, SolStruct, eip712_domain};

use crate::{Error, Result};

alloy::sol! {
    /// A worker proves control of its staking key and states its capabilities.
    #[derive(Debug, PartialEq, Eq)]
    struct WorkerSignIn {
        address worker;
        bytes32 capabilitiesHash;
        uint64 nonce;
        uint64 expiry;
    }

    /// A worker's result for one task: the hash of its output blob.
    #[derive(Debug, PartialEq, Eq)]
    struct TaskResult {
        bytes32 taskHash;
        bytes32 resultHash;
        address worker;
    }

    /// A worker's results for many tasks, signed once. `resultsRoot` is the root of the tree
    /// ([`crate::merkle::MerkleTree::from_leaves`]) over the EIP-712 struct hashes of the
    /// batch's `TaskResult`s, in the order sent; `count` is how many there are. Each result of
    /// the batch is then as binding as a `TaskResult` signature: see [`ResultSignature`].
    #[derive(Debug, PartialEq, Eq)]
    struct TaskResults {
        bytes32 resultsRoot;
        uint32 count;
        address worker;
    }

    /// A requester registers the manifest of an on-chain job with the coordinator.
    #[derive(Debug, PartialEq, Eq)]
    struct JobRegistration {
        uint256 jobId;
        bytes32 specHash;
        address requester;
        uint64 expiry;
    }

    /// A requester lets `grantee` read the blobs of job `jobId` until `expiry`: itself (its
    /// inputs and outputs, at any time), or anyone holding the grant (`grantee` = 0: the
    /// accepted outputs only, once the job is settled).
    #[derive(Debug, PartialEq, Eq)]
    struct ReadGrant {
        uint256 jobId;
        address grantee;
        uint64 expiry;
    }
}

/// The Gleaner EIP-712 domain of one deployment.
pub fn domain(chain_id: u64, market: Address) -> Eip712Domain {
    eip712_domain! {
        name: "Gleaner",
        version: "1",
        chain_id: chain_id,
        verifying_contract: market,
    }
}

/// The digest a signer signs for `msg` in `domain`.
pub fn digest<T: SolStruct>(msg: &T, domain: &Eip712Domain) -> B256 {
    msg.eip712_signing_hash(domain)
}

/// Recovers the signer of `msg` and checks it is `expected`.
pub fn verify<T: SolStruct>(
    msg: &T,
    domain: &Eip712Domain,
    signature: &Signature,
    expected: Address,
) -> Result<()> {
    let signer = signature
        .recover_address_from_prehash(&digest(msg, domain))
        .map_err(|e| Error::Invalid(format!("bad signature: {e}")))?;
    if signer != expected {
        return Err(Error::Invalid(format!(
            "signed by {signer}, not by {expected}"
        )));
    }
    Ok(())
}

/// Most results one [`TaskResults`] signature may cover.
pub const MAX_RESULT_BATCH: usize = 4096;

/// The leaf of one result in a [`TaskResults`] tree: the struct hash of its `TaskResult`.
pub fn result_leaf(task_hash: B256, result_hash: B256, worker: Address) -> B256 {
    TaskResult {
        taskHash: task_hash,
        resultHash: result_hash,
        worker,
    }
    .eip712_hash_struct()
}

/// How a worker signed one result: alone (an EIP-712 `TaskResult` signature, 65 bytes) or as a
/// member of a batch (the batch's `TaskResults` signature and the result's Merkle proof up to
/// the signed root).
///
/// Wire and storage form ([`Self::encode`]): 65 bytes for `Single`; for `Batch`, the 65-byte
/// signature, `count` as 4 big-endian bytes, then the proof's 32-byte hashes, bottom-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultSignature {
    /// A `TaskResult` signature.
    Single(Signature),
    /// A `TaskResults` signature over a batch of `count` results, and this result's proof.
    Batch {
        /// The batch's signature.
        signature: Signature,
        /// Results in the batch.
        count: u32,
        /// Sibling path from this result's leaf to the signed root.
        proof: Vec<B256>,
    },
}

impl ResultSignature {
    /// The wire and storage form.
    pub fn encode(&self) -> Bytes {
        match self {
            Self::Single(sig) => Bytes::from(sig.as_bytes().to_vec()),
            Self::Batch {
                signature,
                count,
                proof,
            } => {
                let mut out = Vec::with_capacity(69 + 32 * proof.len());
                out.extend_from_slice(&signature.as_bytes());
                out.extend_from_slice(&count.to_be_bytes());
                for p in proof {
                    out.extend_from_slice(p.as_slice());
                }
                Bytes::from(out)
            }
        }
    }

    /// Parses [`Self::encode`]'s form; anything else (a wrong length, a proof deeper than a
    /// batch of [`MAX_RESULT_BATCH`] needs, a zero count) is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let signature = |b: &[u8]| {
            Signature::from_raw(b).map_err(|e| Error::Invalid(format!("malformed signature: {e}")))
        };
        if bytes.len() == 65 {
            return Ok(Self::Single(signature(bytes)?));
        }
        if bytes.len() < 69 || !(bytes.len() - 69).is_multiple_of(32) {
            return Err(Error::Invalid(format!(
                "a result signature is 65 bytes, or 69 + 32·k for a batch member; got {}",
                bytes.len()
            )));
        }
        let count = u32::from_be_bytes(bytes[65..69].try_into().expect("4 bytes"));
        let proof: Vec<B256> = bytes[69..].chunks(32).map(B256::from_slice).collect();
        let depth = usize::BITS - (MAX_RESULT_BATCH - 1).leading_zeros();
        if count == 0 || count as usize > MAX_RESULT_BATCH || proof.len() > depth as usize {
            return Err(Error::Invalid(format!(
                "a batch of {count} results with a proof of {} hashes is not one a worker can \
                 sign (at most {MAX_RESULT_BATCH} results)",
                proof.len()
            )));
        }
        Ok(Self::Batch {
            signature: signature(&bytes[..65])?,
            count,
            proof,
        })
    }

    /// What this signature signs when it binds `worker` to `result_hash` as its result for
    /// `task_hash`: the EIP-712 digest (of the `TaskResult`, or of the batch's `TaskResults`
    /// with the root the proof leads to) and the signature over it. [`Self::verify`] recovers
    /// the signer from them; every member of a batch gives the batch's one digest and signature,
    /// so a verifier that remembers recovered signers recovers each batch once.
    pub fn signed(
        &self,
        domain: &Eip712Domain,
        task_hash: B256,
        result_hash: B256,
        worker: Address,
    ) -> (B256, &Signature) {
        match self {
            Self::Single(sig) => (
                digest(
                    &TaskResult {
                        taskHash: task_hash,
                        resultHash: result_hash,
                        worker,
                    },
                    domain,
                ),
                sig,
            ),
            Self::Batch {
                signature,
                count,
                proof,
            } => {
                let leaf = result_leaf(task_hash, result_hash, worker);
                let root = proof
                    .iter()
                    .fold(leaf, |acc, p| crate::merkle::hash_pair(acc, *p));
                let msg = TaskResults {
                    resultsRoot: root,
                    count: *count,
                    worker,
                };
                (digest(&msg, domain), signature)
            }
        }
    }

    /// Checks that `worker` signed `result_hash` as its result for `task_hash`.
    pub fn verify(
        &self,
        domain: &Eip712Domain,
        task_hash: B256,
        result_hash: B256,
        worker: Address,
    ) -> Result<()> {
        let (digest, signature) = self.signed(domain, task_hash, result_hash, worker);
        let signer = signature
            .recover_address_from_prehash(&digest)
            .map_err(|e| Error::Invalid(format!("bad signature: {e}")))?;
        if signer != worker {
            return Err(Error::Invalid(format!(
                "signed by {signer}, not by {worker}"
            )));
        }
        Ok(())
    }
}

/// Checks that `signature` (either form of [`ResultSignature`]) binds `worker` to
/// `result_hash` as its result for `task_hash`.
pub fn verify_result(
    domain: &Eip712Domain,
    task_hash: B256,
    result_hash: B256,
    worker: Address,
    signature: &[u8],
) -> Result<()> {
    ResultSignature::decode(signature)?.verify(domain, task_hash, result_hash, worker)
}

/// A batch of a worker's results to sign once: build it over `(task_hash, result_hash)` pairs
/// in the order they will be sent, sign [`Self::message`], and give each result
/// [`Self::member`].
#[derive(Debug, Clone)]
pub struct ResultBatch {
    tree: crate::merkle::MerkleTree,
    message: TaskResults,
}

impl ResultBatch {
    /// The batch of `worker`'s `results`; between 1 and [`MAX_RESULT_BATCH`] of them.
    pub fn new(worker: Address, results: &[(B256, B256)]) -> Result<Self> {
        if results.is_empty() || results.len() > MAX_RESULT_BATCH {
            return Err(Error::Invalid(format!(
                "a batch holds 1 to {MAX_RESULT_BATCH} results, not {}",
                results.len()
            )));
        }
        let tree = crate::merkle::MerkleTree::from_leaves(
            results
                .iter()
                .map(|(task, result)| result_leaf(*task, *result, worker))
                .collect(),
        );
        let message = TaskResults {
            resultsRoot: tree.root(),
            count: u32::try_from(results.len()).expect("at most MAX_RESULT_BATCH"),
            worker,
        };
        Ok(Self { tree, message })
    }

    /// The message the worker signs.
    pub fn message(&self) -> &TaskResults {
        &self.message
    }

    /// Result `i`'s own signature, given the batch's.
    pub fn member(&self, i: usize, signature: Signature) -> Option<ResultSignature> {
        Some(ResultSignature::Batch {
            signature,
            count: self.message.count,
            proof: self.tree.proof(i)?,
        })
    }
}

/// Checks an expiry (unix seconds) against `now`; `max_ahead` bounds how far ahead it may be.
pub fn check_expiry(expiry: u64, now: u64, max_ahead: u64) -> Result<()> {
    if expiry < now {
        return Err(Error::Invalid(format!(
            "message expired at {expiry} (now {now})"
        )));
    }
    if expiry > now.saturating_add(max_ahead) {
        return Err(Error::Invalid(format!(
            "expiry {expiry} is more than {max_ahead}s ahead"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{U256, address};
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;

    #[test]
    fn sign_and_verify_round_trip_and_binding() {
        let signer = PrivateKeySigner::random();
        let other = PrivateKeySigner::random();
        let market = address!("0x5FbDB2315678afecb367f032d93F642f64180aa3");
        let d = domain(31337, market);
        let msg = JobRegistration {
            jobId: U256::from(7),
            specHash: B256::repeat_byte(1),
            requester: signer.address(),
            expiry: 1_000,
        };
        let sig = signer.sign_hash_sync(&digest(&msg, &d)).unwrap();
        verify(&msg, &d, &sig, signer.address()).unwrap();
        // Another signer, chain, market or message fails.
        assert!(verify(&msg, &d, &sig, other.address()).is_err());
        assert!(verify(&msg, &domain(1, market), &sig, signer.address()).is_err());
        assert!(verify(&msg, &domain(31337, Address::ZERO), &sig, signer.address()).is_err());
        let changed = JobRegistration {
            jobId: U256::from(8),
            ..msg.clone()
        };
        assert!(verify(&changed, &d, &sig, signer.address()).is_err());
    }

    #[test]
    fn batch_members_verify_alone_and_bind_task_result_worker_and_domain() {
        let signer = PrivateKeySigner::random();
        let d = domain(31337, Address::repeat_byte(9));
        for n in [1usize, 2, 3, 7, 64] {
            let items: Vec<(B256, B256)> = (0..n)
                .map(|i| (B256::repeat_byte(i as u8), B256::repeat_byte(100 + i as u8)))
                .collect();
            let batch = ResultBatch::new(signer.address(), &items).unwrap();
            let sig = signer.sign_hash_sync(&digest(batch.message(), &d)).unwrap();
            for (i, (task, result)) in items.iter().enumerate() {
                let member = batch.member(i, sig).unwrap();
                let bytes = member.encode();
                assert_eq!(ResultSignature::decode(&bytes).unwrap(), member);
                verify_result(&d, *task, *result, signer.address(), &bytes).unwrap();
                // Another result, task, worker or deployment does not verify.
                let other = B256::repeat_byte(0xee);
                assert!(verify_result(&d, *task, other, signer.address(), &bytes).is_err());
                assert!(verify_result(&d, other, *result, signer.address(), &bytes).is_err());
                assert!(verify_result(&d, *task, *result, Address::ZERO, &bytes).is_err());
                let d2 = domain(1, Address::repeat_byte(9));
                assert!(verify_result(&d2, *task, *result, signer.address(), &bytes).is_err());
            }
            assert!(batch.member(n, sig).is_none());
        }
        // A single signature still verifies through the same call.
        let (task, result) = (B256::repeat_byte(1), B256::repeat_byte(2));
        let msg = TaskResult {
            taskHash: task,
            resultHash: result,
            worker: signer.address(),
        };
        let sig = signer.sign_hash_sync(&digest(&msg, &d)).unwrap();
        verify_result(&d, task, result, signer.address(), &sig.as_bytes()).unwrap();
        // Malformed forms are refused, not misread.
        assert!(ResultSignature::decode(&[0u8; 64]).is_err());
        assert!(ResultSignature::decode(&[0u8; 70]).is_err());
        assert!(ResultBatch::new(signer.address(), &[]).is_err());
        let mut zero_count = sig.as_bytes().to_vec();
        zero_count.extend_from_slice(&0u32.to_be_bytes());
        assert!(ResultSignature::decode(&zero_count).is_err());
    }

    #[test]
    fn expiry_window() {
        assert!(check_expiry(100, 50, 600).is_ok());
        assert!(check_expiry(49, 50, 600).is_err());
        assert!(check_expiry(10_000, 50, 600).is_err());
    }
}
