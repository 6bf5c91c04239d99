// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {RegistryHandler} from "./handlers/RegistryHandler.sol";
import {Fixture} from "./utils/Fixture.sol";

/// @notice Stake accounting invariants of the worker registry under random stake, unstake, withdraw,
/// slash and time moves.
contract WorkerRegistryInvariantTest is Fixture {
    RegistryHandler internal handler;

    function setUp() public override {
        super.setUp();
        uint256 jobId = createJob();
        address[] memory workers = new address[](5);
        for (uint256 i; i < workers.length; ++i) {
            workers[i] = workerAt(i);
        }
        handler = new RegistryHandler(registry, token, verifier, jobId, workers);

        bytes4[] memory selectors = new bytes4[](5);
        selectors[0] = RegistryHandler.stake.selector;
        selectors[1] = RegistryHandler.requestUnstake.selector;
        selectors[2] = RegistryHandler.withdraw.selector;
        selectors[3] = RegistryHandler.slash.selector;
        selectors[4] = RegistryHandler.warp.selector;
        targetContract(address(handler));
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
    }

    /// The registry holds exactly the active plus the unbonding stake.
    function invariant_BalanceEqualsStakesPlusUnbonding() public view {
        assertEq(
            token.balanceOf(address(registry)),
            registry.totalStaked() + registry.totalUnbonding(),
            "registry balance != totalStaked + totalUnbonding"
        );
    }

    /// The totals are the sums over the workers.
    function invariant_TotalsAreSumsOverWorkers() public view {
        address[] memory workers = handler.workers();
        uint256 staked;
        uint256 unbonding;
        for (uint256 i; i < workers.length; ++i) {
            staked += registry.stakeOf(workers[i]);
            (uint256 u,) = registry.unbondingOf(workers[i]);
            unbonding += u;
        }
        assertEq(staked, registry.totalStaked(), "totalStaked");
        assertEq(unbonding, registry.totalUnbonding(), "totalUnbonding");
    }

    /// Tokens staked == tokens held + withdrawn + slashed.
    function invariant_TokensConserved() public view {
        assertEq(
            handler.ghost_staked(),
            token.balanceOf(address(registry)) + handler.ghost_withdrawn() + handler.ghost_slashed(),
            "conservation"
        );
    }

    /// Eligibility is exactly "active stake non-zero and at least minStake".
    function invariant_EligibilityFollowsActiveStake() public view {
        address[] memory workers = handler.workers();
        for (uint256 i; i < workers.length; ++i) {
            uint256 active = registry.stakeOf(workers[i]);
            (uint256 u,) = registry.unbondingOf(workers[i]);
            assertEq(registry.isEligible(workers[i]), active != 0 && active >= MIN_STAKE);
            assertEq(registry.isBonded(workers[i]), active + u != 0);
        }
    }
}
