// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {WorkerRegistry} from "../src/WorkerRegistry.sol";
import {IJobLookup} from "../src/interfaces/IJobLookup.sol";
import {FeeOnTransferERC20, MockERC20} from "./mocks/MockERC20.sol";
import {Fixture} from "./utils/Fixture.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

/// @dev Events re-declared so tests can `emit` them after `vm.expectEmit`.
abstract contract RegistryEvents {
    event Staked(address indexed worker, uint256 amount, uint256 stake);
    event UnstakeRequested(address indexed worker, uint256 amount, uint256 unbonding, uint64 unlockAt);
    event StakeWithdrawn(address indexed worker, uint256 amount);
    event Slashed(
        address indexed worker,
        uint256 indexed jobId,
        uint256 amount,
        address indexed beneficiary,
        bytes32 evidenceHash,
        uint256 fromStake,
        uint256 fromUnbonding
    );
    event MinStakeChanged(uint256 oldMinStake, uint256 newMinStake);
    event UnbondingDelayChanged(uint64 oldDelay, uint64 newDelay);
    event TreasuryChanged(address oldTreasury, address newTreasury);
    event MarketChanged(address oldMarket, address newMarket);
}

contract WorkerRegistryDeployTest is Fixture, RegistryEvents {
    function test_Constructor_SetsParameters() public view {
        assertEq(address(registry.token()), address(token));
        assertEq(registry.minStake(), MIN_STAKE);
        assertEq(registry.unbondingDelay(), UNBONDING_DELAY);
        assertEq(registry.treasury(), treasury);
        assertEq(address(registry.market()), address(market));
        assertTrue(registry.hasRole(registry.DEFAULT_ADMIN_ROLE(), admin));
        assertTrue(registry.hasRole(registry.SLASHER_ROLE(), verifier));
    }

    function test_Constructor_EmitsParameterEvents() public {
        vm.expectEmit();
        emit MinStakeChanged(0, 5);
        vm.expectEmit();
        emit UnbondingDelayChanged(0, 6);
        vm.expectEmit();
        emit TreasuryChanged(address(0), treasury);
        new WorkerRegistry(token, admin, 5, 6, treasury);
    }

    function test_RevertWhen_ConstructedWithZeroToken() public {
        vm.expectRevert(WorkerRegistry.ZeroAddress.selector);
        new WorkerRegistry(IERC20(address(0)), admin, MIN_STAKE, UNBONDING_DELAY, treasury);
    }

    function test_RevertWhen_ConstructedWithZeroAdmin() public {
        vm.expectRevert(WorkerRegistry.ZeroAddress.selector);
        new WorkerRegistry(token, address(0), MIN_STAKE, UNBONDING_DELAY, treasury);
    }

    function test_RevertWhen_ConstructedWithZeroTreasury() public {
        vm.expectRevert(WorkerRegistry.ZeroAddress.selector);
        new WorkerRegistry(token, admin, MIN_STAKE, UNBONDING_DELAY, address(0));
    }

    function test_RevertWhen_ConstructedWithTooLongDelay() public {
        uint64 max = registry.MAX_UNBONDING_DELAY();
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.UnbondingDelayTooLong.selector, max + 1, max));
        new WorkerRegistry(token, admin, MIN_STAKE, max + 1, treasury);
    }
}

contract WorkerRegistryStakeTest is Fixture, RegistryEvents {
    address internal worker;

    function setUp() public override {
        super.setUp();
        worker = workerAt(1);
        fund(worker, 1000 ether);
        vm.prank(worker);
        token.approve(address(registry), type(uint256).max);
    }

    function test_Stake_AddsToStakeAndTotals() public {
        vm.expectEmit(address(registry));
        emit Staked(worker, 150 ether, 150 ether);
        vm.prank(worker);
        registry.stake(150 ether);
        assertEq(registry.stakeOf(worker), 150 ether);
        assertEq(registry.totalStaked(), 150 ether);
        assertEq(token.balanceOf(address(registry)), 150 ether);
        assertEq(token.balanceOf(worker), 850 ether);
    }

    function test_Stake_Accumulates() public {
        vm.startPrank(worker);
        registry.stake(40 ether);
        vm.expectEmit(address(registry));
        emit Staked(worker, 60 ether, 100 ether);
        registry.stake(60 ether);
        vm.stopPrank();
        assertEq(registry.stakeOf(worker), 100 ether);
        assertEq(registry.totalStaked(), 100 ether);
    }

    function test_Stake_WhileUnbondingKeepsBoth() public {
        vm.startPrank(worker);
        registry.stake(200 ether);
        registry.requestUnstake(50 ether);
        registry.stake(10 ether);
        vm.stopPrank();
        (uint256 unbonding,) = registry.unbondingOf(worker);
        assertEq(registry.stakeOf(worker), 160 ether);
        assertEq(unbonding, 50 ether);
        WorkerRegistry.WorkerStake memory s = registry.getStake(worker);
        assertEq(s.stake, 160 ether);
        assertEq(s.unbonding, 50 ether);
    }

    function test_IsEligible_FollowsMinStake() public {
        assertFalse(registry.isEligible(worker), "no stake");
        vm.prank(worker);
        registry.stake(MIN_STAKE - 1);
        assertFalse(registry.isEligible(worker), "below min");
        assertTrue(registry.isBonded(worker), "bonded below min");
        vm.prank(worker);
        registry.stake(1);
        assertTrue(registry.isEligible(worker), "at min");
    }

    function test_IsEligible_NeedsSomeStakeEvenWithZeroMinimum() public {
        vm.prank(admin);
        registry.setMinStake(0);
        assertFalse(registry.isEligible(worker));
        assertFalse(registry.isBonded(worker));
    }

    function test_RevertWhen_StakeZero() public {
        vm.prank(worker);
        vm.expectRevert(WorkerRegistry.ZeroAmount.selector);
        registry.stake(0);
    }

    function test_RevertWhen_StakeWithoutAllowance() public {
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(registry), 0, 1 ether)
        );
        registry.stake(1 ether);
    }

    function test_RevertWhen_StakeTooLarge() public {
        MockERC20 big = new MockERC20();
        WorkerRegistry reg = new WorkerRegistry(big, admin, MIN_STAKE, UNBONDING_DELAY, treasury);
        uint256 amount = uint256(type(uint128).max) + 1;
        big.mint(worker, amount);
        vm.startPrank(worker);
        big.approve(address(reg), amount);
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.StakeTooLarge.selector, amount));
        reg.stake(amount);
        vm.stopPrank();
    }

    function test_RevertWhen_StakeAndUnbondingWouldOverflow() public {
        MockERC20 big = new MockERC20();
        WorkerRegistry reg = new WorkerRegistry(big, admin, MIN_STAKE, UNBONDING_DELAY, treasury);
        uint256 max = type(uint128).max;
        big.mint(worker, max + 1);
        vm.startPrank(worker);
        big.approve(address(reg), max + 1);
        reg.stake(max);
        reg.requestUnstake(max);
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.StakeTooLarge.selector, 1));
        reg.stake(1);
        vm.stopPrank();
    }

    function test_RevertWhen_StakeFeeOnTransferToken() public {
        FeeOnTransferERC20 fot = new FeeOnTransferERC20();
        WorkerRegistry reg = new WorkerRegistry(fot, admin, MIN_STAKE, UNBONDING_DELAY, treasury);
        fot.mint(worker, 100 ether);
        vm.startPrank(worker);
        fot.approve(address(reg), 100 ether);
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.TransferAmountMismatch.selector, 100 ether, 99 ether));
        reg.stake(100 ether);
        vm.stopPrank();
    }
}

contract WorkerRegistryUnstakeTest is Fixture, RegistryEvents {
    address internal worker;

    function setUp() public override {
        super.setUp();
        worker = workerAt(1);
        stakeAs(worker, 300 ether);
    }

    function test_RequestUnstake_MovesStakeToUnbonding() public {
        uint64 unlockAt = uint64(block.timestamp) + UNBONDING_DELAY;
        vm.expectEmit(address(registry));
        emit UnstakeRequested(worker, 100 ether, 100 ether, unlockAt);
        vm.prank(worker);
        registry.requestUnstake(100 ether);
        (uint256 unbonding, uint64 unlocks) = registry.unbondingOf(worker);
        assertEq(registry.stakeOf(worker), 200 ether);
        assertEq(unbonding, 100 ether);
        assertEq(unlocks, unlockAt);
        assertEq(registry.totalStaked(), 200 ether);
        assertEq(registry.totalUnbonding(), 100 ether);
        assertEq(token.balanceOf(address(registry)), 300 ether);
    }

    function test_RequestUnstake_RestartsClockForWholeUnbonding() public {
        vm.prank(worker);
        registry.requestUnstake(100 ether);
        vm.warp(block.timestamp + 3 days);
        uint64 unlockAt = uint64(block.timestamp) + UNBONDING_DELAY;
        vm.expectEmit(address(registry));
        emit UnstakeRequested(worker, 50 ether, 150 ether, unlockAt);
        vm.prank(worker);
        registry.requestUnstake(50 ether);
        (uint256 unbonding, uint64 unlocks) = registry.unbondingOf(worker);
        assertEq(unbonding, 150 ether);
        assertEq(unlocks, unlockAt);
    }

    function test_RequestUnstake_EligibilityIgnoresUnbonding() public {
        vm.prank(worker);
        registry.requestUnstake(250 ether);
        assertFalse(registry.isEligible(worker), "50 active < min");
        assertTrue(registry.isBonded(worker));
        vm.prank(worker);
        registry.requestUnstake(50 ether);
        assertFalse(registry.isEligible(worker));
        assertTrue(registry.isBonded(worker), "unbonding is still bonded");
    }

    function test_RevertWhen_RequestUnstakeZero() public {
        vm.prank(worker);
        vm.expectRevert(WorkerRegistry.ZeroAmount.selector);
        registry.requestUnstake(0);
    }

    function test_RevertWhen_RequestUnstakeMoreThanStake() public {
        vm.prank(worker);
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.InsufficientStake.selector, 301 ether, 300 ether));
        registry.requestUnstake(301 ether);
    }
}

contract WorkerRegistryWithdrawTest is Fixture, RegistryEvents {
    address internal worker;
    uint64 internal unlockAt;

    function setUp() public override {
        super.setUp();
        worker = workerAt(1);
        stakeAs(worker, 300 ether);
        vm.prank(worker);
        registry.requestUnstake(120 ether);
        unlockAt = uint64(block.timestamp) + UNBONDING_DELAY;
    }

    function test_Withdraw_ExactlyAtUnlock() public {
        vm.warp(unlockAt);
        vm.expectEmit(address(registry));
        emit StakeWithdrawn(worker, 120 ether);
        vm.prank(worker);
        registry.withdraw();
        (uint256 unbonding, uint64 unlocks) = registry.unbondingOf(worker);
        assertEq(unbonding, 0);
        assertEq(unlocks, 0);
        assertEq(token.balanceOf(worker), 120 ether);
        assertEq(registry.totalUnbonding(), 0);
        assertEq(registry.stakeOf(worker), 180 ether);
        assertEq(token.balanceOf(address(registry)), 180 ether);
    }

    function test_RevertWhen_WithdrawBeforeUnlock() public {
        vm.warp(unlockAt - 1);
        vm.prank(worker);
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.StillUnbonding.selector, unlockAt));
        registry.withdraw();
    }

    function test_RevertWhen_WithdrawNothing() public {
        vm.prank(stranger);
        vm.expectRevert(WorkerRegistry.NothingToWithdraw.selector);
        registry.withdraw();
    }

    function test_RevertWhen_WithdrawTwice() public {
        vm.warp(unlockAt);
        vm.startPrank(worker);
        registry.withdraw();
        vm.expectRevert(WorkerRegistry.NothingToWithdraw.selector);
        registry.withdraw();
        vm.stopPrank();
    }
}

contract WorkerRegistrySlashTest is Fixture, RegistryEvents {
    bytes32 internal constant EVIDENCE = keccak256("evidence");
    address internal worker;
    uint256 internal jobId;

    function setUp() public override {
        super.setUp();
        worker = workerAt(1);
        stakeAs(worker, 300 ether);
        jobId = createJob();
    }

    function test_Slash_PaysRequesterOfJob() public {
        uint256 before = token.balanceOf(requester);
        vm.expectEmit(address(registry));
        emit Slashed(worker, jobId, 40 ether, requester, EVIDENCE, 40 ether, 0);
        vm.prank(verifier);
        uint256 taken = registry.slash(worker, 40 ether, jobId, EVIDENCE);
        assertEq(taken, 40 ether);
        assertEq(token.balanceOf(requester), before + 40 ether);
        assertEq(registry.stakeOf(worker), 260 ether);
        assertEq(registry.totalStaked(), 260 ether);
        assertEq(token.balanceOf(address(registry)), 260 ether);
    }

    function test_Slash_TakesStakeFirstThenUnbonding() public {
        vm.prank(worker);
        registry.requestUnstake(200 ether);
        vm.expectEmit(address(registry));
        emit Slashed(worker, jobId, 150 ether, requester, EVIDENCE, 100 ether, 50 ether);
        vm.prank(verifier);
        registry.slash(worker, 150 ether, jobId, EVIDENCE);
        (uint256 unbonding, uint64 unlocks) = registry.unbondingOf(worker);
        assertEq(registry.stakeOf(worker), 0);
        assertEq(unbonding, 150 ether);
        assertEq(unlocks, uint64(block.timestamp) + UNBONDING_DELAY, "unlock time kept");
        assertEq(registry.totalStaked(), 0);
        assertEq(registry.totalUnbonding(), 150 ether);
    }

    function test_Slash_WhileOnlyUnbonding() public {
        vm.prank(worker);
        registry.requestUnstake(300 ether);
        vm.prank(verifier);
        registry.slash(worker, 10 ether, jobId, EVIDENCE);
        (uint256 unbonding,) = registry.unbondingOf(worker);
        assertEq(unbonding, 290 ether);
        assertEq(registry.totalUnbonding(), 290 ether);
    }

    function test_Slash_CapsAtBondedAmount() public {
        vm.prank(worker);
        registry.requestUnstake(100 ether);
        vm.expectEmit(address(registry));
        emit Slashed(worker, jobId, 300 ether, requester, EVIDENCE, 200 ether, 100 ether);
        vm.prank(verifier);
        uint256 taken = registry.slash(worker, 1000 ether, jobId, EVIDENCE);
        assertEq(taken, 300 ether);
        (uint256 unbonding, uint64 unlocks) = registry.unbondingOf(worker);
        assertEq(unbonding, 0);
        assertEq(unlocks, 0, "emptied unbonding clears its unlock time");
        assertFalse(registry.isBonded(worker));
        assertEq(token.balanceOf(address(registry)), 0);
    }

    function test_Slash_JobZeroPaysTreasury() public {
        vm.expectEmit(address(registry));
        emit Slashed(worker, 0, 1 ether, treasury, EVIDENCE, 1 ether, 0);
        vm.prank(verifier);
        registry.slash(worker, 1 ether, 0, EVIDENCE);
        assertEq(token.balanceOf(treasury), 1 ether);
    }

    function test_Slash_UnknownJobPaysTreasury() public {
        vm.prank(verifier);
        registry.slash(worker, 1 ether, 999, EVIDENCE);
        assertEq(token.balanceOf(treasury), 1 ether);
        assertEq(registry.beneficiaryFor(999), treasury);
    }

    function test_Slash_WithoutMarketPaysTreasury() public {
        vm.prank(admin);
        registry.setMarket(IJobLookup(address(0)));
        vm.prank(verifier);
        registry.slash(worker, 1 ether, jobId, EVIDENCE);
        assertEq(token.balanceOf(treasury), 1 ether);
    }

    function test_RevertWhen_SlashByNonSlasher() public {
        bytes32 role = registry.SLASHER_ROLE();
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, stranger, role)
        );
        registry.slash(worker, 1 ether, jobId, EVIDENCE);
    }

    function test_RevertWhen_SlashZeroAmount() public {
        vm.prank(verifier);
        vm.expectRevert(WorkerRegistry.ZeroAmount.selector);
        registry.slash(worker, 0, jobId, EVIDENCE);
    }

    function test_RevertWhen_SlashNothingBonded() public {
        vm.prank(verifier);
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.NothingToSlash.selector, stranger));
        registry.slash(stranger, 1 ether, jobId, EVIDENCE);
    }
}

contract WorkerRegistryAdminTest is Fixture, RegistryEvents {
    function test_SetMinStake() public {
        vm.expectEmit(address(registry));
        emit MinStakeChanged(MIN_STAKE, 7 ether);
        vm.prank(admin);
        registry.setMinStake(7 ether);
        assertEq(registry.minStake(), 7 ether);
    }

    function test_SetUnbondingDelay_KeepsPendingUnlock() public {
        address worker = workerAt(1);
        stakeAs(worker, 100 ether);
        vm.prank(worker);
        registry.requestUnstake(100 ether);
        vm.expectEmit(address(registry));
        emit UnbondingDelayChanged(UNBONDING_DELAY, 1 days);
        vm.prank(admin);
        registry.setUnbondingDelay(1 days);
        assertEq(registry.unbondingDelay(), 1 days);
        (, uint64 unlocks) = registry.unbondingOf(worker);
        assertEq(unlocks, uint64(block.timestamp) + UNBONDING_DELAY);
    }

    function test_SetTreasury() public {
        vm.expectEmit(address(registry));
        emit TreasuryChanged(treasury, stranger);
        vm.prank(admin);
        registry.setTreasury(stranger);
        assertEq(registry.treasury(), stranger);
    }

    function test_SetMarket() public {
        vm.expectEmit(address(registry));
        emit MarketChanged(address(market), stranger);
        vm.prank(admin);
        registry.setMarket(IJobLookup(stranger));
        assertEq(address(registry.market()), stranger);
    }

    function test_RevertWhen_SetUnbondingDelayTooLong() public {
        uint64 max = registry.MAX_UNBONDING_DELAY();
        vm.prank(admin);
        vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.UnbondingDelayTooLong.selector, max + 1, max));
        registry.setUnbondingDelay(max + 1);
    }

    function test_RevertWhen_SetTreasuryZero() public {
        vm.prank(admin);
        vm.expectRevert(WorkerRegistry.ZeroAddress.selector);
        registry.setTreasury(address(0));
    }

    function test_RevertWhen_SetMinStakeByNonAdmin() public {
        _expectNotAdmin();
        registry.setMinStake(1);
    }

    function test_RevertWhen_SetUnbondingDelayByNonAdmin() public {
        _expectNotAdmin();
        registry.setUnbondingDelay(1);
    }

    function test_RevertWhen_SetTreasuryByNonAdmin() public {
        _expectNotAdmin();
        registry.setTreasury(stranger);
    }

    function test_RevertWhen_SetMarketByNonAdmin() public {
        _expectNotAdmin();
        registry.setMarket(IJobLookup(stranger));
    }

    function test_RevertWhen_GrantSlasherByNonAdmin() public {
        bytes32 role = registry.SLASHER_ROLE();
        _expectNotAdmin();
        registry.grantRole(role, stranger);
    }

    function _expectNotAdmin() private {
        bytes32 role = registry.DEFAULT_ADMIN_ROLE();
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, stranger, role)
        );
    }
}

contract WorkerRegistryFuzzTest is Fixture {
    function testFuzz_StakeUnstakeWithdraw_Accounting(uint256 staked, uint256 unstaked, uint256 wait) public {
        address worker = workerAt(7);
        staked = bound(staked, 1, 10_000_000 ether);
        unstaked = bound(unstaked, 1, staked);
        wait = bound(wait, 0, 2 * UNBONDING_DELAY);
        stakeAs(worker, staked);
        vm.prank(worker);
        registry.requestUnstake(unstaked);
        (, uint64 unlocks) = registry.unbondingOf(worker);
        assertEq(unlocks, block.timestamp + UNBONDING_DELAY);
        assertEq(registry.stakeOf(worker), staked - unstaked);
        assertEq(registry.isEligible(worker), staked - unstaked >= MIN_STAKE && staked > unstaked);
        assertEq(token.balanceOf(address(registry)), registry.totalStaked() + registry.totalUnbonding());

        vm.warp(block.timestamp + wait);
        vm.prank(worker);
        if (wait < UNBONDING_DELAY) {
            vm.expectRevert(abi.encodeWithSelector(WorkerRegistry.StillUnbonding.selector, unlocks));
            registry.withdraw();
        } else {
            registry.withdraw();
            assertEq(token.balanceOf(worker), unstaked);
        }
        assertEq(token.balanceOf(address(registry)), registry.totalStaked() + registry.totalUnbonding());
    }

    function testFuzz_Slash_Accounting(uint256 staked, uint256 unstaked, uint256 amount, bool withJob) public {
        address worker = workerAt(7);
        staked = bound(staked, 1, 10_000_000 ether);
        unstaked = bound(unstaked, 0, staked);
        amount = bound(amount, 1, 2 * staked);
        stakeAs(worker, staked);
        if (unstaked > 0) {
            vm.prank(worker);
            registry.requestUnstake(unstaked);
        }
        uint256 jobId = withJob ? createJob() : 0;
        address beneficiary = withJob ? requester : treasury;
        uint256 beneficiaryBefore = token.balanceOf(beneficiary);

        vm.prank(verifier);
        uint256 taken = registry.slash(worker, amount, jobId, keccak256("e"));

        uint256 active = staked - unstaked;
        uint256 expectTaken = amount < staked ? amount : staked;
        uint256 expectFromStake = expectTaken < active ? expectTaken : active;
        (uint256 unbonding,) = registry.unbondingOf(worker);
        assertEq(taken, expectTaken, "taken");
        assertEq(registry.stakeOf(worker), active - expectFromStake, "stake after");
        assertEq(unbonding, unstaked - (expectTaken - expectFromStake), "unbonding after");
        assertEq(token.balanceOf(beneficiary), beneficiaryBefore + expectTaken, "beneficiary paid");
        assertEq(token.balanceOf(address(registry)), registry.totalStaked() + registry.totalUnbonding(), "solvent");
        assertEq(registry.totalStaked() + registry.totalUnbonding(), staked - expectTaken, "totals");
    }
}
