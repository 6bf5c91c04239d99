// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title IJobLookup
/// @notice What the worker registry asks the job market when it slashes a worker for a job.
interface IJobLookup {
    /// @notice The requester of `jobId`, or address(0) when the job does not exist.
    function requesterOf(uint256 jobId) external view returns (address);
}
