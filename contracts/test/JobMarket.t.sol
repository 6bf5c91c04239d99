// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {JobMarket} from "../src/JobMarket.sol";
import {IWorkerRegistry} from "../src/interfaces/IWorkerRegistry.sol";
import {FeeOnTransferERC20, MockERC20} from "./mocks/MockERC20.sol";
import {Fixture} from "./utils/Fixture.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

/// @dev Events re-declared so tests can `emit` them after `vm.expectEmit`.
abstract contract MarketEvents {
    event JobCreated(
        uint256 indexed jobId,
        address indexed requester,
        bytes32 specHash,
        uint32 taskCount,
        uint16 redundancy,
        uint256 budget,
        uint64 deadline,
        uint16 feeBps
    );
    event TasksPosted(uint256 indexed jobId, bytes32 tasksRoot, uint32 count);
    event SettlementStarted(
        uint256 indexed jobId, uint32 acceptedTasks, uint256 pool, uint256 totalUnits, uint256 fee, bytes32 reportHash
    );
    event WorkerPaid(uint256 indexed jobId, address indexed worker, uint256 units, uint256 amount);
    event JobSettled(
        uint256 indexed jobId,
        uint32 acceptedTasks,
        uint256 pool,
        uint256 totalUnits,
        uint256 fee,
        uint256 refund,
        bytes32 reportHash
    );
    event JobCancelled(uint256 indexed jobId, address indexed requester, uint256 refund);
    event JobReclaimed(uint256 indexed jobId, address indexed requester, uint256 refund);
    event SettlementAbandoned(uint256 indexed jobId, address indexed requester, uint256 paid, uint256 refund);
    event Withdrawn(address indexed account, uint256 amount);
    event FeeChanged(uint16 oldFeeBps, uint16 newFeeBps);
    event TreasuryChanged(address oldTreasury, address newTreasury);
}

/// @dev Shared setup: a few staked workers and helpers to expect role errors and status errors.
abstract contract MarketTest is Fixture, MarketEvents {
    address[] internal workers;

    function setUp() public virtual override {
        super.setUp();
        workers = stakeWorkers(0, 4);
    }

    function expectUnauthorized(address caller, bytes32 role) internal {
        vm.expectRevert(abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, caller, role));
    }

    function expectWrongStatus(uint256 jobId, JobMarket.JobStatus status) internal {
        vm.expectRevert(abi.encodeWithSelector(JobMarket.WrongStatus.selector, jobId, status));
    }

    function settleAs(uint256 jobId, uint32 accepted, address[] memory ws, uint256[] memory us) internal {
        vm.prank(verifier);
        market.settle(jobId, accepted, ws, us, REPORT);
    }

    function statusOf(uint256 jobId) internal view returns (JobMarket.JobStatus) {
        return market.getJob(jobId).status;
    }
}

contract JobMarketDeployTest is MarketTest {
    function test_Constructor_SetsParameters() public view {
        assertEq(address(market.token()), address(token));
        assertEq(address(market.registry()), address(registry));
        assertEq(market.treasury(), treasury);
        assertEq(market.feeBps(), 0);
        assertEq(market.jobCount(), 0);
        assertTrue(market.hasRole(market.DEFAULT_ADMIN_ROLE(), admin));
        assertTrue(market.hasRole(market.COORDINATOR_ROLE(), coordinator));
        assertTrue(market.hasRole(market.VERIFIER_ROLE(), verifier));
    }

    function test_RevertWhen_ConstructedWithZeroToken() public {
        vm.expectRevert(JobMarket.ZeroAddress.selector);
        new JobMarket(IERC20(address(0)), registry, admin, treasury);
    }

    function test_RevertWhen_ConstructedWithZeroRegistry() public {
        vm.expectRevert(JobMarket.ZeroAddress.selector);
        new JobMarket(token, IWorkerRegistry(address(0)), admin, treasury);
    }

    function test_RevertWhen_ConstructedWithZeroAdmin() public {
        vm.expectRevert(JobMarket.ZeroAddress.selector);
        new JobMarket(token, registry, address(0), treasury);
    }

    function test_RevertWhen_ConstructedWithZeroTreasury() public {
        vm.expectRevert(JobMarket.ZeroAddress.selector);
        new JobMarket(token, registry, admin, address(0));
    }
}

contract JobMarketCreateTest is MarketTest {
    function test_CreateJob_EscrowsBudgetAndEmits() public {
        uint64 deadline = uint64(block.timestamp + 1 days);
        uint256 before = token.balanceOf(requester);
        vm.expectEmit(address(market));
        emit JobCreated(1, requester, SPEC, TASKS, REDUNDANCY, BUDGET, deadline, 0);
        vm.prank(requester);
        uint256 jobId = market.createJob(SPEC, TASKS, REDUNDANCY, BUDGET, deadline);

        assertEq(jobId, 1);
        assertEq(market.jobCount(), 1);
        JobMarket.Job memory job = market.getJob(jobId);
        assertEq(job.requester, requester);
        assertEq(job.deadline, deadline);
        assertEq(job.redundancy, REDUNDANCY);
        assertEq(job.feeBps, 0);
        assertEq(job.budget, BUDGET);
        assertEq(job.taskCount, TASKS);
        assertTrue(job.status == JobMarket.JobStatus.Open);
        assertEq(job.specHash, SPEC);
        assertEq(job.tasksRoot, bytes32(0));
        assertEq(market.requesterOf(jobId), requester);
        assertEq(market.openEscrow(), BUDGET);
        assertEq(token.balanceOf(address(market)), BUDGET);
        assertEq(token.balanceOf(requester), before - BUDGET);
        assertMarketSolvent();
    }

    function test_CreateJob_IdsIncrease() public {
        assertEq(createJob(), 1);
        assertEq(createJob(), 2);
        assertEq(market.jobCount(), 2);
        assertEq(market.openEscrow(), 2 * BUDGET);
    }

    function test_CreateJob_SnapshotsFee() public {
        vm.prank(admin);
        market.setFeeBps(250);
        uint256 jobId = createJob();
        vm.prank(admin);
        market.setFeeBps(0);
        assertEq(market.getJob(jobId).feeBps, 250);
    }

    function test_CreateJob_LargestBudgetSettlesWithoutOverflow() public {
        MockERC20 big = new MockERC20();
        JobMarket m = new JobMarket(big, registry, admin, treasury);
        bytes32 verifierRole = m.VERIFIER_ROLE();
        bytes32 coordinatorRole = m.COORDINATOR_ROLE();
        vm.startPrank(admin);
        m.grantRole(verifierRole, verifier);
        m.grantRole(coordinatorRole, coordinator);
        m.setFeeBps(m.MAX_FEE_BPS());
        vm.stopPrank();
        uint256 budget = type(uint128).max;
        big.mint(requester, budget);
        vm.startPrank(requester);
        big.approve(address(m), budget);
        uint256 jobId = m.createJob(SPEC, type(uint32).max, REDUNDANCY, budget, uint64(block.timestamp + 1));
        vm.stopPrank();
        vm.prank(coordinator);
        m.postTasks(jobId, ROOT, type(uint32).max);
        uint256 maxUnits = type(uint128).max;
        vm.prank(verifier);
        m.settle(jobId, type(uint32).max, two(workers[0], workers[1]), two(maxUnits - 1, 1), REPORT);
        uint256 fee = budget / 10;
        assertEq(m.withdrawable(treasury), fee);
        assertEq(
            m.withdrawable(workers[0]) + m.withdrawable(workers[1]) + m.withdrawable(requester) + fee,
            budget,
            "conserved"
        );
        assertEq(big.balanceOf(address(m)), m.openEscrow() + m.totalWithdrawable());
    }

    function test_RequesterOf_UnknownJobIsZero() public view {
        assertEq(market.requesterOf(42), address(0));
    }

    function test_RevertWhen_CreateJobZeroSpecHash() public {
        vm.prank(requester);
        vm.expectRevert(JobMarket.InvalidSpecHash.selector);
        market.createJob(bytes32(0), TASKS, REDUNDANCY, BUDGET, uint64(block.timestamp + 1));
    }

    function test_RevertWhen_CreateJobZeroTaskCount() public {
        vm.prank(requester);
        vm.expectRevert(JobMarket.InvalidTaskCount.selector);
        market.createJob(SPEC, 0, REDUNDANCY, BUDGET, uint64(block.timestamp + 1));
    }

    function test_RevertWhen_CreateJobZeroRedundancy() public {
        vm.prank(requester);
        vm.expectRevert(JobMarket.InvalidRedundancy.selector);
        market.createJob(SPEC, TASKS, 0, BUDGET, uint64(block.timestamp + 1));
    }

    function test_RevertWhen_CreateJobZeroBudget() public {
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.InvalidBudget.selector, 0));
        market.createJob(SPEC, TASKS, REDUNDANCY, 0, uint64(block.timestamp + 1));
    }

    function test_RevertWhen_CreateJobBudgetAbove128Bits() public {
        uint256 budget = uint256(type(uint128).max) + 1;
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.InvalidBudget.selector, budget));
        market.createJob(SPEC, TASKS, REDUNDANCY, budget, uint64(block.timestamp + 1));
    }

    function test_RevertWhen_CreateJobDeadlineNotInFuture() public {
        uint64 deadline = uint64(block.timestamp);
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.DeadlineNotInFuture.selector, deadline));
        market.createJob(SPEC, TASKS, REDUNDANCY, BUDGET, deadline);
    }

    function test_RevertWhen_CreateJobWithoutAllowance() public {
        fund(stranger, BUDGET);
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(market), 0, BUDGET)
        );
        market.createJob(SPEC, TASKS, REDUNDANCY, BUDGET, uint64(block.timestamp + 1));
    }

    function test_RevertWhen_CreateJobFeeOnTransferToken() public {
        FeeOnTransferERC20 fot = new FeeOnTransferERC20();
        JobMarket m = new JobMarket(fot, registry, admin, treasury);
        fot.mint(requester, BUDGET);
        vm.startPrank(requester);
        fot.approve(address(m), BUDGET);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.TransferAmountMismatch.selector, BUDGET, BUDGET * 99 / 100));
        m.createJob(SPEC, TASKS, REDUNDANCY, BUDGET, uint64(block.timestamp + 1));
        vm.stopPrank();
    }
}

contract JobMarketPermitTest is MarketTest {
    uint256 internal constant KEY = 0xB0B;
    address internal signer;

    function setUp() public override {
        super.setUp();
        signer = vm.addr(KEY);
        fund(signer, 10 * BUDGET);
    }

    function test_CreateJobWithPermit_NeedsNoApproval() public {
        uint256 permitDeadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = signPermit(KEY, address(market), BUDGET, permitDeadline);
        vm.prank(signer);
        uint256 jobId = market.createJobWithPermit(
            SPEC, TASKS, REDUNDANCY, BUDGET, uint64(block.timestamp + 1 days), permitDeadline, v, r, s
        );
        assertEq(market.requesterOf(jobId), signer);
        assertEq(token.balanceOf(address(market)), BUDGET);
        assertEq(token.allowance(signer, address(market)), 0);
        assertEq(token.nonces(signer), 1);
    }

    function test_CreateJobWithPermit_SurvivesFrontRunPermit() public {
        uint256 permitDeadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = signPermit(KEY, address(market), BUDGET, permitDeadline);
        // Someone submits the permit first; the job must still be created from the allowance it set.
        token.permit(signer, address(market), BUDGET, permitDeadline, v, r, s);
        vm.prank(signer);
        uint256 jobId = market.createJobWithPermit(
            SPEC, TASKS, REDUNDANCY, BUDGET, uint64(block.timestamp + 1 days), permitDeadline, v, r, s
        );
        assertEq(market.getJob(jobId).budget, BUDGET);
    }

    function test_RevertWhen_CreateJobWithPermitInvalidAndNoAllowance() public {
        uint256 permitDeadline = block.timestamp + 1 hours;
        // Signed for a smaller value than the budget: the permit fails and no allowance exists.
        (uint8 v, bytes32 r, bytes32 s) = signPermit(KEY, address(market), BUDGET - 1, permitDeadline);
        vm.prank(signer);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(market), 0, BUDGET)
        );
        market.createJobWithPermit(
            SPEC, TASKS, REDUNDANCY, BUDGET, uint64(block.timestamp + 1 days), permitDeadline, v, r, s
        );
    }
}

contract JobMarketPostTasksTest is MarketTest {
    uint256 internal jobId;

    function setUp() public override {
        super.setUp();
        jobId = createJob();
    }

    function test_PostTasks_StoresRootAndEmits() public {
        vm.expectEmit(address(market));
        emit TasksPosted(jobId, ROOT, TASKS);
        vm.prank(coordinator);
        market.postTasks(jobId, ROOT, TASKS);
        JobMarket.Job memory job = market.getJob(jobId);
        assertEq(job.tasksRoot, ROOT);
        assertTrue(job.status == JobMarket.JobStatus.Posted);
    }

    function test_PostTasks_AtDeadline() public {
        vm.warp(market.getJob(jobId).deadline);
        vm.prank(coordinator);
        market.postTasks(jobId, ROOT, TASKS);
        assertTrue(statusOf(jobId) == JobMarket.JobStatus.Posted);
    }

    function test_RevertWhen_PostTasksByNonCoordinator() public {
        bytes32 role = market.COORDINATOR_ROLE();
        vm.prank(verifier);
        expectUnauthorized(verifier, role);
        market.postTasks(jobId, ROOT, TASKS);
    }

    function test_RevertWhen_PostTasksUnknownJob() public {
        vm.prank(coordinator);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.UnknownJob.selector, 99));
        market.postTasks(99, ROOT, TASKS);
    }

    function test_RevertWhen_PostTasksTwice() public {
        vm.startPrank(coordinator);
        market.postTasks(jobId, ROOT, TASKS);
        expectWrongStatus(jobId, JobMarket.JobStatus.Posted);
        market.postTasks(jobId, keccak256("other"), TASKS);
        vm.stopPrank();
    }

    function test_RevertWhen_PostTasksAfterDeadline() public {
        uint64 deadline = market.getJob(jobId).deadline;
        vm.warp(deadline + 1);
        vm.prank(coordinator);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.DeadlinePassed.selector, jobId, deadline));
        market.postTasks(jobId, ROOT, TASKS);
    }

    function test_RevertWhen_PostTasksZeroRoot() public {
        vm.prank(coordinator);
        vm.expectRevert(JobMarket.InvalidTasksRoot.selector);
        market.postTasks(jobId, bytes32(0), TASKS);
    }

    function test_RevertWhen_PostTasksCountMismatch() public {
        vm.prank(coordinator);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.TaskCountMismatch.selector, TASKS, TASKS - 1));
        market.postTasks(jobId, ROOT, TASKS - 1);
    }

    function test_RevertWhen_PostTasksCancelledJob() public {
        vm.prank(requester);
        market.cancel(jobId);
        vm.prank(coordinator);
        expectWrongStatus(jobId, JobMarket.JobStatus.Cancelled);
        market.postTasks(jobId, ROOT, TASKS);
    }
}

contract JobMarketSettleTest is MarketTest {
    uint256 internal jobId;

    function setUp() public override {
        super.setUp();
        jobId = createPostedJob();
    }

    function test_Settle_PaysProportionallyAndRefundsRest() public {
        // 80 of 100 tasks accepted: pool 800; units 1:3 -> 200 and 600; refund 200.
        vm.expectEmit(address(market));
        emit WorkerPaid(jobId, workers[0], 1, 200 ether);
        vm.expectEmit(address(market));
        emit WorkerPaid(jobId, workers[1], 3, 600 ether);
        vm.expectEmit(address(market));
        emit JobSettled(jobId, 80, 800 ether, 4, 0, 200 ether, REPORT);
        settleAs(jobId, 80, two(workers[0], workers[1]), two(1, 3));

        assertEq(market.withdrawable(workers[0]), 200 ether);
        assertEq(market.withdrawable(workers[1]), 600 ether);
        assertEq(market.withdrawable(requester), 200 ether);
        assertEq(market.withdrawable(treasury), 0);
        assertTrue(statusOf(jobId) == JobMarket.JobStatus.Settled);
        assertEq(market.openEscrow(), 0);
        assertEq(market.totalWithdrawable(), BUDGET);
        assertMarketSolvent();
    }

    function test_Settle_RoundingDustGoesToRequester() public {
        uint256 small = createPostedJob(100, 1);
        address[] memory three = new address[](3);
        (three[0], three[1], three[2]) = (workers[0], workers[1], workers[2]);
        settleAs(small, 1, three, uniform(3, 7));
        assertEq(market.withdrawable(workers[0]), 33);
        assertEq(market.withdrawable(workers[2]), 33);
        assertEq(market.withdrawable(requester), 1);
    }

    function test_Settle_ChargesFeeToTreasury() public {
        vm.prank(admin);
        market.setFeeBps(250);
        uint256 feeJob = createPostedJob();
        // pool 800, fee 2.5% = 20, distributable 780 split 1:3.
        vm.expectEmit(address(market));
        emit JobSettled(feeJob, 80, 800 ether, 4, 20 ether, 200 ether, REPORT);
        settleAs(feeJob, 80, two(workers[0], workers[1]), two(1, 3));
        assertEq(market.withdrawable(workers[0]), 195 ether);
        assertEq(market.withdrawable(workers[1]), 585 ether);
        assertEq(market.withdrawable(treasury), 20 ether);
        assertEq(market.withdrawable(requester), 200 ether);
        assertMarketSolvent();
    }

    function test_Settle_NoAcceptedTasksRefundsAll() public {
        vm.expectEmit(address(market));
        emit JobSettled(jobId, 0, 0, 0, 0, BUDGET, REPORT);
        settleAs(jobId, 0, new address[](0), new uint256[](0));
        assertEq(market.withdrawable(requester), BUDGET);
        assertTrue(statusOf(jobId) == JobMarket.JobStatus.Settled);
    }

    function test_Settle_AfterDeadlineWhileNotReclaimed() public {
        vm.warp(block.timestamp + 30 days);
        settleAs(jobId, TASKS, one(workers[0]), one(1));
        assertEq(market.withdrawable(workers[0]), BUDGET);
    }

    function test_Settle_PaysUnbondingWorker() public {
        vm.prank(workers[3]);
        registry.requestUnstake(MIN_STAKE);
        assertFalse(registry.isEligible(workers[3]));
        settleAs(jobId, TASKS, one(workers[3]), one(5));
        assertEq(market.withdrawable(workers[3]), BUDGET);
    }

    function test_Settle_CreditsAccumulateAcrossJobs() public {
        uint256 other = createPostedJob();
        settleAs(jobId, TASKS, one(workers[0]), one(1));
        settleAs(other, TASKS / 2, one(workers[0]), one(1));
        assertEq(market.withdrawable(workers[0]), BUDGET + BUDGET / 2);
        assertEq(market.withdrawable(requester), BUDGET / 2);
    }

    function test_RevertWhen_SettleByNonVerifier() public {
        bytes32 role = market.VERIFIER_ROLE();
        vm.prank(coordinator);
        expectUnauthorized(coordinator, role);
        market.settle(jobId, TASKS, one(workers[0]), one(1), REPORT);
    }

    function test_RevertWhen_SettleUnknownJob() public {
        vm.prank(verifier);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.UnknownJob.selector, 77));
        market.settle(77, TASKS, one(workers[0]), one(1), REPORT);
    }

    function test_RevertWhen_SettleJobWithoutPostedTasks() public {
        uint256 open = createJob();
        vm.prank(verifier);
        expectWrongStatus(open, JobMarket.JobStatus.Open);
        market.settle(open, TASKS, one(workers[0]), one(1), REPORT);
    }

    function test_RevertWhen_SettleTwice() public {
        settleAs(jobId, TASKS, one(workers[0]), one(1));
        vm.prank(verifier);
        expectWrongStatus(jobId, JobMarket.JobStatus.Settled);
        market.settle(jobId, TASKS, one(workers[1]), one(1), REPORT);
    }

    function test_RevertWhen_SettleReclaimedJob() public {
        vm.warp(block.timestamp + 2 days);
        vm.prank(requester);
        market.reclaim(jobId);
        vm.prank(verifier);
        expectWrongStatus(jobId, JobMarket.JobStatus.Reclaimed);
        market.settle(jobId, TASKS, one(workers[0]), one(1), REPORT);
    }

    function test_RevertWhen_SettleMoreAcceptedThanTasks() public {
        vm.prank(verifier);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.TooManyAcceptedTasks.selector, TASKS + 1, TASKS));
        market.settle(jobId, TASKS + 1, one(workers[0]), one(1), REPORT);
    }

    function test_RevertWhen_SettleAcceptedTasksWithoutWorkers() public {
        vm.prank(verifier);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.InvalidTotalUnits.selector, 0));
        market.settle(jobId, 1, new address[](0), new uint256[](0), REPORT);
    }

    function test_RevertWhen_SettleWorkersWithoutAcceptedTasks() public {
        vm.prank(verifier);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.InvalidTotalUnits.selector, 5));
        market.settle(jobId, 0, one(workers[0]), one(5), REPORT);
    }

    function test_RevertWhen_SettleUnitAbove128Bits() public {
        uint256 huge = uint256(type(uint128).max) + 1;
        vm.prank(verifier);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.InvalidTotalUnits.selector, huge));
        market.settle(jobId, TASKS, one(workers[0]), one(huge), REPORT);
    }

    function test_RevertWhen_SettleTotalUnitsAbove128Bits() public {
        uint256 max = type(uint128).max;
        vm.prank(verifier);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.InvalidTotalUnits.selector, max + 1));
        market.settle(jobId, TASKS, two(workers[0], workers[1]), two(max, 1), REPORT);
    }

    function test_RevertWhen_SettleLengthMismatch() public {
        vm.prank(verifier);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.LengthMismatch.selector, 2, 1));
        market.settle(jobId, TASKS, two(workers[0], workers[1]), one(1), REPORT);
    }

    function test_RevertWhen_SettleMoreThanChunkLimit() public {
        uint256 n = market.MAX_SETTLEMENT_CHUNK() + 1;
        vm.prank(verifier);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.ChunkTooLarge.selector, n, n - 1));
        market.settle(jobId, TASKS, new address[](n), uniform(n, 1), REPORT);
    }

    function test_RevertWhen_SettleDuplicateWorker() public {
        vm.prank(verifier);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.WorkerOutOfOrder.selector, workers[0]));
        market.settle(jobId, TASKS, two(workers[0], workers[0]), two(1, 1), REPORT);
    }

    function test_RevertWhen_SettleUnsortedWorkers() public {
        vm.prank(verifier);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.WorkerOutOfOrder.selector, workers[0]));
        market.settle(jobId, TASKS, two(workers[1], workers[0]), two(1, 1), REPORT);
    }

    function test_RevertWhen_SettleZeroAddressWorker() public {
        vm.prank(verifier);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.WorkerOutOfOrder.selector, address(0)));
        market.settle(jobId, TASKS, one(address(0)), one(1), REPORT);
    }

    function test_RevertWhen_SettleUnbondedWorker() public {
        address unbonded = workerAt(100);
        vm.prank(verifier);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.WorkerNotBonded.selector, unbonded));
        market.settle(jobId, TASKS, two(workers[0], unbonded), two(1, 1), REPORT);
    }

    function test_RevertWhen_SettleZeroUnits() public {
        vm.prank(verifier);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.ZeroUnits.selector, workers[1]));
        market.settle(jobId, TASKS, two(workers[0], workers[1]), two(1, 0), REPORT);
    }
}

contract JobMarketChunkedSettleTest is MarketTest {
    uint256 internal jobId;

    function setUp() public override {
        super.setUp();
        jobId = createPostedJob();
    }

    function _begin(uint32 accepted, uint256 totalUnits) internal {
        vm.prank(verifier);
        market.beginSettlement(jobId, accepted, totalUnits, REPORT);
    }

    function _chunk(address[] memory ws, uint256[] memory us) internal {
        vm.prank(verifier);
        market.settleChunk(jobId, ws, us);
    }

    function test_ChunkedSettlement_PaysLikeOneShot() public {
        vm.expectEmit(address(market));
        emit SettlementStarted(jobId, 80, 800 ether, 10, 0, REPORT);
        _begin(80, 10);
        assertTrue(statusOf(jobId) == JobMarket.JobStatus.Settling);

        vm.expectEmit(address(market));
        emit WorkerPaid(jobId, workers[0], 1, 80 ether);
        vm.expectEmit(address(market));
        emit WorkerPaid(jobId, workers[1], 2, 160 ether);
        _chunk(two(workers[0], workers[1]), two(1, 2));
        assertEq(market.openEscrow(), BUDGET - 240 ether);
        assertEq(market.totalWithdrawable(), 240 ether);
        assertMarketSolvent();

        _chunk(one(workers[2]), one(3));
        _chunk(one(workers[3]), one(4));
        JobMarket.Settlement memory st = market.getSettlement(jobId);
        assertEq(st.unitsSettled, 10);
        assertEq(st.paid, 800 ether);
        assertEq(st.lastWorker, workers[3]);

        vm.expectEmit(address(market));
        emit JobSettled(jobId, 80, 800 ether, 10, 0, 200 ether, REPORT);
        vm.prank(verifier);
        market.finalizeSettlement(jobId);

        assertEq(market.withdrawable(workers[2]), 240 ether);
        assertEq(market.withdrawable(workers[3]), 320 ether);
        assertEq(market.withdrawable(requester), 200 ether);
        assertTrue(statusOf(jobId) == JobMarket.JobStatus.Settled);
        assertEq(market.openEscrow(), 0);
        assertMarketSolvent();
    }

    function test_ChunkedSettlement_WithFee() public {
        vm.prank(admin);
        market.setFeeBps(1000);
        jobId = createPostedJob();
        _begin(TASKS, 2);
        _chunk(two(workers[0], workers[1]), two(1, 1));
        vm.prank(verifier);
        market.finalizeSettlement(jobId);
        assertEq(market.withdrawable(workers[0]), 450 ether);
        assertEq(market.withdrawable(treasury), 100 ether);
        assertEq(market.withdrawable(requester), 0);
        assertMarketSolvent();
    }

    function test_FinalizeSettlement_WithNoAcceptedTasks() public {
        _begin(0, 0);
        vm.prank(verifier);
        market.finalizeSettlement(jobId);
        assertEq(market.withdrawable(requester), BUDGET);
    }

    function test_AbandonSettlement_RefundsWhatChunksDidNotPay() public {
        _begin(TASKS, 10);
        _chunk(two(workers[0], workers[1]), two(1, 2));
        uint256 paid = market.getSettlement(jobId).paid;
        JobMarket.Job memory j = market.getJob(jobId);
        vm.warp(uint256(j.deadline) + market.SETTLEMENT_GRACE() + 1);
        uint256 before = token.balanceOf(requester);
        vm.expectEmit(address(market));
        emit SettlementAbandoned(jobId, requester, paid, BUDGET - paid);
        vm.prank(requester);
        market.abandonSettlement(jobId);
        assertEq(token.balanceOf(requester), before + BUDGET - paid);
        assertTrue(statusOf(jobId) == JobMarket.JobStatus.Reclaimed);
        // Workers keep what they were credited; nothing of the job stays in escrow.
        assertEq(market.withdrawable(workers[1]), paid * 2 / 3);
        assertEq(market.openEscrow(), 0);
        assertMarketSolvent();
        // The verifier can no longer continue it.
        vm.prank(verifier);
        expectWrongStatus(jobId, JobMarket.JobStatus.Reclaimed);
        market.settleChunk(jobId, one(workers[2]), one(3));
    }

    function test_RevertWhen_AbandonSettlementWithinGrace() public {
        _begin(TASKS, 1);
        JobMarket.Job memory j = market.getJob(jobId);
        uint256 unlockAt = uint256(j.deadline) + market.SETTLEMENT_GRACE();
        vm.warp(unlockAt);
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.GraceNotOver.selector, jobId, unlockAt));
        market.abandonSettlement(jobId);
    }

    function test_RevertWhen_AbandonSettlementByOthersOrNotSettling() public {
        JobMarket.Job memory j = market.getJob(jobId);
        vm.warp(uint256(j.deadline) + market.SETTLEMENT_GRACE() + 1);
        vm.prank(requester);
        expectWrongStatus(jobId, JobMarket.JobStatus.Posted);
        market.abandonSettlement(jobId);
        _begin(TASKS, 1);
        vm.prank(workers[0]);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.NotRequester.selector, jobId, workers[0]));
        market.abandonSettlement(jobId);
    }

    function test_RevertWhen_ReclaimAfterSettlementBegan() public {
        _begin(TASKS, 1);
        vm.warp(block.timestamp + 2 days);
        vm.prank(requester);
        expectWrongStatus(jobId, JobMarket.JobStatus.Settling);
        market.reclaim(jobId);
    }

    function test_RevertWhen_BeginSettlementTwice() public {
        _begin(TASKS, 1);
        vm.prank(verifier);
        expectWrongStatus(jobId, JobMarket.JobStatus.Settling);
        market.beginSettlement(jobId, TASKS, 1, REPORT);
    }

    function test_RevertWhen_OneShotSettleWhileSettling() public {
        _begin(TASKS, 1);
        vm.prank(verifier);
        expectWrongStatus(jobId, JobMarket.JobStatus.Settling);
        market.settle(jobId, TASKS, one(workers[0]), one(1), REPORT);
    }

    function test_RevertWhen_BeginSettlementTotalUnitsAbove128Bits() public {
        uint256 total = uint256(type(uint128).max) + 1;
        vm.prank(verifier);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.InvalidTotalUnits.selector, total));
        market.beginSettlement(jobId, TASKS, total, REPORT);
    }

    function test_RevertWhen_SettleChunkBeforeBegin() public {
        vm.prank(verifier);
        expectWrongStatus(jobId, JobMarket.JobStatus.Posted);
        market.settleChunk(jobId, one(workers[0]), one(1));
    }

    function test_RevertWhen_SettleChunkEmpty() public {
        _begin(TASKS, 1);
        vm.prank(verifier);
        vm.expectRevert(JobMarket.EmptyChunk.selector);
        market.settleChunk(jobId, new address[](0), new uint256[](0));
    }

    function test_RevertWhen_SettleChunkTooLarge() public {
        _begin(TASKS, 1000);
        uint256 n = market.MAX_SETTLEMENT_CHUNK() + 1;
        vm.prank(verifier);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.ChunkTooLarge.selector, n, n - 1));
        market.settleChunk(jobId, new address[](n), uniform(n, 1));
    }

    function test_RevertWhen_SettleChunkRepeatsWorkerOfEarlierChunk() public {
        _begin(TASKS, 3);
        _chunk(two(workers[0], workers[1]), two(1, 1));
        vm.prank(verifier);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.WorkerOutOfOrder.selector, workers[1]));
        market.settleChunk(jobId, one(workers[1]), one(1));
    }

    function test_RevertWhen_SettleChunkExceedsTotalUnits() public {
        _begin(TASKS, 3);
        _chunk(one(workers[0]), one(2));
        vm.prank(verifier);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.UnitsExceedTotal.selector, 3));
        market.settleChunk(jobId, one(workers[1]), one(2));
    }

    function test_RevertWhen_FinalizeBeforeAllUnitsPaid() public {
        _begin(TASKS, 3);
        _chunk(one(workers[0]), one(2));
        vm.prank(verifier);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.UnitsIncomplete.selector, 2, 3));
        market.finalizeSettlement(jobId);
    }

    function test_RevertWhen_FinalizeWithoutBegin() public {
        vm.prank(verifier);
        expectWrongStatus(jobId, JobMarket.JobStatus.Posted);
        market.finalizeSettlement(jobId);
    }

    function test_RevertWhen_FinalizeTwice() public {
        _begin(TASKS, 1);
        _chunk(one(workers[0]), one(1));
        vm.startPrank(verifier);
        market.finalizeSettlement(jobId);
        expectWrongStatus(jobId, JobMarket.JobStatus.Settled);
        market.finalizeSettlement(jobId);
        vm.stopPrank();
    }

    function test_RevertWhen_SettleChunkAfterFinalize() public {
        _begin(TASKS, 1);
        _chunk(one(workers[0]), one(1));
        vm.startPrank(verifier);
        market.finalizeSettlement(jobId);
        expectWrongStatus(jobId, JobMarket.JobStatus.Settled);
        market.settleChunk(jobId, one(workers[1]), one(1));
        vm.stopPrank();
    }

    function test_RevertWhen_ChunkedCallsByNonVerifier() public {
        bytes32 role = market.VERIFIER_ROLE();
        vm.prank(stranger);
        expectUnauthorized(stranger, role);
        market.beginSettlement(jobId, TASKS, 1, REPORT);
        vm.prank(stranger);
        expectUnauthorized(stranger, role);
        market.settleChunk(jobId, one(workers[0]), one(1));
        vm.prank(stranger);
        expectUnauthorized(stranger, role);
        market.finalizeSettlement(jobId);
    }

    function test_RevertWhen_ChunkedCallsOnUnknownJob() public {
        vm.startPrank(verifier);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.UnknownJob.selector, 5));
        market.beginSettlement(5, TASKS, 1, REPORT);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.UnknownJob.selector, 5));
        market.settleChunk(5, one(workers[0]), one(1));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.UnknownJob.selector, 5));
        market.finalizeSettlement(5);
        vm.stopPrank();
    }
}

/// @notice A job paid to 1,000 workers in four chunks (256 + 256 + 256 + 232).
contract JobMarketThousandWorkersTest is Fixture {
    uint256 internal constant N = 1000;
    uint256 internal constant CHUNK = 256;
    /// @dev EIP-7825's per-transaction gas cap; every chunk must fit in one transaction.
    uint256 internal constant TX_GAS_CAP = 16_777_216;

    address[] internal workers;
    uint256[] internal units;

    function setUp() public override {
        super.setUp();
        vm.pauseGasMetering();
        workers = stakeWorkers(0, N);
        units = new uint256[](N);
        for (uint256 i; i < N; ++i) {
            units[i] = 100 + (i % 7) * 13; // unequal contributions
        }
        vm.resumeGasMetering();
    }

    function test_SettleChunk_1000WorkersInFourChunks() public {
        uint256 budget = 10_000 ether;
        uint256 jobId = createPostedJob(budget, 10_000);
        uint256 total;
        for (uint256 i; i < N; ++i) {
            total += units[i];
        }
        vm.prank(verifier);
        market.beginSettlement(jobId, 9000, total, REPORT);
        (uint256 pool,) = market.previewPool(jobId, 9000);

        uint256 maxChunkGas;
        for (uint256 start; start < N; start += CHUNK) {
            uint256 len = N - start < CHUNK ? N - start : CHUNK;
            address[] memory ws = new address[](len);
            uint256[] memory us = new uint256[](len);
            for (uint256 j; j < len; ++j) {
                ws[j] = workers[start + j];
                us[j] = units[start + j];
            }
            vm.prank(verifier);
            uint256 g = gasleft();
            market.settleChunk(jobId, ws, us);
            g -= gasleft();
            if (g > maxChunkGas) maxChunkGas = g;
        }
        vm.prank(verifier);
        market.finalizeSettlement(jobId);
        emit log_named_uint("max gas of one 256-worker chunk", maxChunkGas);
        assertLt(maxChunkGas, TX_GAS_CAP, "a chunk must fit one transaction");

        uint256 paid;
        for (uint256 i; i < N; ++i) {
            uint256 amount = market.withdrawable(workers[i]);
            assertEq(amount, pool * units[i] / total, "payout");
            paid += amount;
        }
        assertEq(paid + market.withdrawable(requester), budget, "payouts + refund == budget");
        assertTrue(market.getJob(jobId).status == JobMarket.JobStatus.Settled);
        assertMarketSolvent();
    }
}

contract JobMarketCancelTest is MarketTest {
    uint256 internal jobId;

    function setUp() public override {
        super.setUp();
        jobId = createJob();
    }

    function test_Cancel_RefundsBudget() public {
        uint256 before = token.balanceOf(requester);
        vm.expectEmit(address(market));
        emit JobCancelled(jobId, requester, BUDGET);
        vm.prank(requester);
        market.cancel(jobId);
        assertEq(token.balanceOf(requester), before + BUDGET);
        assertTrue(statusOf(jobId) == JobMarket.JobStatus.Cancelled);
        assertEq(market.openEscrow(), 0);
        assertMarketSolvent();
    }

    function test_Cancel_AfterDeadline() public {
        vm.warp(block.timestamp + 2 days);
        vm.prank(requester);
        market.cancel(jobId);
        assertTrue(statusOf(jobId) == JobMarket.JobStatus.Cancelled);
    }

    function test_RevertWhen_CancelByStranger() public {
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.NotRequester.selector, jobId, stranger));
        market.cancel(jobId);
    }

    function test_RevertWhen_CancelUnknownJob() public {
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.UnknownJob.selector, 9));
        market.cancel(9);
    }

    function test_RevertWhen_CancelAfterTasksPosted() public {
        vm.prank(coordinator);
        market.postTasks(jobId, ROOT, TASKS);
        vm.prank(requester);
        expectWrongStatus(jobId, JobMarket.JobStatus.Posted);
        market.cancel(jobId);
    }

    function test_RevertWhen_CancelTwice() public {
        vm.startPrank(requester);
        market.cancel(jobId);
        expectWrongStatus(jobId, JobMarket.JobStatus.Cancelled);
        market.cancel(jobId);
        vm.stopPrank();
    }
}

contract JobMarketReclaimTest is MarketTest {
    uint256 internal jobId;
    uint64 internal deadline;

    function setUp() public override {
        super.setUp();
        jobId = createPostedJob();
        deadline = market.getJob(jobId).deadline;
    }

    function test_Reclaim_PostedJobAfterDeadline() public {
        uint256 before = token.balanceOf(requester);
        vm.warp(deadline + 1);
        vm.expectEmit(address(market));
        emit JobReclaimed(jobId, requester, BUDGET);
        vm.prank(requester);
        market.reclaim(jobId);
        assertEq(token.balanceOf(requester), before + BUDGET);
        assertTrue(statusOf(jobId) == JobMarket.JobStatus.Reclaimed);
        assertEq(market.openEscrow(), 0);
        assertMarketSolvent();
    }

    function test_Reclaim_OpenJobAfterDeadline() public {
        uint256 open = createJob();
        vm.warp(deadline + 1);
        vm.prank(requester);
        market.reclaim(open);
        assertTrue(statusOf(open) == JobMarket.JobStatus.Reclaimed);
    }

    function test_RevertWhen_ReclaimAtDeadline() public {
        vm.warp(deadline);
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.DeadlineNotReached.selector, jobId, deadline));
        market.reclaim(jobId);
    }

    function test_RevertWhen_ReclaimByStranger() public {
        vm.warp(deadline + 1);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.NotRequester.selector, jobId, stranger));
        market.reclaim(jobId);
    }

    function test_RevertWhen_ReclaimUnknownJob() public {
        vm.prank(requester);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.UnknownJob.selector, 3));
        market.reclaim(3);
    }

    function test_RevertWhen_ReclaimSettledJob() public {
        settleAs(jobId, TASKS, one(workers[0]), one(1));
        vm.warp(deadline + 1);
        vm.prank(requester);
        expectWrongStatus(jobId, JobMarket.JobStatus.Settled);
        market.reclaim(jobId);
    }

    function test_RevertWhen_ReclaimTwice() public {
        vm.warp(deadline + 1);
        vm.startPrank(requester);
        market.reclaim(jobId);
        expectWrongStatus(jobId, JobMarket.JobStatus.Reclaimed);
        market.reclaim(jobId);
        vm.stopPrank();
    }

    function test_RevertWhen_ReclaimCancelledJob() public {
        uint256 open = createJob();
        vm.startPrank(requester);
        market.cancel(open);
        vm.warp(deadline + 1);
        expectWrongStatus(open, JobMarket.JobStatus.Cancelled);
        market.reclaim(open);
        vm.stopPrank();
    }
}

contract JobMarketWithdrawTest is MarketTest {
    function setUp() public override {
        super.setUp();
        vm.prank(admin);
        market.setFeeBps(100);
        uint256 jobId = createPostedJob();
        settleAs(jobId, 50, two(workers[0], workers[1]), two(1, 1));
    }

    function test_Withdraw_PaysEveryParty() public {
        // pool 500, fee 5, each worker 247.5, refund 500.
        _withdrawAndCheck(workers[0], 247.5 ether);
        _withdrawAndCheck(workers[1], 247.5 ether);
        _withdrawAndCheck(treasury, 5 ether);
        _withdrawAndCheck(requester, 500 ether);
        assertEq(token.balanceOf(address(market)), 0);
        assertEq(market.totalWithdrawable(), 0);
    }

    function test_RevertWhen_WithdrawNothing() public {
        vm.prank(stranger);
        vm.expectRevert(JobMarket.NothingToWithdraw.selector);
        market.withdraw();
    }

    function test_RevertWhen_WithdrawTwice() public {
        vm.startPrank(workers[0]);
        market.withdraw();
        vm.expectRevert(JobMarket.NothingToWithdraw.selector);
        market.withdraw();
        vm.stopPrank();
    }

    function _withdrawAndCheck(address account, uint256 amount) private {
        uint256 before = token.balanceOf(account);
        assertEq(market.withdrawable(account), amount);
        vm.expectEmit(address(market));
        emit Withdrawn(account, amount);
        vm.prank(account);
        market.withdraw();
        assertEq(token.balanceOf(account), before + amount);
        assertEq(market.withdrawable(account), 0);
        assertMarketSolvent();
    }
}

contract JobMarketAdminTest is MarketTest {
    function test_SetFeeBps() public {
        vm.expectEmit(address(market));
        emit FeeChanged(0, 1000);
        vm.prank(admin);
        market.setFeeBps(1000);
        assertEq(market.feeBps(), 1000);
    }

    function test_SetTreasury() public {
        vm.expectEmit(address(market));
        emit TreasuryChanged(treasury, stranger);
        vm.prank(admin);
        market.setTreasury(stranger);
        assertEq(market.treasury(), stranger);
    }

    function test_PreviewPool() public {
        vm.prank(admin);
        market.setFeeBps(300);
        uint256 jobId = createJob(1000, 3);
        (uint256 pool, uint256 fee) = market.previewPool(jobId, 2);
        assertEq(pool, 666);
        assertEq(fee, 19);
    }

    function test_RevertWhen_SetFeeBpsAboveMax() public {
        vm.prank(admin);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.FeeTooHigh.selector, 1001, 1000));
        market.setFeeBps(1001);
    }

    function test_RevertWhen_SetTreasuryZero() public {
        vm.prank(admin);
        vm.expectRevert(JobMarket.ZeroAddress.selector);
        market.setTreasury(address(0));
    }

    function test_RevertWhen_SetFeeBpsByNonAdmin() public {
        bytes32 role = market.DEFAULT_ADMIN_ROLE();
        vm.prank(stranger);
        expectUnauthorized(stranger, role);
        market.setFeeBps(1);
    }

    function test_RevertWhen_SetTreasuryByNonAdmin() public {
        bytes32 role = market.DEFAULT_ADMIN_ROLE();
        vm.prank(stranger);
        expectUnauthorized(stranger, role);
        market.setTreasury(stranger);
    }

    function test_RevertWhen_GrantVerifierByNonAdmin() public {
        bytes32 role = market.VERIFIER_ROLE();
        bytes32 adminRole = market.DEFAULT_ADMIN_ROLE();
        vm.prank(stranger);
        expectUnauthorized(stranger, adminRole);
        market.grantRole(role, stranger);
    }

    function test_RevertWhen_PreviewPoolUnknownJob() public {
        vm.expectRevert(abi.encodeWithSelector(JobMarket.UnknownJob.selector, 1));
        market.previewPool(1, 1);
    }

    function test_RevertWhen_PreviewPoolMoreAcceptedThanTasks() public {
        uint256 jobId = createJob();
        vm.expectRevert(abi.encodeWithSelector(JobMarket.TooManyAcceptedTasks.selector, TASKS + 1, TASKS));
        market.previewPool(jobId, TASKS + 1);
    }
}

/// @notice The worked examples of the design (seed 4.3) as exact test vectors.
contract JobMarketVectorsTest is Fixture {
    address[] internal workers;

    function setUp() public override {
        super.setUp();
        workers = stakeWorkers(0, 10);
    }

    /// 10 equal workers, 10,000 tasks, P = 0.95 each: T_i = 1,000, c_i = 950, each is paid W/10.
    function test_Vector_TenEqualWorkersEachGetTenthOfPool() public {
        uint256 budget = 10_000 ether;
        uint256 jobId = createPostedJob(budget, 10_000);
        vm.prank(verifier);
        market.settle(jobId, 10_000, workers, uniform(10, 950), REPORT);
        (uint256 pool,) = market.previewPool(jobId, 10_000);
        assertEq(pool, budget);
        for (uint256 i; i < 10; ++i) {
            assertEq(market.withdrawable(workers[i]), pool / 10, "each gets exactly pool/10");
        }
        assertEq(market.withdrawable(requester), 0, "nothing left over");
    }

    /// Units 1000, 1500, ..., 5500 (sum 32,500) share a pool of 3,250 tokens: worker i gets units_i / 10.
    function test_Vector_UnequalUnitsPaidInProportion() public {
        uint256 budget = 3250 ether;
        uint256 jobId = createPostedJob(budget, 10_000);
        uint256[] memory units = new uint256[](10);
        for (uint256 i; i < 10; ++i) {
            units[i] = 1000 + 500 * i;
        }
        vm.prank(verifier);
        market.settle(jobId, 10_000, workers, units, REPORT);
        for (uint256 i; i < 10; ++i) {
            assertEq(market.withdrawable(workers[i]), units[i] * 0.1 ether, "payout = units / 10 tokens");
            // proportion to the first worker: payout_i / payout_0 == units_i / units_0
            assertEq(market.withdrawable(workers[i]) * units[0], market.withdrawable(workers[0]) * units[i]);
        }
        assertEq(market.withdrawable(requester), 0);
    }
}

contract JobMarketFuzzTest is Fixture {
    uint256 internal constant MAX_WORKERS = 24;
    address[] internal workers;

    function setUp() public override {
        super.setUp();
        workers = stakeWorkers(0, MAX_WORKERS);
    }

    struct Case {
        uint256 budget;
        uint32 taskCount;
        uint32 accepted;
        uint16 feeBps;
        uint256 n;
        uint256 unitScale;
        uint256 seed;
    }

    function _case(Case memory c) internal returns (uint256 jobId, address[] memory ws, uint256[] memory us) {
        c.budget = bound(c.budget, 1, 1_000_000 ether);
        c.taskCount = uint32(bound(c.taskCount, 1, type(uint32).max));
        c.accepted = uint32(bound(c.accepted, 1, c.taskCount));
        c.feeBps = uint16(bound(c.feeBps, 0, market.MAX_FEE_BPS()));
        c.n = bound(c.n, 1, MAX_WORKERS);
        c.unitScale = bound(c.unitScale, 1, type(uint96).max);
        vm.prank(admin);
        market.setFeeBps(c.feeBps);
        jobId = createPostedJob(c.budget, c.taskCount);
        ws = new address[](c.n);
        us = new uint256[](c.n);
        for (uint256 i; i < c.n; ++i) {
            ws[i] = workers[i];
            us[i] = 1 + uint256(keccak256(abi.encode(c.seed, i))) % c.unitScale;
        }
    }

    /// Each payout is the exact share rounded down (within 1 wei), and payouts + fee + refund == budget.
    function testFuzz_Settle_PayoutsProportionalAndConserveBudget(Case memory c) public {
        (uint256 jobId, address[] memory ws, uint256[] memory us) = _case(c);
        vm.prank(verifier);
        market.settle(jobId, c.accepted, ws, us, REPORT);

        (uint256 pool, uint256 fee) = market.previewPool(jobId, c.accepted);
        assertEq(pool, c.budget * c.accepted / c.taskCount, "pool");
        assertEq(fee, pool * c.feeBps / 10_000, "fee");
        uint256 total;
        for (uint256 i; i < ws.length; ++i) {
            total += us[i];
        }
        uint256 distributable = pool - fee;
        uint256 paid;
        for (uint256 i; i < ws.length; ++i) {
            uint256 amount = market.withdrawable(ws[i]);
            // amount = floor(distributable * u / total): amount * total <= exact < (amount + 1) * total
            assertLe(amount * total, distributable * us[i], "payout above exact share");
            assertLt(distributable * us[i], (amount + 1) * total, "payout more than 1 wei below exact share");
            paid += amount;
        }
        assertLe(paid, distributable, "payouts exceed pool");
        assertGe(paid + ws.length, distributable, "dust above 1 wei per worker");
        uint256 refund = market.withdrawable(requester);
        assertEq(market.withdrawable(treasury), fee, "fee credited");
        assertEq(paid + fee + refund, c.budget, "payouts + fee + refund == budget");
        assertMarketSolvent();
    }

    /// Splitting the same settlement into chunks pays every worker exactly the same.
    function testFuzz_ChunkedSettleMatchesOneShot(Case memory c, uint256 chunkSeed) public {
        (uint256 jobA, address[] memory ws, uint256[] memory us) = _case(c);
        fund(requester, c.budget);
        uint256 jobB = createPostedJob(c.budget, c.taskCount);
        vm.prank(verifier);
        market.settle(jobA, c.accepted, ws, us, REPORT);
        uint256[] memory oneShot = new uint256[](ws.length);
        for (uint256 i; i < ws.length; ++i) {
            oneShot[i] = market.withdrawable(ws[i]);
        }
        uint256 refundA = market.withdrawable(requester);

        uint256 total;
        for (uint256 i; i < us.length; ++i) {
            total += us[i];
        }
        vm.startPrank(verifier);
        market.beginSettlement(jobB, c.accepted, total, REPORT);
        uint256 start;
        while (start < ws.length) {
            uint256 len = 1 + uint256(keccak256(abi.encode(chunkSeed, start))) % (ws.length - start);
            address[] memory cw = new address[](len);
            uint256[] memory cu = new uint256[](len);
            for (uint256 j; j < len; ++j) {
                cw[j] = ws[start + j];
                cu[j] = us[start + j];
            }
            market.settleChunk(jobB, cw, cu);
            start += len;
        }
        market.finalizeSettlement(jobB);
        vm.stopPrank();

        for (uint256 i; i < ws.length; ++i) {
            assertEq(market.withdrawable(ws[i]), 2 * oneShot[i], "chunked payout == one-shot payout");
        }
        assertEq(market.withdrawable(requester), 2 * refundA, "same refund");
        assertMarketSolvent();
    }

    /// Creating, then cancelling or reclaiming, always returns the whole budget.
    function testFuzz_CancelOrReclaimReturnsBudget(uint256 budget, bool post, uint256 wait) public {
        budget = bound(budget, 1, 1_000_000 ether);
        wait = bound(wait, 1 days + 1, 365 days);
        uint256 before = token.balanceOf(requester);
        uint256 jobId = post ? createPostedJob(budget, TASKS) : createJob(budget, TASKS);
        vm.warp(block.timestamp + wait);
        vm.prank(requester);
        if (post) market.reclaim(jobId);
        else market.cancel(jobId);
        assertEq(token.balanceOf(requester), before);
        assertEq(market.openEscrow(), 0);
        assertMarketSolvent();
    }
}

/// @notice Gas of the whole on-chain life of a large job, per task.
contract JobMarketGasTest is Fixture {
    address[] internal workers;

    function setUp() public override {
        super.setUp();
        workers = stakeWorkers(0, 50);
    }

    /// create (10,000 tasks) + postTasks + settle (50 workers, first payout to each), divided by 10,000.
    function test_GasPerTask_10kTasks_50Workers() public {
        uint32 tasks = 10_000;
        uint256[] memory units = new uint256[](50);
        for (uint256 i; i < 50; ++i) {
            units[i] = 9000 + i * 37;
        }
        uint64 deadline = uint64(block.timestamp + 1 days);

        vm.prank(requester);
        uint256 g = gasleft();
        uint256 jobId = market.createJob(SPEC, tasks, REDUNDANCY, 10_000 ether, deadline);
        uint256 createGas = g - gasleft();

        vm.prank(coordinator);
        g = gasleft();
        market.postTasks(jobId, ROOT, tasks);
        uint256 postGas = g - gasleft();

        vm.prank(verifier);
        g = gasleft();
        market.settle(jobId, 9950, workers, units, REPORT);
        uint256 settleGas = g - gasleft();

        uint256 perTask = (createGas + postGas + settleGas) / tasks;
        emit log_named_uint("createJob gas", createGas);
        emit log_named_uint("postTasks gas", postGas);
        emit log_named_uint("settle (50 workers) gas", settleGas);
        emit log_named_uint("gas per task", perTask);
        assertLe(perTask, 200, "goal: <= 200 gas per task");
        assertTrue(market.getJob(jobId).status == JobMarket.JobStatus.Settled);
    }
}

/// @dev Jobs with spot checks: a commitment posted with the root, revealed at settlement, and a
/// pool for the replicas the accepted tasks paid for (budget 1000 for 100 tasks x 3 replicas).
contract JobMarketSpotCheckTest is MarketTest {
    event ChecksCommitted(uint256 indexed jobId, bytes32 commitment);
    event ChecksRevealed(uint256 indexed jobId, bytes32 secret, uint64 paidReplicas);

    bytes32 internal constant SECRET = keccak256("secret");
    uint256 internal jobId;

    function setUp() public override {
        super.setUp();
        jobId = createJob();
        vm.expectEmit(address(market));
        emit TasksPosted(jobId, ROOT, TASKS);
        vm.expectEmit(address(market));
        emit ChecksCommitted(jobId, keccak256(abi.encode(SECRET)));
        vm.prank(coordinator);
        market.postTasksCommitted(jobId, ROOT, TASKS, keccak256(abi.encode(SECRET)));
    }

    function settleReplicas(uint32 accepted, uint64 paid, address[] memory ws, uint256[] memory us, bytes32 secret)
        internal
    {
        vm.prank(verifier);
        market.settleReplicas(jobId, accepted, paid, ws, us, REPORT, secret);
    }

    function test_PostTasksCommitted_StoresCommitment() public view {
        assertEq(market.checkCommitment(jobId), keccak256(abi.encode(SECRET)));
        assertTrue(statusOf(jobId) == JobMarket.JobStatus.Posted);
        assertEq(market.getJob(jobId).tasksRoot, ROOT);
    }

    function test_RevertWhen_PostTasksCommittedWithZeroCommitment() public {
        uint256 other = createJob();
        vm.prank(coordinator);
        vm.expectRevert(JobMarket.InvalidCommitment.selector);
        market.postTasksCommitted(other, ROOT, TASKS, bytes32(0));
        assertTrue(statusOf(other) == JobMarket.JobStatus.Open);
    }

    function test_RevertWhen_PostTasksCommittedByStranger() public {
        uint256 other = createJob();
        expectUnauthorized(requester, market.COORDINATOR_ROLE());
        vm.prank(requester);
        market.postTasksCommitted(other, ROOT, TASKS, keccak256(abi.encode(SECRET)));
    }

    function test_SettleReplicas_PaysReplicasAndRefundsReplicationNotNeeded() public {
        // All 100 tasks accepted; 110 of the 300 escrowed replicas were computed and paid:
        // pool = 1000 * 110 / 300 = 366.66..; units 1:1; refund the rest.
        uint256 pool = uint256(BUDGET) * 110 / 300;
        vm.expectEmit(address(market));
        emit ChecksRevealed(jobId, SECRET, 110);
        settleReplicas(TASKS, 110, two(workers[0], workers[1]), two(5, 5), SECRET);
        assertEq(market.withdrawable(workers[0]), pool / 2);
        assertEq(market.withdrawable(workers[1]), pool / 2);
        assertEq(market.withdrawable(requester), BUDGET - 2 * (pool / 2));
        assertTrue(statusOf(jobId) == JobMarket.JobStatus.Settled);
        (uint256 preview,) = market.previewReplicaPool(jobId, 110);
        assertEq(preview, pool);
        assertMarketSolvent();
    }

    function test_SettleReplicas_FullReplicationPaysLikeSettle() public {
        settleReplicas(80, 240, one(workers[0]), one(1), SECRET);
        (uint256 pool,) = market.previewPool(jobId, 80);
        assertEq(market.withdrawable(workers[0]), pool);
        assertEq(pool, 800 ether);
    }

    function test_RevertWhen_SecretIsWrong() public {
        vm.prank(verifier);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.WrongSecret.selector, jobId));
        market.settleReplicas(jobId, TASKS, 110, one(workers[0]), one(1), REPORT, keccak256("guess"));
        assertTrue(statusOf(jobId) == JobMarket.JobStatus.Posted);
    }

    function test_RevertWhen_PaidReplicasOutOfRange() public {
        vm.startPrank(verifier);
        // Fewer replicas than accepted tasks, or more than redundancy per accepted task.
        vm.expectRevert(abi.encodeWithSelector(JobMarket.InvalidPaidReplicas.selector, 99, 100, REDUNDANCY));
        market.settleReplicas(jobId, TASKS, 99, one(workers[0]), one(1), REPORT, SECRET);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.InvalidPaidReplicas.selector, 151, 50, REDUNDANCY));
        market.settleReplicas(jobId, 50, 151, one(workers[0]), one(1), REPORT, SECRET);
        vm.stopPrank();
        assertTrue(statusOf(jobId) == JobMarket.JobStatus.Posted);
    }

    function test_RevertWhen_CommittedJobSettledWithoutSecret() public {
        vm.startPrank(verifier);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.SecretRequired.selector, jobId));
        market.settle(jobId, TASKS, one(workers[0]), one(1), REPORT);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.SecretRequired.selector, jobId));
        market.beginSettlement(jobId, TASKS, 1, REPORT);
        vm.stopPrank();
    }

    function test_RevertWhen_UncommittedJobSettledWithSecret() public {
        uint256 plain = createPostedJob();
        vm.startPrank(verifier);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.NoCommitment.selector, plain));
        market.settleReplicas(plain, TASKS, 300, one(workers[0]), one(1), REPORT, SECRET);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.NoCommitment.selector, plain));
        market.beginSettlementReplicas(plain, TASKS, 300, 1, REPORT, SECRET);
        vm.stopPrank();
    }

    function test_BeginSettlementReplicas_ChunksPayTheReplicaPool() public {
        uint256 pool = uint256(BUDGET) * 105 / 300;
        vm.startPrank(verifier);
        market.beginSettlementReplicas(jobId, TASKS, 105, 4, REPORT, SECRET);
        market.settleChunk(jobId, one(workers[0]), one(1));
        market.settleChunk(jobId, one(workers[1]), one(3));
        market.finalizeSettlement(jobId);
        vm.stopPrank();
        assertEq(market.withdrawable(workers[0]), pool / 4);
        assertEq(market.withdrawable(workers[1]), pool * 3 / 4);
        assertEq(market.withdrawable(requester), BUDGET - pool / 4 - pool * 3 / 4);
        assertMarketSolvent();
    }

    function testFuzz_SettleReplicas_NeverPaysMoreThanEscrow(uint32 accepted, uint64 paid, uint128 units) public {
        accepted = uint32(bound(accepted, 0, TASKS));
        paid = uint64(bound(paid, accepted, uint256(accepted) * REDUNDANCY));
        units = uint128(bound(units, 1, type(uint128).max));
        if (accepted == 0) {
            settleReplicas(0, 0, new address[](0), new uint256[](0), SECRET);
        } else {
            settleReplicas(accepted, paid, one(workers[0]), one(units), SECRET);
        }
        uint256 pool = uint256(BUDGET) * paid / (uint256(TASKS) * REDUNDANCY);
        assertEq(market.withdrawable(workers[0]), pool);
        assertEq(market.withdrawable(requester), BUDGET - pool);
        assertMarketSolvent();
    }
}
