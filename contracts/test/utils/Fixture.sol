// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {GleanerToken} from "../../src/GleanerToken.sol";
import {JobMarket} from "../../src/JobMarket.sol";
import {WorkerRegistry} from "../../src/WorkerRegistry.sol";
import {IJobLookup} from "../../src/interfaces/IJobLookup.sol";
import {Test} from "./Test.sol";

/// @title Fixture
/// @notice Deploys token, registry and market wired as in production, plus helpers shared by the tests.
abstract contract Fixture is Test {
    uint256 internal constant MIN_STAKE = 100 ether;
    uint64 internal constant UNBONDING_DELAY = 7 days;
    uint256 internal constant BUDGET = 1000 ether;
    uint32 internal constant TASKS = 100;
    uint16 internal constant REDUNDANCY = 3;
    bytes32 internal constant SPEC = keccak256("spec");
    bytes32 internal constant ROOT = keccak256("root");
    bytes32 internal constant REPORT = keccak256("report");
    /// @dev Worker addresses are WORKER_BASE + i, so a list built with ascending i is sorted.
    uint160 internal constant WORKER_BASE = 0x10000000;

    GleanerToken internal token;
    WorkerRegistry internal registry;
    JobMarket internal market;

    address internal admin;
    address internal coordinator;
    address internal verifier;
    address internal treasury;
    address internal requester;
    address internal stranger;

    function setUp() public virtual {
        admin = makeAddr("admin");
        coordinator = makeAddr("coordinator");
        verifier = makeAddr("verifier");
        treasury = makeAddr("treasury");
        requester = makeAddr("requester");
        stranger = makeAddr("stranger");

        token = new GleanerToken();
        registry = new WorkerRegistry(token, admin, MIN_STAKE, UNBONDING_DELAY, treasury);
        market = new JobMarket(token, registry, admin, treasury);
        vm.startPrank(admin);
        registry.setMarket(IJobLookup(address(market)));
        registry.grantRole(registry.SLASHER_ROLE(), verifier);
        market.grantRole(market.COORDINATOR_ROLE(), coordinator);
        market.grantRole(market.VERIFIER_ROLE(), verifier);
        vm.stopPrank();

        fund(requester, 1_000_000 ether);
        vm.prank(requester);
        token.approve(address(market), type(uint256).max);
    }

    // ------------------------------------------------------------------ accounts

    function fund(address to, uint256 amount) internal {
        while (amount > 0) {
            uint256 chunk = amount > token.FAUCET_MAX() ? token.FAUCET_MAX() : amount;
            token.faucet(to, chunk);
            amount -= chunk;
        }
    }

    function workerAt(uint256 i) internal pure returns (address) {
        // casting to 'uint160' is safe because tests use at most a few thousand workers
        // forge-lint: disable-next-line(unsafe-typecast)
        return address(WORKER_BASE + uint160(i));
    }

    function stakeAs(address worker, uint256 amount) internal {
        fund(worker, amount);
        vm.startPrank(worker);
        token.approve(address(registry), amount);
        registry.stake(amount);
        vm.stopPrank();
    }

    /// @dev Stakes MIN_STAKE for workers `from` .. `from + n - 1` and returns them (ascending).
    function stakeWorkers(uint256 from, uint256 n) internal returns (address[] memory workers) {
        workers = new address[](n);
        for (uint256 i; i < n; ++i) {
            workers[i] = workerAt(from + i);
            stakeAs(workers[i], MIN_STAKE);
        }
    }

    // ------------------------------------------------------------------ jobs

    function createJob() internal returns (uint256) {
        return createJob(BUDGET, TASKS);
    }

    function createJob(uint256 budget, uint32 taskCount) internal returns (uint256 jobId) {
        vm.prank(requester);
        jobId = market.createJob(SPEC, taskCount, REDUNDANCY, budget, uint64(block.timestamp + 1 days));
    }

    function createPostedJob(uint256 budget, uint32 taskCount) internal returns (uint256 jobId) {
        jobId = createJob(budget, taskCount);
        vm.prank(coordinator);
        market.postTasks(jobId, ROOT, taskCount);
    }

    function createPostedJob() internal returns (uint256) {
        return createPostedJob(BUDGET, TASKS);
    }

    function uniform(uint256 n, uint256 value) internal pure returns (uint256[] memory units) {
        units = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            units[i] = value;
        }
    }

    function one(address a) internal pure returns (address[] memory list) {
        list = new address[](1);
        list[0] = a;
    }

    function one(uint256 v) internal pure returns (uint256[] memory list) {
        list = new uint256[](1);
        list[0] = v;
    }

    function two(address a, address b) internal pure returns (address[] memory list) {
        list = new address[](2);
        list[0] = a;
        list[1] = b;
    }

    function two(uint256 a, uint256 b) internal pure returns (uint256[] memory list) {
        list = new uint256[](2);
        list[0] = a;
        list[1] = b;
    }

    /// @dev EIP-2612 permit signature by `privateKey` for `spender` to spend `value` until `deadline`.
    function signPermit(uint256 privateKey, address spender, uint256 value, uint256 deadline)
        internal
        view
        returns (uint8 v, bytes32 r, bytes32 s)
    {
        address owner = vm.addr(privateKey);
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"),
                owner,
                spender,
                value,
                token.nonces(owner),
                deadline
            )
        );
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", token.DOMAIN_SEPARATOR(), structHash));
        return vm.sign(privateKey, digest);
    }

    /// @dev token balance of the market == open escrow + all withdrawable balances.
    function assertMarketSolvent() internal view {
        assertEq(
            token.balanceOf(address(market)),
            market.openEscrow() + market.totalWithdrawable(),
            "market balance != openEscrow + totalWithdrawable"
        );
    }
}
