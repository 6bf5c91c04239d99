//! A Merkle tree over task hashes whose proofs OpenZeppelin's `MerkleProof.verify` accepts.
//!
//! - Leaf i = keccak256(keccak256(abi.encode(uint256 i, bytes32 taskHash))): double hashing, as
//!   OpenZeppelin's StandardMerkleTree does, so no inner node can pass for a leaf.
//! - Inner node = keccak256 of the two children in ascending order (OZ `_hashPair`, commutative).
//! - A level with an odd count carries its last node up unchanged.

use alloy::primitives::{B256, U256, keccak256};
use alloy::sol_types::SolValue;

/// The leaf of task `index` with hash `task_hash`.
pub fn leaf(index: u64, task_hash: B256) -> B256 {
    keccak256(keccak256((U256::from(index), task_hash).abi_encode()))
}

/// OpenZeppelin's commutative pair hash.
pub fn hash_pair(a: B256, b: B256) -> B256 {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(lo.as_slice());
    buf[32..].copy_from_slice(hi.as_slice());
    keccak256(buf)
}

/// A tree built bottom-up; `levels[0]` are the leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleTree {
    levels: Vec<Vec<B256>>,
}

impl MerkleTree {
    /// Builds the tree over task hashes in task order. An empty list has root zero.
    pub fn from_task_hashes(task_hashes: &[B256]) -> Self {
        Self::from_leaves(
            task_hashes
                .iter()
                .enumerate()
                .map(|(i, h)| leaf(i as u64, *h))
                .collect(),
        )
    }

    /// Builds the tree over leaves that are already hashes (no inner node may pass for one of
    /// them: see [`leaf`] for how task leaves ensure it).
    pub fn from_leaves(leaves: Vec<B256>) -> Self {
        let mut levels = vec![leaves];
        while levels.last().is_some_and(|l: &Vec<B256>| l.len() > 1) {
            let below = levels.last().expect("non-empty");
            let up = below
                .chunks(2)
                .map(|p| {
                    if p.len() == 2 {
                        hash_pair(p[0], p[1])
                    } else {
                        p[0]
                    }
                })
                .collect();
            levels.push(up);
        }
        Self { levels }
    }

    /// The root (zero for no tasks).
    pub fn root(&self) -> B256 {
        self.levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or(B256::ZERO)
    }

    /// Number of leaves.
    pub fn len(&self) -> usize {
        self.levels[0].len()
    }

    /// Whether the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sibling path of leaf `index`, bottom-up; `None` when out of range.
    pub fn proof(&self, index: usize) -> Option<Vec<B256>> {
        if index >= self.len() {
            return None;
        }
        let mut proof = Vec::new();
        let mut i = index;
        for level in &self.levels[..self.levels.len() - 1] {
            let sibling = i ^ 1;
            if sibling < level.len() {
                proof.push(level[sibling]);
            }
            i /= 2;
        }
        Some(proof)
    }
}

/// OpenZeppelin `MerkleProof.verify(proof, root, leaf)`.
pub fn verify(proof: &[B256], root: B256, leaf: B256) -> bool {
    proof.iter().fold(leaf, |acc, p| hash_pair(acc, *p)) == root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(n: usize) -> Vec<B256> {
        (0..n)
            .map(|i| keccak256((i as u64).to_be_bytes()))
            .collect()
    }

    #[test]
    fn every_proof_verifies_for_many_sizes() {
        for n in [1usize, 2, 3, 4, 5, 7, 8, 9, 16, 17, 100] {
            let h = hashes(n);
            let tree = MerkleTree::from_task_hashes(&h);
            for (i, th) in h.iter().enumerate() {
                let p = tree.proof(i).unwrap();
                assert!(verify(&p, tree.root(), leaf(i as u64, *th)), "n={n} i={i}");
                // The same hash at another index is another leaf.
                assert!(
                    !verify(&p, tree.root(), leaf(i as u64 + 1, *th)),
                    "n={n} i={i}"
                );
            }
            assert!(tree.proof(n).is_none());
        }
    }

    #[test]
    fn root_commits_to_every_task_and_order() {
        let h = hashes(9);
        let root = MerkleTree::from_task_hashes(&h).root();
        let mut changed = h.clone();
        changed[8] = B256::ZERO;
        assert_ne!(MerkleTree::from_task_hashes(&changed).root(), root);
        let mut swapped = h.clone();
        swapped.swap(0, 1);
        assert_ne!(MerkleTree::from_task_hashes(&swapped).root(), root);
        assert_eq!(MerkleTree::from_task_hashes(&[]).root(), B256::ZERO);
    }

    #[test]
    fn single_leaf_root_is_the_leaf() {
        let h = hashes(1);
        assert_eq!(MerkleTree::from_task_hashes(&h).root(), leaf(0, h[0]));
    }
}
