//! EIP-712 messages that workers, requesters and the verifier sign for the coordinator.
//!
//! The domain is bound to the chain id and the `JobMarket` address, so a signature for one
//! deployment is worthless on another. Each message carries an expiry; sign-in also a nonce
//! that the coordinator requires to increase, so no message can be replayed.

use alloy::primitives::{Address, B256, Signature};
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
    fn expiry_window() {
        assert!(check_expiry(100, 50, 600).is_ok());
        assert!(check_expiry(49, 50, 600).is_err());
        assert!(check_expiry(10_000, 50, 600).is_err());
    }
}
