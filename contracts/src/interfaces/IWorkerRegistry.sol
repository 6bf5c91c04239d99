// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title IWorkerRegistry
/// @notice What the job market asks the worker registry.
interface IWorkerRegistry {
    /// @notice True when `worker` has stake or unbonding stake, i.e. it is still slashable.
    function isBonded(address worker) external view returns (bool);

    /// @notice True when `worker`'s active stake (not counting unbonding) is non-zero and at least `minStake`.
    function isEligible(address worker) external view returns (bool);
}
