// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IJobLookup} from "./interfaces/IJobLookup.sol";
import {IWorkerRegistry} from "./interfaces/IWorkerRegistry.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

/// @title JobMarket
/// @notice Escrow for compute jobs. A requester escrows a budget (`createJob`), the coordinator posts the
/// Merkle root of the job's task hashes (`postTasks`), and the verifier settles: the pool for the accepted
/// tasks, `budget * acceptedTasks / taskCount`, less the protocol fee, is split among the workers in
/// proportion to the units of accepted work each reported, `payout_i = floor((pool - fee) * units_i /
/// totalUnits)`; the rest (the unaccepted share and rounding dust) is refunded to the requester. Payouts,
/// refunds and fees are credited to balances that their owners `withdraw` (pull payments).
///
/// A job may use spot checks instead of full replication (see `postTasksCommitted`): its budget then
/// escrows `taskCount * redundancy` replicas, the pool is `budget * paidReplicas / (taskCount *
/// redundancy)` for the replicas its accepted tasks actually paid for, and the settlement reveals
/// the secret behind the commitment posted with the task root, so anyone can recompute which tasks
/// were checked. For a job without spot checks every accepted task pays `redundancy` replicas,
/// which is the same pool.
///
/// Settlement comes in one call for up to `MAX_SETTLEMENT_CHUNK` workers (`settle`) or in chunks
/// (`beginSettlement`, `settleChunk` x n, `finalizeSettlement`). In both, the workers of a job's
/// settlement are listed in strictly ascending address order across all chunks, which keeps them
/// distinct without a per-worker storage slot, and every worker must be bonded in the registry.
/// @dev Invariant: `token.balanceOf(this) == openEscrow + totalWithdrawable` (plain ERC-20s; tokens that
/// take a fee on transfer are refused at `createJob`).
contract JobMarket is IJobLookup, AccessControl, ReentrancyGuard {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    /// @notice Lifecycle of a job. `None` means the job id does not exist.
    enum JobStatus {
        None,
        Open,
        Posted,
        Settling,
        Settled,
        Cancelled,
        Reclaimed
    }

    /// @notice A job as stored (4 slots).
    /// @param requester Who escrowed the budget; receives refunds and may cancel or reclaim.
    /// @param deadline Unix time after which the requester may reclaim an unsettled job.
    /// @param redundancy Replicas per task on distinct workers (informational for the coordinator).
    /// @param feeBps Protocol fee in basis points of the pool, fixed when the job was created.
    /// @param budget Escrowed tokens.
    /// @param taskCount Number of tasks.
    /// @param status Lifecycle state.
    /// @param specHash keccak256 of the canonical job manifest.
    /// @param tasksRoot Merkle root of the task hashes (zero until posted).
    struct Job {
        address requester;
        uint64 deadline;
        uint16 redundancy;
        uint16 feeBps;
        uint128 budget;
        uint32 taskCount;
        JobStatus status;
        bytes32 specHash;
        bytes32 tasksRoot;
    }

    /// @notice Progress of a chunked settlement (only written by `beginSettlement`/`settleChunk`).
    /// @param pool `budget * acceptedTasks / taskCount`.
    /// @param fee `pool * feeBps / 10_000`; the workers share `pool - fee`.
    /// @param totalUnits Units of all workers of all chunks, declared at the start.
    /// @param unitsSettled Units paid by the chunks so far.
    /// @param paid Tokens credited to workers so far.
    /// @param acceptedTasks Tasks accepted by the verifier.
    /// @param lastWorker Highest worker address paid so far; the next chunk must start above it.
    /// @param reportHash Hash of the published settlement report.
    struct Settlement {
        uint128 pool;
        uint128 fee;
        uint128 totalUnits;
        uint128 unitsSettled;
        uint128 paid;
        uint32 acceptedTasks;
        address lastWorker;
        bytes32 reportHash;
    }

    /// @dev In-memory context of one settlement call.
    struct Payout {
        uint256 jobId;
        uint256 pool;
        uint256 fee;
        uint256 totalUnits;
        uint256 unitsLeft;
        uint256 paid;
        address last;
    }

    /// @notice Role allowed to `postTasks` (the coordinator).
    bytes32 public constant COORDINATOR_ROLE = keccak256("COORDINATOR_ROLE");
    /// @notice Role allowed to settle jobs (the verifier).
    bytes32 public constant VERIFIER_ROLE = keccak256("VERIFIER_ROLE");
    /// @notice Most workers in one `settle` or `settleChunk` call.
    uint256 public constant MAX_SETTLEMENT_CHUNK = 256;
    /// @notice Highest protocol fee the admin may set (10%).
    uint16 public constant MAX_FEE_BPS = 1000;
    /// @notice Basis-point denominator.
    uint256 public constant BPS = 10_000;
    /// @notice How long after its deadline a begun chunked settlement may still be finalised
    /// before the requester can abandon it (`abandonSettlement`).
    uint64 public constant SETTLEMENT_GRACE = 7 days;

    /// @notice The payment token.
    IERC20 public immutable token;
    /// @notice The worker registry; every paid worker must be bonded there.
    IWorkerRegistry public immutable registry;
    /// @notice Receives protocol fees (as a withdrawable balance).
    address public treasury;
    /// @notice Fee in basis points applied to jobs created from now on.
    uint16 public feeBps;
    /// @notice Number of jobs created; job ids run from 1 to `jobCount`.
    uint256 public jobCount;
    /// @notice Tokens escrowed for jobs not yet settled, cancelled or reclaimed (less what settlement
    /// chunks have already credited).
    uint256 public openEscrow;
    /// @notice Sum of all `withdrawable` balances.
    uint256 public totalWithdrawable;
    /// @notice Tokens each account can `withdraw`.
    mapping(address account => uint256) public withdrawable;

    mapping(uint256 jobId => Job) private _jobs;
    mapping(uint256 jobId => Settlement) private _settlements;
    /// @notice `keccak256(secret)` of a job with spot checks, posted with its task root (zero: the
    /// job replicates every task `redundancy` times).
    mapping(uint256 jobId => bytes32) public checkCommitment;

    /// @notice A requester escrowed `budget` for a job of `taskCount` tasks.
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
    /// @notice The coordinator posted the Merkle root of the job's `count` task hashes.
    event TasksPosted(uint256 indexed jobId, bytes32 tasksRoot, uint32 count);
    /// @notice The coordinator committed to the secret that, mixed with the hash of the block holding
    /// this event, selects the job's spot-checked tasks.
    event ChecksCommitted(uint256 indexed jobId, bytes32 commitment);
    /// @notice The settlement of a job with spot checks revealed its secret and paid for
    /// `paidReplicas` replicas of its accepted tasks.
    event ChecksRevealed(uint256 indexed jobId, bytes32 secret, uint64 paidReplicas);
    /// @notice A chunked settlement began (not emitted by the one-call `settle`).
    event SettlementStarted(
        uint256 indexed jobId, uint32 acceptedTasks, uint256 pool, uint256 totalUnits, uint256 fee, bytes32 reportHash
    );
    /// @notice `worker` was credited `amount` for `units` of accepted work in `jobId`.
    event WorkerPaid(uint256 indexed jobId, address indexed worker, uint256 units, uint256 amount);
    /// @notice The job is settled: workers shared `pool - fee` in proportion to their units (see
    /// `WorkerPaid`), the treasury was credited `fee` and the requester `refund`.
    event JobSettled(
        uint256 indexed jobId,
        uint32 acceptedTasks,
        uint256 pool,
        uint256 totalUnits,
        uint256 fee,
        uint256 refund,
        bytes32 reportHash
    );
    /// @notice The requester cancelled the job before its tasks were posted and got `refund` back.
    event JobCancelled(uint256 indexed jobId, address indexed requester, uint256 refund);
    /// @notice The requester took back `refund` after the deadline passed without a settlement.
    event JobReclaimed(uint256 indexed jobId, address indexed requester, uint256 refund);
    /// @notice The requester abandoned a chunked settlement left unfinished past the grace period:
    /// workers keep the `paid` earlier chunks credited them; the requester got `refund` back.
    event SettlementAbandoned(uint256 indexed jobId, address indexed requester, uint256 paid, uint256 refund);
    /// @notice `account` withdrew `amount` of its balance.
    event Withdrawn(address indexed account, uint256 amount);
    /// @notice The admin changed the fee for new jobs.
    event FeeChanged(uint16 oldFeeBps, uint16 newFeeBps);
    /// @notice The admin changed the treasury.
    event TreasuryChanged(address oldTreasury, address newTreasury);

    /// @notice A required address was zero.
    error ZeroAddress();
    /// @notice `specHash` was zero.
    error InvalidSpecHash();
    /// @notice `taskCount` was zero.
    error InvalidTaskCount();
    /// @notice `redundancy` was zero.
    error InvalidRedundancy();
    /// @notice `budget` was zero or above 2^128 - 1.
    error InvalidBudget(uint256 budget);
    /// @notice `deadline` was not in the future.
    error DeadlineNotInFuture(uint64 deadline);
    /// @notice The token delivered a different amount than requested (fee-on-transfer tokens are unsupported).
    error TransferAmountMismatch(uint256 expected, uint256 received);
    /// @notice No job has this id.
    error UnknownJob(uint256 jobId);
    /// @notice The job is not in a state that allows this call.
    error WrongStatus(uint256 jobId, JobStatus status);
    /// @notice Only the job's requester may do this.
    error NotRequester(uint256 jobId, address caller);
    /// @notice `postTasks` was given a zero root.
    error InvalidTasksRoot();
    /// @notice `postTasks` was given a count other than the job's `taskCount`.
    error TaskCountMismatch(uint256 expected, uint256 given);
    /// @notice The job's deadline has passed.
    error DeadlinePassed(uint256 jobId, uint64 deadline);
    /// @notice The job's deadline has not passed yet.
    error DeadlineNotReached(uint256 jobId, uint64 deadline);
    /// @notice `acceptedTasks` exceeds the job's `taskCount`.
    error TooManyAcceptedTasks(uint256 acceptedTasks, uint256 taskCount);
    /// @notice `totalUnits` must be zero exactly when `acceptedTasks` is zero, and below 2^128.
    error InvalidTotalUnits(uint256 totalUnits);
    /// @notice `workers` and `units` differ in length.
    error LengthMismatch(uint256 workers, uint256 units);
    /// @notice More than `MAX_SETTLEMENT_CHUNK` workers in one call.
    error ChunkTooLarge(uint256 length, uint256 max);
    /// @notice `settleChunk` was given no workers.
    error EmptyChunk();
    /// @notice Workers must be listed in strictly ascending address order across the whole settlement
    /// (this also rules out duplicates and address(0)).
    error WorkerOutOfOrder(address worker);
    /// @notice The worker has nothing bonded in the registry.
    error WorkerNotBonded(address worker);
    /// @notice A worker was listed with zero units.
    error ZeroUnits(address worker);
    /// @notice The chunks' units would exceed the declared `totalUnits`.
    error UnitsExceedTotal(uint256 totalUnits);
    /// @notice `finalizeSettlement` was called before all declared units were paid.
    error UnitsIncomplete(uint256 unitsSettled, uint256 totalUnits);
    /// @notice `withdraw` found a zero balance.
    error NothingToWithdraw();
    /// @notice The fee exceeds `MAX_FEE_BPS`.
    error FeeTooHigh(uint16 feeBps, uint16 max);
    /// @notice `postTasksCommitted` was given a zero commitment.
    error InvalidCommitment();
    /// @notice The job was posted with a spot-check commitment: settle it with `settleReplicas` or
    /// `beginSettlementReplicas`, which reveal the secret.
    error SecretRequired(uint256 jobId);
    /// @notice The job was posted without a spot-check commitment: settle it with `settle` or
    /// `beginSettlement`.
    error NoCommitment(uint256 jobId);
    /// @notice The revealed secret does not hash to the job's commitment.
    error WrongSecret(uint256 jobId);
    /// @notice `paidReplicas` must lie between `acceptedTasks` and `acceptedTasks * redundancy`.
    error InvalidPaidReplicas(uint256 paidReplicas, uint256 acceptedTasks, uint256 redundancy);
    /// @notice A begun settlement can be abandoned only after `unlockAt` (deadline + grace).
    error GraceNotOver(uint256 jobId, uint256 unlockAt);

    /// @param token_ Payment token.
    /// @param registry_ Worker registry.
    /// @param admin Holder of DEFAULT_ADMIN_ROLE (grants COORDINATOR_ROLE and VERIFIER_ROLE, sets fees).
    /// @param treasury_ Receives protocol fees.
    constructor(IERC20 token_, IWorkerRegistry registry_, address admin, address treasury_) {
        if (
            address(token_) == address(0) || address(registry_) == address(0) || admin == address(0)
                || treasury_ == address(0)
        ) revert ZeroAddress();
        token = token_;
        registry = registry_;
        treasury = treasury_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        emit TreasuryChanged(address(0), treasury_);
    }

    // ------------------------------------------------------------------ requester

    /// @notice Escrows `budget` tokens (pulled from the caller, who must have approved them) for a job.
    /// @param specHash keccak256 of the canonical job manifest.
    /// @param taskCount Number of tasks (the coordinator must post exactly this many).
    /// @param redundancy Replicas per task.
    /// @param budget Tokens to escrow, 1 to 2^128 - 1.
    /// @param deadline Unix time after which an unsettled job can be reclaimed.
    /// @return jobId The new job's id (ids start at 1).
    function createJob(bytes32 specHash, uint32 taskCount, uint16 redundancy, uint256 budget, uint64 deadline)
        external
        nonReentrant
        returns (uint256 jobId)
    {
        return _createJob(specHash, taskCount, redundancy, budget, deadline);
    }

    /// @notice `createJob` with an EIP-2612 permit for `budget`, signed by the caller for this contract.
    /// A permit that fails (e.g. already used by a front-runner) is ignored; the transfer then needs an
    /// existing allowance.
    /// @param permitDeadline The permit's own deadline.
    function createJobWithPermit(
        bytes32 specHash,
        uint32 taskCount,
        uint16 redundancy,
        uint256 budget,
        uint64 deadline,
        uint256 permitDeadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external nonReentrant returns (uint256 jobId) {
        try IERC20Permit(address(token)).permit(msg.sender, address(this), budget, permitDeadline, v, r, s) {} catch {}
        return _createJob(specHash, taskCount, redundancy, budget, deadline);
    }

    /// @notice Cancels a job whose tasks were not posted yet and sends the whole budget back to the requester.
    function cancel(uint256 jobId) external nonReentrant {
        Job storage job = _requesterJob(jobId);
        if (job.status != JobStatus.Open) revert WrongStatus(jobId, job.status);
        uint256 refund = job.budget;
        job.status = JobStatus.Cancelled;
        openEscrow -= refund;
        emit JobCancelled(jobId, msg.sender, refund);
        token.safeTransfer(msg.sender, refund);
    }

    /// @notice After the deadline, takes back the whole budget of a job whose settlement has not started.
    function reclaim(uint256 jobId) external nonReentrant {
        Job storage job = _requesterJob(jobId);
        JobStatus status = job.status;
        if (status != JobStatus.Open && status != JobStatus.Posted) revert WrongStatus(jobId, status);
        if (block.timestamp <= job.deadline) revert DeadlineNotReached(jobId, job.deadline);
        uint256 refund = job.budget;
        job.status = JobStatus.Reclaimed;
        openEscrow -= refund;
        emit JobReclaimed(jobId, msg.sender, refund);
        token.safeTransfer(msg.sender, refund);
    }

    /// @notice Ends a chunked settlement that was begun but not finalised `SETTLEMENT_GRACE` after
    /// the job's deadline, so its escrow is never locked for good: workers keep what earlier
    /// chunks credited them, no fee is taken, and the requester gets the rest of the budget.
    function abandonSettlement(uint256 jobId) external nonReentrant {
        Job storage job = _requesterJob(jobId);
        if (job.status != JobStatus.Settling) revert WrongStatus(jobId, job.status);
        uint256 unlockAt = uint256(job.deadline) + SETTLEMENT_GRACE;
        if (block.timestamp <= unlockAt) revert GraceNotOver(jobId, unlockAt);
        uint256 paid = _settlements[jobId].paid;
        uint256 refund = uint256(job.budget) - paid;
        job.status = JobStatus.Reclaimed;
        openEscrow -= refund;
        emit SettlementAbandoned(jobId, msg.sender, paid, refund);
        token.safeTransfer(msg.sender, refund);
    }

    /// @notice Sends the caller its whole withdrawable balance (worker payouts, settlement refunds, fees).
    function withdraw() external nonReentrant {
        uint256 amount = withdrawable[msg.sender];
        if (amount == 0) revert NothingToWithdraw();
        withdrawable[msg.sender] = 0;
        totalWithdrawable -= amount;
        emit Withdrawn(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    // ------------------------------------------------------------------ coordinator

    /// @notice Posts the Merkle root of the job's task hashes; once per job, before its deadline.
    /// @param count Number of tasks under the root; must equal the job's `taskCount`.
    function postTasks(uint256 jobId, bytes32 tasksRoot, uint32 count) external onlyRole(COORDINATOR_ROLE) {
        _postTasks(jobId, tasksRoot, count);
    }

    /// @notice `postTasks` for a job with spot checks: also commits to `keccak256(secret)`, whose
    /// secret the settlement reveals. The hash of the block holding this transaction is mixed with
    /// the secret to select the checked tasks, so neither is known alone when the commitment is made.
    function postTasksCommitted(uint256 jobId, bytes32 tasksRoot, uint32 count, bytes32 commitment)
        external
        onlyRole(COORDINATOR_ROLE)
    {
        if (commitment == bytes32(0)) revert InvalidCommitment();
        _postTasks(jobId, tasksRoot, count);
        checkCommitment[jobId] = commitment;
        emit ChecksCommitted(jobId, commitment);
    }

    function _postTasks(uint256 jobId, bytes32 tasksRoot, uint32 count) private {
        Job storage job = _existingJob(jobId);
        if (job.status != JobStatus.Open) revert WrongStatus(jobId, job.status);
        if (block.timestamp > job.deadline) revert DeadlinePassed(jobId, job.deadline);
        if (tasksRoot == bytes32(0)) revert InvalidTasksRoot();
        if (count != job.taskCount) revert TaskCountMismatch(job.taskCount, count);
        job.tasksRoot = tasksRoot;
        job.status = JobStatus.Posted;
        emit TasksPosted(jobId, tasksRoot, count);
    }

    // ------------------------------------------------------------------ verifier

    /// @notice Settles a posted job in one call (at most `MAX_SETTLEMENT_CHUNK` workers): credits each
    /// worker `floor((pool - fee) * units[i] / sum(units))`, the treasury `fee` and the requester the rest.
    /// @param acceptedTasks Tasks accepted (0 to `taskCount`); 0 requires no workers and refunds everything.
    /// @param workers Paid workers in strictly ascending address order, each bonded in the registry.
    /// @param units Units of accepted work per worker, each non-zero.
    /// @param reportHash Hash of the published settlement report.
    function settle(
        uint256 jobId,
        uint32 acceptedTasks,
        address[] calldata workers,
        uint256[] calldata units,
        bytes32 reportHash
    ) external onlyRole(VERIFIER_ROLE) {
        Job storage job = _existingJob(jobId);
        if (checkCommitment[jobId] != bytes32(0)) revert SecretRequired(jobId);
        _settleOneCall(jobId, job, acceptedTasks, _fullReplicas(job, acceptedTasks), workers, units, reportHash);
    }

    /// @notice `settle` for a job posted with `postTasksCommitted`: reveals `secret` and pays the pool
    /// of the `paidReplicas` replicas (from `acceptedTasks` to `acceptedTasks * redundancy`) its
    /// accepted tasks paid for; the requester is refunded the rest of the budget.
    function settleReplicas(
        uint256 jobId,
        uint32 acceptedTasks,
        uint64 paidReplicas,
        address[] calldata workers,
        uint256[] calldata units,
        bytes32 reportHash,
        bytes32 secret
    ) external onlyRole(VERIFIER_ROLE) {
        Job storage job = _existingJob(jobId);
        _reveal(jobId, job, acceptedTasks, paidReplicas, secret);
        _settleOneCall(jobId, job, acceptedTasks, paidReplicas, workers, units, reportHash);
    }

    /// @notice Starts a chunked settlement of a posted job; no further `reclaim` is possible.
    /// @param totalUnits Sum of the units of every worker in every following chunk.
    function beginSettlement(uint256 jobId, uint32 acceptedTasks, uint256 totalUnits, bytes32 reportHash)
        external
        onlyRole(VERIFIER_ROLE)
    {
        Job storage job = _existingJob(jobId);
        if (checkCommitment[jobId] != bytes32(0)) revert SecretRequired(jobId);
        _beginSettlement(jobId, job, acceptedTasks, _fullReplicas(job, acceptedTasks), totalUnits, reportHash);
    }

    /// @notice `beginSettlement` for a job posted with `postTasksCommitted` (see `settleReplicas`).
    function beginSettlementReplicas(
        uint256 jobId,
        uint32 acceptedTasks,
        uint64 paidReplicas,
        uint256 totalUnits,
        bytes32 reportHash,
        bytes32 secret
    ) external onlyRole(VERIFIER_ROLE) {
        Job storage job = _existingJob(jobId);
        _reveal(jobId, job, acceptedTasks, paidReplicas, secret);
        _beginSettlement(jobId, job, acceptedTasks, paidReplicas, totalUnits, reportHash);
    }

    function _beginSettlement(
        uint256 jobId,
        Job storage job,
        uint32 acceptedTasks,
        uint256 paidReplicas,
        uint256 totalUnits,
        bytes32 reportHash
    ) private {
        Payout memory p = _startSettlement(jobId, job, acceptedTasks, paidReplicas, totalUnits);
        job.status = JobStatus.Settling;
        Settlement storage st = _settlements[jobId];
        // pool <= budget < 2^128, fee <= pool, totalUnits < 2^128 (checked in _startSettlement).
        st.pool = p.pool.toUint128();
        st.fee = p.fee.toUint128();
        st.totalUnits = totalUnits.toUint128();
        st.acceptedTasks = acceptedTasks;
        st.reportHash = reportHash;
        emit SettlementStarted(jobId, acceptedTasks, p.pool, totalUnits, p.fee, reportHash);
    }

    /// @notice Pays one chunk (1 to `MAX_SETTLEMENT_CHUNK` workers) of a settlement begun with
    /// `beginSettlement`. Its first worker must sort above the previous chunk's last worker.
    function settleChunk(uint256 jobId, address[] calldata workers, uint256[] calldata units)
        external
        onlyRole(VERIFIER_ROLE)
    {
        Job storage job = _existingJob(jobId);
        if (job.status != JobStatus.Settling) revert WrongStatus(jobId, job.status);
        _checkChunkShape(workers.length, units.length, false);
        Settlement storage st = _settlements[jobId];
        Payout memory p = _loadPayout(jobId, st);
        _payChunk(p, workers, units);
        // Both stay below 2^128: unitsSettled <= totalUnits and paid <= pool - fee.
        st.unitsSettled = (p.totalUnits - p.unitsLeft).toUint128();
        st.paid += p.paid.toUint128();
        st.lastWorker = p.last;
        openEscrow -= p.paid;
        totalWithdrawable += p.paid;
    }

    /// @notice Completes a chunked settlement once the chunks paid all declared units: credits the
    /// treasury the fee and the requester the rest of the budget.
    function finalizeSettlement(uint256 jobId) external onlyRole(VERIFIER_ROLE) {
        Job storage job = _existingJob(jobId);
        if (job.status != JobStatus.Settling) revert WrongStatus(jobId, job.status);
        Settlement storage st = _settlements[jobId];
        if (st.unitsSettled != st.totalUnits) revert UnitsIncomplete(st.unitsSettled, st.totalUnits);
        Payout memory p = _loadPayout(jobId, st);
        p.paid = st.paid;
        _finalize(job, p, st.acceptedTasks, 0, st.reportHash);
    }

    // ------------------------------------------------------------------ admin

    /// @notice Sets the fee (basis points of the pool) for jobs created from now on.
    function setFeeBps(uint16 newFeeBps) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (newFeeBps > MAX_FEE_BPS) revert FeeTooHigh(newFeeBps, MAX_FEE_BPS);
        emit FeeChanged(feeBps, newFeeBps);
        feeBps = newFeeBps;
    }

    /// @notice Sets the treasury credited with fees from now on.
    function setTreasury(address newTreasury) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (newTreasury == address(0)) revert ZeroAddress();
        emit TreasuryChanged(treasury, newTreasury);
        treasury = newTreasury;
    }

    // ------------------------------------------------------------------ views

    /// @notice The job `jobId` (all zero, status `None`, when it does not exist).
    function getJob(uint256 jobId) external view returns (Job memory) {
        return _jobs[jobId];
    }

    /// @notice The progress of `jobId`'s chunked settlement (all zero unless `beginSettlement` ran).
    function getSettlement(uint256 jobId) external view returns (Settlement memory) {
        return _settlements[jobId];
    }

    /// @inheritdoc IJobLookup
    function requesterOf(uint256 jobId) external view returns (address) {
        return _jobs[jobId].requester;
    }

    /// @notice The pool and fee a settlement of `jobId` with `acceptedTasks` would have.
    function previewPool(uint256 jobId, uint32 acceptedTasks) external view returns (uint256 pool, uint256 fee) {
        Job storage job = _jobs[jobId];
        if (job.status == JobStatus.None) revert UnknownJob(jobId);
        if (acceptedTasks > job.taskCount) revert TooManyAcceptedTasks(acceptedTasks, job.taskCount);
        return _pool(job, _fullReplicas(job, acceptedTasks));
    }

    /// @notice The pool and fee a settlement of `jobId` paying for `paidReplicas` replicas would have.
    function previewReplicaPool(uint256 jobId, uint64 paidReplicas) external view returns (uint256 pool, uint256 fee) {
        Job storage job = _jobs[jobId];
        if (job.status == JobStatus.None) revert UnknownJob(jobId);
        uint256 slots = uint256(job.taskCount) * job.redundancy;
        if (paidReplicas > slots) revert InvalidPaidReplicas(paidReplicas, job.taskCount, job.redundancy);
        return _pool(job, paidReplicas);
    }

    // ------------------------------------------------------------------ internals

    function _createJob(bytes32 specHash, uint32 taskCount, uint16 redundancy, uint256 budget, uint64 deadline)
        private
        returns (uint256 jobId)
    {
        if (specHash == bytes32(0)) revert InvalidSpecHash();
        if (taskCount == 0) revert InvalidTaskCount();
        if (redundancy == 0) revert InvalidRedundancy();
        if (budget == 0 || budget > type(uint128).max) revert InvalidBudget(budget);
        if (deadline <= block.timestamp) revert DeadlineNotInFuture(deadline);
        jobId = ++jobCount;
        uint16 fee = feeBps;
        _jobs[jobId] = Job({
            requester: msg.sender,
            deadline: deadline,
            redundancy: redundancy,
            feeBps: fee,
            budget: budget.toUint128(),
            taskCount: taskCount,
            status: JobStatus.Open,
            specHash: specHash,
            tasksRoot: bytes32(0)
        });
        openEscrow += budget;
        emit JobCreated(jobId, msg.sender, specHash, taskCount, redundancy, budget, deadline, fee);
        uint256 before = token.balanceOf(address(this));
        token.safeTransferFrom(msg.sender, address(this), budget);
        uint256 received = token.balanceOf(address(this)) - before;
        if (received != budget) revert TransferAmountMismatch(budget, received);
    }

    /// @dev Settles in one call: checks, pays every listed worker, credits fee and refund.
    function _settleOneCall(
        uint256 jobId,
        Job storage job,
        uint32 acceptedTasks,
        uint256 paidReplicas,
        address[] calldata workers,
        uint256[] calldata units,
        bytes32 reportHash
    ) private {
        _checkChunkShape(workers.length, units.length, true);
        uint256 totalUnits;
        for (uint256 i; i < units.length; ++i) {
            uint256 u = units[i];
            if (u > type(uint128).max) revert InvalidTotalUnits(u);
            // At most 256 terms below 2^128 each: the sum cannot overflow.
            unchecked {
                totalUnits += u;
            }
        }
        Payout memory p = _startSettlement(jobId, job, acceptedTasks, paidReplicas, totalUnits);
        _payChunk(p, workers, units);
        _finalize(job, p, acceptedTasks, p.paid, reportHash);
    }

    /// @dev Checks the revealed secret and the paid replicas of a job with spot checks.
    function _reveal(uint256 jobId, Job storage job, uint32 acceptedTasks, uint64 paidReplicas, bytes32 secret)
        private
    {
        bytes32 commitment = checkCommitment[jobId];
        if (commitment == bytes32(0)) revert NoCommitment(jobId);
        if (keccak256(abi.encode(secret)) != commitment) revert WrongSecret(jobId);
        if (paidReplicas < acceptedTasks || paidReplicas > uint256(acceptedTasks) * job.redundancy) {
            revert InvalidPaidReplicas(paidReplicas, acceptedTasks, job.redundancy);
        }
        emit ChecksRevealed(jobId, secret, paidReplicas);
    }

    /// @dev A job without spot checks pays `redundancy` replicas per accepted task.
    function _fullReplicas(Job storage job, uint32 acceptedTasks) private view returns (uint256) {
        return uint256(acceptedTasks) * job.redundancy;
    }

    /// @dev Checks a posted job can start settling with these numbers; returns its payout context.
    function _startSettlement(
        uint256 jobId,
        Job storage job,
        uint32 acceptedTasks,
        uint256 paidReplicas,
        uint256 totalUnits
    ) private view returns (Payout memory p) {
        if (job.status != JobStatus.Posted) revert WrongStatus(jobId, job.status);
        if (acceptedTasks > job.taskCount) revert TooManyAcceptedTasks(acceptedTasks, job.taskCount);
        if ((acceptedTasks == 0) != (totalUnits == 0) || totalUnits > type(uint128).max) {
            revert InvalidTotalUnits(totalUnits);
        }
        (uint256 pool, uint256 fee) = _pool(job, paidReplicas);
        p = Payout({
            jobId: jobId, pool: pool, fee: fee, totalUnits: totalUnits, unitsLeft: totalUnits, paid: 0, last: address(0)
        });
    }

    /// @dev The payout context of a chunked settlement in progress, with `paid` reset for the next chunk.
    function _loadPayout(uint256 jobId, Settlement storage st) private view returns (Payout memory) {
        return Payout({
            jobId: jobId,
            pool: st.pool,
            fee: st.fee,
            totalUnits: st.totalUnits,
            unitsLeft: st.totalUnits - st.unitsSettled,
            paid: 0,
            last: st.lastWorker
        });
    }

    /// @dev `budget * paidReplicas / (taskCount * redundancy)`: with `redundancy` replicas per accepted
    /// task this is `budget * acceptedTasks / taskCount` (the same floor of the same ratio).
    function _pool(Job storage job, uint256 paidReplicas) private view returns (uint256 pool, uint256 fee) {
        pool = uint256(job.budget) * paidReplicas / (uint256(job.taskCount) * job.redundancy);
        fee = pool * job.feeBps / BPS;
    }

    function _checkChunkShape(uint256 workers, uint256 units, bool allowEmpty) private pure {
        if (workers != units) revert LengthMismatch(workers, units);
        if (workers > MAX_SETTLEMENT_CHUNK) revert ChunkTooLarge(workers, MAX_SETTLEMENT_CHUNK);
        if (workers == 0 && !allowEmpty) revert EmptyChunk();
    }

    /// @dev Credits each worker `(pool - fee) * units[i] / totalUnits`, advancing `p.unitsLeft`, `p.paid`
    /// and `p.last`.
    function _payChunk(Payout memory p, address[] calldata workers, uint256[] calldata units) private {
        uint256 distributable = p.pool - p.fee;
        uint256 totalUnits = p.totalUnits;
        uint256 unitsLeft = p.unitsLeft;
        uint256 paid = p.paid;
        address last = p.last;
        IWorkerRegistry reg = registry;
        for (uint256 i; i < workers.length; ++i) {
            address worker = workers[i];
            uint256 u = units[i];
            if (worker <= last) revert WorkerOutOfOrder(worker);
            last = worker;
            if (u == 0) revert ZeroUnits(worker);
            if (u > unitsLeft) revert UnitsExceedTotal(totalUnits);
            if (!reg.isBonded(worker)) revert WorkerNotBonded(worker);
            uint256 amount;
            unchecked {
                unitsLeft -= u;
                // distributable < 2^128 and u <= totalUnits < 2^128: no overflow; totalUnits != 0 here.
                amount = distributable * u / totalUnits;
                paid += amount;
            }
            withdrawable[worker] += amount;
            emit WorkerPaid(p.jobId, worker, u, amount);
        }
        p.unitsLeft = unitsLeft;
        p.paid = paid;
        p.last = last;
    }

    /// @dev Finishes a settlement whose workers were credited `p.paid` in total, `paidNow` of it in this
    /// call (still counted in `openEscrow`): credits fee and refund and closes the job.
    function _finalize(Job storage job, Payout memory p, uint32 acceptedTasks, uint256 paidNow, bytes32 reportHash)
        private
    {
        uint256 refund = uint256(job.budget) - p.fee - p.paid;
        job.status = JobStatus.Settled;
        if (p.fee != 0) withdrawable[treasury] += p.fee;
        if (refund != 0) withdrawable[job.requester] += refund;
        uint256 released = refund + p.fee + paidNow;
        openEscrow -= released;
        totalWithdrawable += released;
        emit JobSettled(p.jobId, acceptedTasks, p.pool, p.totalUnits, p.fee, refund, reportHash);
    }

    function _existingJob(uint256 jobId) private view returns (Job storage job) {
        job = _jobs[jobId];
        if (job.status == JobStatus.None) revert UnknownJob(jobId);
    }

    function _requesterJob(uint256 jobId) private view returns (Job storage job) {
        job = _existingJob(jobId);
        if (job.requester != msg.sender) revert NotRequester(jobId, msg.sender);
    }
}
