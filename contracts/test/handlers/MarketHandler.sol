// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {GleanerToken} from "../../src/GleanerToken.sol";
import {JobMarket} from "../../src/JobMarket.sol";
import {Test} from "../utils/Test.sol";

/// @title MarketHandler
/// @notice Drives the job market through valid sequences of calls for the invariant fuzzer (every action
/// picks arguments that should succeed, so `fail_on_revert` catches any unexpected revert), and keeps
/// `ghost_` totals to compare against the contract's own accounting.
contract MarketHandler is Test {
    uint256 internal constant MAX_BUDGET = 1_000_000 ether;

    JobMarket public immutable market;
    GleanerToken public immutable token;
    address public immutable coordinator;
    address public immutable verifier;
    address public immutable treasury;

    address[] internal _requesters;
    address[] internal _workers; // ascending, all bonded
    uint256[] internal _jobs;

    /// @dev The planned workers and units of each chunked settlement, and how far the chunks got.
    mapping(uint256 jobId => address[]) internal _planWorkers;
    mapping(uint256 jobId => uint256[]) internal _planUnits;
    mapping(uint256 jobId => uint256) internal _planNext;

    uint256 public ghost_deposited;
    uint256 public ghost_paidOut;
    uint256 public ghost_doubleSettlements;
    mapping(uint256 jobId => uint256) public ghost_settlements;
    mapping(uint256 jobId => uint256) public ghost_jobToWorkers;
    mapping(uint256 jobId => uint256) public ghost_jobToRequester;
    mapping(uint256 jobId => uint256) public ghost_jobToTreasury;
    mapping(bytes32 action => uint256) public calls;

    constructor(
        JobMarket market_,
        GleanerToken token_,
        address coordinator_,
        address verifier_,
        address treasury_,
        address[] memory requesters_,
        address[] memory workers_
    ) {
        market = market_;
        token = token_;
        coordinator = coordinator_;
        verifier = verifier_;
        treasury = treasury_;
        _requesters = requesters_;
        _workers = workers_;
        for (uint256 i; i < requesters_.length; ++i) {
            vm.prank(requesters_[i]);
            token_.approve(address(market_), type(uint256).max);
        }
    }

    // ------------------------------------------------------------------ actions

    function createJob(uint256 actorSeed, uint256 budget, uint32 taskCount, uint256 duration) external {
        address requester = _requesters[actorSeed % _requesters.length];
        budget = bound(budget, 1, MAX_BUDGET);
        taskCount = uint32(bound(taskCount, 1, 20_000));
        duration = bound(duration, 1 hours, 10 days);
        if (token.balanceOf(requester) < budget) token.faucet(requester, MAX_BUDGET);
        vm.prank(requester);
        uint256 jobId = market.createJob(keccak256(abi.encode(_jobs.length)), taskCount, 2, budget, _deadline(duration));
        _jobs.push(jobId);
        ghost_deposited += budget;
        calls["createJob"]++;
    }

    function postTasks(uint256 jobSeed) external {
        (bool found, uint256 jobId) = _pick(jobSeed, JobMarket.JobStatus.Open);
        if (!found) return;
        JobMarket.Job memory job = market.getJob(jobId);
        if (block.timestamp > job.deadline) return;
        vm.prank(coordinator);
        // Every other job uses spot checks: a commitment now, a reveal and a replica pool later.
        if (jobSeed % 2 == 0) {
            market.postTasksCommitted(
                jobId, keccak256(abi.encode("root", jobId)), job.taskCount, keccak256(abi.encode(_secret(jobId)))
            );
        } else {
            market.postTasks(jobId, keccak256(abi.encode("root", jobId)), job.taskCount);
        }
        calls["postTasks"]++;
    }

    function _secret(uint256 jobId) private pure returns (bytes32) {
        return keccak256(abi.encode("secret", jobId));
    }

    /// @dev Replicas a spot-checked settlement pays for: between `accepted` and 2 x `accepted`.
    function _paidReplicas(uint32 accepted, uint256 seed) private pure returns (uint64) {
        // casting to 'uint64' is safe because the remainder is at most `accepted`, a uint32
        // forge-lint: disable-next-line(unsafe-typecast)
        return uint64(accepted) + uint64(seed % (uint256(accepted) + 1));
    }

    function settle(uint256 jobSeed, uint32 accepted, uint256 mask, uint256 unitSeed) external {
        (bool found, uint256 jobId) = _pick(jobSeed, JobMarket.JobStatus.Posted);
        if (!found) return;
        JobMarket.Job memory job = market.getJob(jobId);
        accepted = uint32(bound(accepted, 0, job.taskCount));
        (address[] memory ws, uint256[] memory us) = accepted == 0 ? _empty() : _plan(mask, unitSeed);
        Snapshot memory before = _snapshot(job.requester);
        bool spot = market.checkCommitment(jobId) != bytes32(0);
        vm.prank(verifier);
        if (spot) {
            market.settleReplicas(
                jobId,
                accepted,
                _paidReplicas(accepted, unitSeed),
                ws,
                us,
                keccak256(abi.encode("report", jobId)),
                _secret(jobId)
            );
        } else {
            market.settle(jobId, accepted, ws, us, keccak256(abi.encode("report", jobId)));
        }
        _recordSettlement(jobId, job.requester, before);
        calls["settle"]++;
    }

    function beginSettlement(uint256 jobSeed, uint32 accepted, uint256 mask, uint256 unitSeed) external {
        (bool found, uint256 jobId) = _pick(jobSeed, JobMarket.JobStatus.Posted);
        if (!found) return;
        accepted = uint32(bound(accepted, 0, market.getJob(jobId).taskCount));
        (address[] memory ws, uint256[] memory us) = accepted == 0 ? _empty() : _plan(mask, unitSeed);
        uint256 total;
        for (uint256 i; i < us.length; ++i) {
            total += us[i];
        }
        _planWorkers[jobId] = ws;
        _planUnits[jobId] = us;
        bool spot = market.checkCommitment(jobId) != bytes32(0);
        vm.prank(verifier);
        if (spot) {
            market.beginSettlementReplicas(
                jobId,
                accepted,
                _paidReplicas(accepted, unitSeed),
                total,
                keccak256(abi.encode("report", jobId)),
                _secret(jobId)
            );
        } else {
            market.beginSettlement(jobId, accepted, total, keccak256(abi.encode("report", jobId)));
        }
        calls["beginSettlement"]++;
    }

    function settleChunk(uint256 jobSeed, uint256 lenSeed) external {
        (bool found, uint256 jobId) = _pickSettling(jobSeed, true);
        if (!found) return;
        uint256 next = _planNext[jobId];
        uint256 len = bound(lenSeed, 1, _planWorkers[jobId].length - next);
        address[] memory ws = new address[](len);
        uint256[] memory us = new uint256[](len);
        for (uint256 j; j < len; ++j) {
            ws[j] = _planWorkers[jobId][next + j];
            us[j] = _planUnits[jobId][next + j];
        }
        uint256 workersBefore = _workersTotal();
        vm.prank(verifier);
        market.settleChunk(jobId, ws, us);
        ghost_jobToWorkers[jobId] += _workersTotal() - workersBefore;
        _planNext[jobId] = next + len;
        calls["settleChunk"]++;
    }

    function finalizeSettlement(uint256 jobSeed) external {
        (bool found, uint256 jobId) = _pickSettling(jobSeed, false);
        if (!found) return;
        address requester = market.getJob(jobId).requester;
        Snapshot memory before = _snapshot(requester);
        vm.prank(verifier);
        market.finalizeSettlement(jobId);
        _recordSettlement(jobId, requester, before);
        calls["finalizeSettlement"]++;
    }

    /// @dev Tries to settle an already settled job again; success would be a bug.
    function settleAgain(uint256 jobSeed, uint256 mask, uint256 unitSeed) external {
        (bool found, uint256 jobId) = _pick(jobSeed, JobMarket.JobStatus.Settled);
        if (!found) return;
        (address[] memory ws, uint256[] memory us) = _plan(mask, unitSeed);
        vm.startPrank(verifier);
        try market.settle(jobId, 1, ws, us, bytes32(0)) {
            ghost_doubleSettlements++;
        } catch {}
        try market.beginSettlement(jobId, 0, 0, bytes32(0)) {
            ghost_doubleSettlements++;
        } catch {}
        try market.finalizeSettlement(jobId) {
            ghost_doubleSettlements++;
        } catch {}
        vm.stopPrank();
        calls["settleAgain"]++;
    }

    function cancel(uint256 jobSeed) external {
        (bool found, uint256 jobId) = _pick(jobSeed, JobMarket.JobStatus.Open);
        if (!found) return;
        JobMarket.Job memory job = market.getJob(jobId);
        vm.prank(job.requester);
        market.cancel(jobId);
        ghost_paidOut += job.budget;
        calls["cancel"]++;
    }

    function reclaim(uint256 jobSeed, bool posted) external {
        (bool found, uint256 jobId) = _pick(jobSeed, posted ? JobMarket.JobStatus.Posted : JobMarket.JobStatus.Open);
        if (!found) return;
        JobMarket.Job memory job = market.getJob(jobId);
        if (block.timestamp <= job.deadline) vm.warp(uint256(job.deadline) + 1);
        vm.prank(job.requester);
        market.reclaim(jobId);
        ghost_paidOut += job.budget;
        calls["reclaim"]++;
    }

    function withdraw(uint256 actorSeed) external {
        address[] memory accounts = allAccounts();
        address account = accounts[actorSeed % accounts.length];
        uint256 amount = market.withdrawable(account);
        if (amount == 0) return;
        vm.prank(account);
        market.withdraw();
        ghost_paidOut += amount;
        calls["withdraw"]++;
    }

    function warp(uint256 secs) external {
        vm.warp(block.timestamp + bound(secs, 0, 3 days));
        calls["warp"]++;
    }

    // ------------------------------------------------------------------ views for the invariants

    function jobIds() external view returns (uint256[] memory) {
        return _jobs;
    }

    /// @notice Every account that can hold a withdrawable balance.
    function allAccounts() public view returns (address[] memory accounts) {
        accounts = new address[](_requesters.length + _workers.length + 1);
        uint256 k;
        for (uint256 i; i < _requesters.length; ++i) {
            accounts[k++] = _requesters[i];
        }
        for (uint256 i; i < _workers.length; ++i) {
            accounts[k++] = _workers[i];
        }
        accounts[k] = treasury;
    }

    // ------------------------------------------------------------------ internals

    struct Snapshot {
        uint256 workers;
        uint256 requester;
        uint256 treasury;
    }

    function _snapshot(address requester) internal view returns (Snapshot memory s) {
        s.workers = _workersTotal();
        s.requester = market.withdrawable(requester);
        s.treasury = market.withdrawable(treasury);
    }

    function _recordSettlement(uint256 jobId, address requester, Snapshot memory before) internal {
        ghost_settlements[jobId]++;
        ghost_jobToWorkers[jobId] += _workersTotal() - before.workers;
        ghost_jobToRequester[jobId] += market.withdrawable(requester) - before.requester;
        ghost_jobToTreasury[jobId] += market.withdrawable(treasury) - before.treasury;
    }

    function _workersTotal() internal view returns (uint256 sum) {
        for (uint256 i; i < _workers.length; ++i) {
            sum += market.withdrawable(_workers[i]);
        }
    }

    function _deadline(uint256 duration) internal view returns (uint64) {
        // casting to 'uint64' is safe because test timestamps stay far below 2^64
        // forge-lint: disable-next-line(unsafe-typecast)
        return uint64(block.timestamp + duration);
    }

    /// @dev A non-empty ascending subset of the workers (bits of `mask`) with units in [1, 1e6].
    function _plan(uint256 mask, uint256 unitSeed) internal view returns (address[] memory ws, uint256[] memory us) {
        uint256 n = _workers.length;
        mask = bound(mask, 1, 2 ** n - 1);
        uint256 count;
        for (uint256 i; i < n; ++i) {
            if ((mask >> i) & 1 == 1) count++;
        }
        ws = new address[](count);
        us = new uint256[](count);
        uint256 k;
        for (uint256 i; i < n; ++i) {
            if ((mask >> i) & 1 == 1) {
                ws[k] = _workers[i];
                us[k] = 1 + uint256(keccak256(abi.encode(unitSeed, i))) % 1_000_000;
                k++;
            }
        }
    }

    function _empty() internal pure returns (address[] memory, uint256[] memory) {
        return (new address[](0), new uint256[](0));
    }

    /// @dev The first job at or after a random index with `status`.
    function _pick(uint256 seed, JobMarket.JobStatus status) internal view returns (bool, uint256) {
        uint256 n = _jobs.length;
        for (uint256 k; k < n; ++k) {
            uint256 jobId = _jobs[(seed % n + k) % n];
            if (market.getJob(jobId).status == status) return (true, jobId);
        }
        return (false, 0);
    }

    /// @dev A settling job with chunks left to pay (`chunksLeft`) or with all chunks paid.
    function _pickSettling(uint256 seed, bool chunksLeft) internal view returns (bool, uint256) {
        uint256 n = _jobs.length;
        for (uint256 k; k < n; ++k) {
            uint256 jobId = _jobs[(seed % n + k) % n];
            if (market.getJob(jobId).status != JobMarket.JobStatus.Settling) continue;
            bool left = _planNext[jobId] < _planWorkers[jobId].length;
            if (left == chunksLeft) return (true, jobId);
        }
        return (false, 0);
    }
}
