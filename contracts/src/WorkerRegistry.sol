// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IJobLookup} from "./interfaces/IJobLookup.sol";
import {IWorkerRegistry} from "./interfaces/IWorkerRegistry.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

/// @title WorkerRegistry
/// @notice Workers (miners) stake tokens here to be leased tasks. Stake leaves through an unbonding period
/// (`requestUnstake`, then `withdraw` once `unbondingDelay` has passed) and can be slashed, both while
/// active and while unbonding. Slashed tokens go to the requester of the wronged job (looked up in the job
/// market) or, for job id 0 or an unknown job, to the treasury.
/// @dev Invariant: `token.balanceOf(this) == totalStaked + totalUnbonding` (for a plain ERC-20; tokens that
/// take a fee on transfer are refused at `stake`).
contract WorkerRegistry is IWorkerRegistry, AccessControl, ReentrancyGuard {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    /// @notice One worker's bonded tokens.
    /// @param stake Active stake, counted for eligibility.
    /// @param unbonding Stake on its way out; still slashable, not counted for eligibility.
    /// @param unlockAt Time from which `unbonding` can be withdrawn.
    struct WorkerStake {
        uint128 stake;
        uint128 unbonding;
        uint64 unlockAt;
    }

    /// @notice Role allowed to `slash` (the verifier).
    bytes32 public constant SLASHER_ROLE = keccak256("SLASHER_ROLE");
    /// @notice Longest unbonding delay the admin may set.
    uint64 public constant MAX_UNBONDING_DELAY = 365 days;

    /// @notice The staking token.
    IERC20 public immutable token;
    /// @notice Active stake a worker needs to be eligible for leases.
    uint256 public minStake;
    /// @notice Seconds between `requestUnstake` and the earliest `withdraw` of that stake.
    uint64 public unbondingDelay;
    /// @notice Receives slashed tokens when no requester can be found for the job.
    address public treasury;
    /// @notice The job market asked for a job's requester when slashing; may be unset (address(0)).
    IJobLookup public market;
    /// @notice Sum of all workers' active stake.
    uint256 public totalStaked;
    /// @notice Sum of all workers' unbonding stake.
    uint256 public totalUnbonding;

    mapping(address worker => WorkerStake) private _stakes;

    /// @notice `worker` added `amount` to its active stake, which is now `stake`.
    event Staked(address indexed worker, uint256 amount, uint256 stake);
    /// @notice `worker` moved `amount` from active stake to unbonding; its whole unbonding balance
    /// (`unbonding`) can be withdrawn from `unlockAt`.
    event UnstakeRequested(address indexed worker, uint256 amount, uint256 unbonding, uint64 unlockAt);
    /// @notice `worker` withdrew `amount` of unbonded stake.
    event StakeWithdrawn(address indexed worker, uint256 amount);
    /// @notice `amount` of `worker`'s bonded tokens (`fromStake` active first, then `fromUnbonding`) went to
    /// `beneficiary` for its behaviour in `jobId`; `evidenceHash` identifies the published evidence.
    event Slashed(
        address indexed worker,
        uint256 indexed jobId,
        uint256 amount,
        address indexed beneficiary,
        bytes32 evidenceHash,
        uint256 fromStake,
        uint256 fromUnbonding
    );
    /// @notice The admin changed `minStake`.
    event MinStakeChanged(uint256 oldMinStake, uint256 newMinStake);
    /// @notice The admin changed `unbondingDelay` (pending unbondings keep their `unlockAt`).
    event UnbondingDelayChanged(uint64 oldDelay, uint64 newDelay);
    /// @notice The admin changed the treasury.
    event TreasuryChanged(address oldTreasury, address newTreasury);
    /// @notice The admin changed the job market used to find a slashed job's requester.
    event MarketChanged(address oldMarket, address newMarket);

    /// @notice An amount of zero was given.
    error ZeroAmount();
    /// @notice A required address was zero.
    error ZeroAddress();
    /// @notice The stake would not fit the 128-bit accounting.
    error StakeTooLarge(uint256 amount);
    /// @notice The token delivered a different amount than requested (fee-on-transfer tokens are unsupported).
    error TransferAmountMismatch(uint256 expected, uint256 received);
    /// @notice `requestUnstake` asked for more than the active stake.
    error InsufficientStake(uint256 requested, uint256 available);
    /// @notice `withdraw` found no unbonding stake.
    error NothingToWithdraw();
    /// @notice `withdraw` was called before `unlockAt`.
    error StillUnbonding(uint64 unlockAt);
    /// @notice `slash` found nothing bonded for `worker`.
    error NothingToSlash(address worker);
    /// @notice The unbonding delay exceeds `MAX_UNBONDING_DELAY`.
    error UnbondingDelayTooLong(uint64 delay, uint64 max);

    /// @param token_ Staking token.
    /// @param admin Holder of DEFAULT_ADMIN_ROLE (grants SLASHER_ROLE, sets parameters).
    /// @param minStake_ Initial `minStake`.
    /// @param unbondingDelay_ Initial `unbondingDelay` in seconds.
    /// @param treasury_ Initial treasury.
    constructor(IERC20 token_, address admin, uint256 minStake_, uint64 unbondingDelay_, address treasury_) {
        if (address(token_) == address(0) || admin == address(0) || treasury_ == address(0)) {
            revert ZeroAddress();
        }
        if (unbondingDelay_ > MAX_UNBONDING_DELAY) {
            revert UnbondingDelayTooLong(unbondingDelay_, MAX_UNBONDING_DELAY);
        }
        token = token_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        minStake = minStake_;
        unbondingDelay = unbondingDelay_;
        treasury = treasury_;
        emit MinStakeChanged(0, minStake_);
        emit UnbondingDelayChanged(0, unbondingDelay_);
        emit TreasuryChanged(address(0), treasury_);
    }

    /// @notice Adds `amount` tokens (pulled from the caller, who must have approved them) to its active stake.
    function stake(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        WorkerStake storage s = _stakes[msg.sender];
        uint256 newStake = uint256(s.stake) + amount;
        // Keep stake + unbonding within 128 bits so that `requestUnstake` cannot overflow.
        if (newStake + s.unbonding > type(uint128).max) revert StakeTooLarge(amount);
        s.stake = newStake.toUint128();
        totalStaked += amount;
        emit Staked(msg.sender, amount, newStake);
        _pull(msg.sender, amount);
    }

    /// @notice Moves `amount` of the caller's active stake into unbonding. The whole unbonding balance
    /// unlocks `unbondingDelay` seconds from now (a new request restarts the clock for all of it).
    function requestUnstake(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        WorkerStake storage s = _stakes[msg.sender];
        uint256 active = s.stake;
        if (amount > active) revert InsufficientStake(amount, active);
        uint64 unlockAt = block.timestamp.toUint64() + unbondingDelay;
        // stake + unbonding < 2^128 (enforced by `stake`), so this sum cannot overflow.
        uint128 unbonding = s.unbonding + amount.toUint128();
        s.stake = (active - amount).toUint128();
        s.unbonding = unbonding;
        s.unlockAt = unlockAt;
        totalStaked -= amount;
        totalUnbonding += amount;
        emit UnstakeRequested(msg.sender, amount, unbonding, unlockAt);
    }

    /// @notice Sends the caller its whole unbonding balance once its `unlockAt` has passed.
    function withdraw() external nonReentrant {
        WorkerStake storage s = _stakes[msg.sender];
        uint256 amount = s.unbonding;
        if (amount == 0) revert NothingToWithdraw();
        if (block.timestamp < s.unlockAt) revert StillUnbonding(s.unlockAt);
        s.unbonding = 0;
        s.unlockAt = 0;
        totalUnbonding -= amount;
        emit StakeWithdrawn(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    /// @notice Takes up to `amount` of `worker`'s bonded tokens, active stake first, then unbonding, and
    /// sends them to the requester of `jobId` (the treasury when `jobId` is 0 or unknown). Takes what is
    /// there when less than `amount` is bonded; the `Slashed` event carries the amount actually taken.
    /// @param evidenceHash Hash of the published evidence (e.g. the contradicting signed result).
    /// @return taken Tokens slashed.
    function slash(address worker, uint256 amount, uint256 jobId, bytes32 evidenceHash)
        external
        onlyRole(SLASHER_ROLE)
        nonReentrant
        returns (uint256 taken)
    {
        if (amount == 0) revert ZeroAmount();
        WorkerStake storage s = _stakes[worker];
        uint256 active = s.stake;
        uint256 unbonding = s.unbonding;
        uint256 bonded = active + unbonding;
        if (bonded == 0) revert NothingToSlash(worker);
        taken = amount < bonded ? amount : bonded;
        uint256 fromStake = taken < active ? taken : active;
        uint256 fromUnbonding = taken - fromStake;
        s.stake = (active - fromStake).toUint128();
        s.unbonding = (unbonding - fromUnbonding).toUint128();
        if (fromUnbonding == unbonding) s.unlockAt = 0;
        totalStaked -= fromStake;
        totalUnbonding -= fromUnbonding;
        address beneficiary = beneficiaryFor(jobId);
        emit Slashed(worker, jobId, taken, beneficiary, evidenceHash, fromStake, fromUnbonding);
        token.safeTransfer(beneficiary, taken);
    }

    /// @notice Sets the active stake needed for eligibility.
    function setMinStake(uint256 newMinStake) external onlyRole(DEFAULT_ADMIN_ROLE) {
        emit MinStakeChanged(minStake, newMinStake);
        minStake = newMinStake;
    }

    /// @notice Sets the unbonding delay for future `requestUnstake` calls.
    function setUnbondingDelay(uint64 newDelay) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (newDelay > MAX_UNBONDING_DELAY) revert UnbondingDelayTooLong(newDelay, MAX_UNBONDING_DELAY);
        emit UnbondingDelayChanged(unbondingDelay, newDelay);
        unbondingDelay = newDelay;
    }

    /// @notice Sets the treasury that receives slashes without a known requester.
    function setTreasury(address newTreasury) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (newTreasury == address(0)) revert ZeroAddress();
        emit TreasuryChanged(treasury, newTreasury);
        treasury = newTreasury;
    }

    /// @notice Sets the job market asked for a slashed job's requester (address(0) sends all slashes to
    /// the treasury).
    function setMarket(IJobLookup newMarket) external onlyRole(DEFAULT_ADMIN_ROLE) {
        emit MarketChanged(address(market), address(newMarket));
        market = newMarket;
    }

    /// @notice `worker`'s active stake.
    function stakeOf(address worker) external view returns (uint256) {
        return _stakes[worker].stake;
    }

    /// @notice `worker`'s unbonding stake and the time it unlocks.
    function unbondingOf(address worker) external view returns (uint256 amount, uint64 unlockAt) {
        WorkerStake storage s = _stakes[worker];
        return (s.unbonding, s.unlockAt);
    }

    /// @notice `worker`'s full stake record.
    function getStake(address worker) external view returns (WorkerStake memory) {
        return _stakes[worker];
    }

    /// @inheritdoc IWorkerRegistry
    function isEligible(address worker) external view returns (bool) {
        uint256 active = _stakes[worker].stake;
        return active != 0 && active >= minStake;
    }

    /// @inheritdoc IWorkerRegistry
    function isBonded(address worker) external view returns (bool) {
        WorkerStake storage s = _stakes[worker];
        return s.stake != 0 || s.unbonding != 0;
    }

    /// @notice Who receives a slash for `jobId`: its requester, or the treasury when `jobId` is 0, no
    /// market is set or the market does not know the job.
    function beneficiaryFor(uint256 jobId) public view returns (address) {
        if (jobId != 0 && address(market) != address(0)) {
            address requester = market.requesterOf(jobId);
            if (requester != address(0)) return requester;
        }
        return treasury;
    }

    /// @dev Pulls exactly `amount` from `from`, refusing tokens that deliver less.
    function _pull(address from, uint256 amount) private {
        uint256 before = token.balanceOf(address(this));
        token.safeTransferFrom(from, address(this), amount);
        uint256 received = token.balanceOf(address(this)) - before;
        if (received != amount) revert TransferAmountMismatch(amount, received);
    }
}
