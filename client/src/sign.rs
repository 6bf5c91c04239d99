//! The signed bodies every role sends: one place that builds each EIP-712 message.

use alloy::primitives::Address;
use alloy::primitives::{B256, Bytes, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{Eip712Domain, SolStruct};
use gleaner_protocol::api::{Capabilities, ReadGrant, RegisterJob, SignIn};
use gleaner_protocol::eip712::{self, JobRegistration, TaskResult, WorkerSignIn};

use crate::{Error, Result};

fn sign<T: SolStruct>(
    what: &'static str,
    signer: &PrivateKeySigner,
    msg: &T,
    domain: &Eip712Domain,
) -> Result<Bytes> {
    let sig = signer
        .sign_hash_sync(&eip712::digest(msg, domain))
        .map_err(|e| Error::Sign {
            what,
            message: e.to_string(),
        })?;
    Ok(Bytes::from(sig.as_bytes().to_vec()))
}

/// A sign-in body: `signer` states `capabilities` (rounded to what the wire carries exactly),
/// with `nonce` (strictly increasing per address) and `expiry` (unix seconds).
pub fn sign_in(
    signer: &PrivateKeySigner,
    domain: &Eip712Domain,
    capabilities: Capabilities,
    nonce: u64,
    expiry: u64,
) -> Result<SignIn> {
    let capabilities = capabilities.round();
    let msg = WorkerSignIn {
        worker: signer.address(),
        capabilitiesHash: capabilities.hash(),
        nonce,
        expiry,
    };
    Ok(SignIn {
        address: signer.address(),
        signature: sign("sign-in", signer, &msg, domain)?,
        capabilities,
        nonce,
        expiry,
    })
}

/// A worker's signature over its result for one task.
pub fn task_result(
    signer: &PrivateKeySigner,
    domain: &Eip712Domain,
    task_hash: B256,
    result_hash: B256,
) -> Result<Bytes> {
    let msg = TaskResult {
        taskHash: task_hash,
        resultHash: result_hash,
        worker: signer.address(),
    };
    sign("task result", signer, &msg, domain)
}

/// A worker's one signature over many results, `(task_hash, result_hash)` in the order they
/// will be sent (EIP-712 `TaskResults`; see [`eip712::ResultBatch`]).
pub fn task_results(
    signer: &PrivateKeySigner,
    domain: &Eip712Domain,
    results: &[(B256, B256)],
) -> Result<Bytes> {
    let batch = eip712::ResultBatch::new(signer.address(), results).map_err(|e| Error::Sign {
        what: "task results",
        message: e.to_string(),
    })?;
    sign("task results", signer, batch.message(), domain)
}

/// A requester's registration of the manifest (`canonical` JSON) of on-chain job `job_id`.
pub fn register_job(
    signer: &PrivateKeySigner,
    domain: &Eip712Domain,
    job_id: U256,
    canonical: &[u8],
    expiry: u64,
) -> Result<RegisterJob> {
    let manifest = String::from_utf8(canonical.to_vec()).map_err(|e| Error::Sign {
        what: "job registration",
        message: format!("the manifest is not UTF-8: {e}"),
    })?;
    let msg = JobRegistration {
        jobId: job_id,
        specHash: alloy::primitives::keccak256(canonical),
        requester: signer.address(),
        expiry,
    };
    Ok(RegisterJob {
        job_id,
        signature: sign("job registration", signer, &msg, domain)?,
        manifest,
        requester: signer.address(),
        expiry,
    })
}

/// A requester's [`ReadGrant`] for the blobs of `job_id`: `grantee` is the requester itself
/// (to read its own inputs and outputs) or [`Address::ZERO`] (anyone holding it may read the
/// outputs once the job is settled), valid until `expiry` (unix seconds).
pub fn read_grant(
    signer: &PrivateKeySigner,
    domain: &Eip712Domain,
    job_id: U256,
    grantee: Address,
    expiry: u64,
) -> Result<ReadGrant> {
    let mut grant = ReadGrant {
        job_id,
        grantee,
        expiry,
        signature: Bytes::new(),
    };
    grant.signature = sign("read grant", signer, &grant.message(), domain)?;
    Ok(grant)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::address;

    #[test]
    fn a_sign_in_recovers_to_its_signer_and_only_in_its_domain() {
        let signer = PrivateKeySigner::random();
        let market = address!("0x5FbDB2315678afecb367f032d93F642f64180aa3");
        let domain = eip712::domain(31337, market);
        let caps = Capabilities {
            adapter: "cpu".into(),
            backend: "flex".into(),
            memory_bytes: 0,
            gflops: 1.0 / 3.0,
            kinds: Vec::new(),
        };
        let body = sign_in(&signer, &domain, caps, 7, 1_000).unwrap();
        assert_eq!(body.capabilities.gflops, 0.333);
        let msg = WorkerSignIn {
            worker: body.address,
            capabilitiesHash: body.capabilities.hash(),
            nonce: body.nonce,
            expiry: body.expiry,
        };
        let sig = alloy::primitives::Signature::try_from(body.signature.as_ref()).unwrap();
        eip712::verify(&msg, &domain, &sig, signer.address()).unwrap();
        let other = eip712::domain(1, market);
        assert!(eip712::verify(&msg, &other, &sig, signer.address()).is_err());
    }
}
