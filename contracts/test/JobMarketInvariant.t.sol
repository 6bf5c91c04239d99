// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {JobMarket} from "../src/JobMarket.sol";
import {MarketHandler} from "./handlers/MarketHandler.sol";
import {Fixture} from "./utils/Fixture.sol";

/// @notice Escrow invariants of the job market under random valid sequences of all its actions.
contract JobMarketInvariantTest is Fixture {
    MarketHandler internal handler;

    function setUp() public override {
        super.setUp();
        vm.prank(admin);
        market.setFeeBps(150);
        address[] memory requesters = new address[](3);
        requesters[0] = makeAddr("requester-a");
        requesters[1] = makeAddr("requester-b");
        requesters[2] = requester;
        address[] memory workers = stakeWorkers(0, 6);
        handler = new MarketHandler(market, token, coordinator, verifier, treasury, requesters, workers);

        bytes4[] memory selectors = new bytes4[](11);
        selectors[0] = MarketHandler.createJob.selector;
        selectors[1] = MarketHandler.postTasks.selector;
        selectors[2] = MarketHandler.settle.selector;
        selectors[3] = MarketHandler.beginSettlement.selector;
        selectors[4] = MarketHandler.settleChunk.selector;
        selectors[5] = MarketHandler.finalizeSettlement.selector;
        selectors[6] = MarketHandler.settleAgain.selector;
        selectors[7] = MarketHandler.cancel.selector;
        selectors[8] = MarketHandler.reclaim.selector;
        selectors[9] = MarketHandler.withdraw.selector;
        selectors[10] = MarketHandler.warp.selector;
        targetContract(address(handler));
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
    }

    /// The market holds exactly the open escrow plus every withdrawable balance.
    function invariant_BalanceEqualsOpenEscrowPlusWithdrawable() public view {
        assertMarketSolvent();
    }

    /// totalWithdrawable is the sum of the individual balances.
    function invariant_TotalWithdrawableIsSumOfBalances() public view {
        address[] memory accounts = handler.allAccounts();
        uint256 sum;
        for (uint256 i; i < accounts.length; ++i) {
            sum += market.withdrawable(accounts[i]);
        }
        assertEq(sum, market.totalWithdrawable(), "sum of withdrawable != totalWithdrawable");
    }

    /// openEscrow is the budget of every unfinished job, less what settlement chunks already credited.
    function invariant_OpenEscrowMatchesUnfinishedJobs() public view {
        uint256[] memory ids = handler.jobIds();
        uint256 open;
        for (uint256 i; i < ids.length; ++i) {
            JobMarket.Job memory job = market.getJob(ids[i]);
            if (job.status == JobMarket.JobStatus.Open || job.status == JobMarket.JobStatus.Posted) {
                open += job.budget;
            } else if (job.status == JobMarket.JobStatus.Settling) {
                open += job.budget - market.getSettlement(ids[i]).paid;
            }
        }
        assertEq(open, market.openEscrow(), "openEscrow");
    }

    /// Tokens in == tokens held + tokens out.
    function invariant_TokensConserved() public view {
        assertEq(handler.ghost_deposited(), token.balanceOf(address(market)) + handler.ghost_paidOut(), "conservation");
    }

    /// No job is settled twice, and no second settlement attempt ever succeeds.
    function invariant_NoJobSettledTwice() public view {
        assertEq(handler.ghost_doubleSettlements(), 0, "a settled job was settled again");
        uint256[] memory ids = handler.jobIds();
        for (uint256 i; i < ids.length; ++i) {
            assertLe(handler.ghost_settlements(ids[i]), 1, "settled twice");
        }
    }

    /// A job's payouts never exceed its escrow; a settled job's payouts, fee and refund add up to its budget.
    function invariant_PayoutsNeverExceedEscrow() public view {
        uint256[] memory ids = handler.jobIds();
        for (uint256 i; i < ids.length; ++i) {
            JobMarket.Job memory job = market.getJob(ids[i]);
            uint256 toWorkers = handler.ghost_jobToWorkers(ids[i]);
            assertLe(toWorkers, job.budget, "payouts exceed escrow");
            if (job.status == JobMarket.JobStatus.Settled) {
                assertEq(
                    toWorkers + handler.ghost_jobToRequester(ids[i]) + handler.ghost_jobToTreasury(ids[i]),
                    job.budget,
                    "payouts + refund + fee != budget"
                );
            }
        }
    }

    /// Shows how often each action ran (forge prints it with -vv at the end of each run).
    function afterInvariant() public {
        emit log_named_uint("createJob", handler.calls("createJob"));
        emit log_named_uint("postTasks", handler.calls("postTasks"));
        emit log_named_uint("settle", handler.calls("settle"));
        emit log_named_uint("beginSettlement", handler.calls("beginSettlement"));
        emit log_named_uint("settleChunk", handler.calls("settleChunk"));
        emit log_named_uint("finalizeSettlement", handler.calls("finalizeSettlement"));
        emit log_named_uint("settleAgain", handler.calls("settleAgain"));
        emit log_named_uint("cancel", handler.calls("cancel"));
        emit log_named_uint("reclaim", handler.calls("reclaim"));
        emit log_named_uint("withdraw", handler.calls("withdraw"));
    }
}
