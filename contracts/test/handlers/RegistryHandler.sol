// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {GleanerToken} from "../../src/GleanerToken.sol";
import {WorkerRegistry} from "../../src/WorkerRegistry.sol";
import {Test} from "../utils/Test.sol";

/// @title RegistryHandler
/// @notice Drives the worker registry through valid stake, unstake, withdraw and slash calls for the
/// invariant fuzzer and keeps `ghost_` totals of the tokens that went in and out.
contract RegistryHandler is Test {
    WorkerRegistry public immutable registry;
    GleanerToken public immutable token;
    address public immutable slasher;
    uint256 public immutable knownJobId;

    address[] internal _workers;

    uint256 public ghost_staked;
    uint256 public ghost_withdrawn;
    uint256 public ghost_slashed;
    mapping(bytes32 action => uint256) public calls;

    constructor(
        WorkerRegistry registry_,
        GleanerToken token_,
        address slasher_,
        uint256 knownJobId_,
        address[] memory workers_
    ) {
        registry = registry_;
        token = token_;
        slasher = slasher_;
        knownJobId = knownJobId_;
        _workers = workers_;
        for (uint256 i; i < workers_.length; ++i) {
            vm.prank(workers_[i]);
            token_.approve(address(registry_), type(uint256).max);
        }
    }

    function stake(uint256 actorSeed, uint256 amount) external {
        address worker = _worker(actorSeed);
        amount = bound(amount, 1, 1_000_000 ether);
        token.faucet(worker, amount);
        vm.prank(worker);
        registry.stake(amount);
        ghost_staked += amount;
        calls["stake"]++;
    }

    function requestUnstake(uint256 actorSeed, uint256 amount) external {
        address worker = _worker(actorSeed);
        uint256 active = registry.stakeOf(worker);
        if (active == 0) return;
        amount = bound(amount, 1, active);
        vm.prank(worker);
        registry.requestUnstake(amount);
        calls["requestUnstake"]++;
    }

    function withdraw(uint256 actorSeed) external {
        address worker = _worker(actorSeed);
        (uint256 amount, uint64 unlockAt) = registry.unbondingOf(worker);
        if (amount == 0) return;
        if (block.timestamp < unlockAt) vm.warp(unlockAt);
        vm.prank(worker);
        registry.withdraw();
        ghost_withdrawn += amount;
        calls["withdraw"]++;
    }

    function slash(uint256 actorSeed, uint256 amount, uint8 jobChoice) external {
        address worker = _worker(actorSeed);
        (uint256 unbonding,) = registry.unbondingOf(worker);
        uint256 bonded = registry.stakeOf(worker) + unbonding;
        if (bonded == 0) return;
        amount = bound(amount, 1, 2 * bonded);
        uint256 jobId = jobChoice % 3 == 0 ? 0 : jobChoice % 3 == 1 ? knownJobId : 424_242;
        vm.prank(slasher);
        uint256 taken = registry.slash(worker, amount, jobId, keccak256(abi.encode(actorSeed, amount)));
        ghost_slashed += taken;
        calls["slash"]++;
    }

    function warp(uint256 secs) external {
        vm.warp(block.timestamp + bound(secs, 0, 10 days));
        calls["warp"]++;
    }

    function workers() external view returns (address[] memory) {
        return _workers;
    }

    function _worker(uint256 seed) internal view returns (address) {
        return _workers[seed % _workers.length];
    }
}
