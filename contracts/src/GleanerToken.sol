// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

/// @title GleanerToken
/// @notice Test token for local devnets: an ERC-20 with EIP-2612 permit and a capped faucet that works only
/// on the dev chain (chain id 31337). Production deployments pay in any existing ERC-20 instead.
contract GleanerToken is ERC20, ERC20Permit {
    /// @notice The only chain on which `faucet` mints (anvil's and forge's default chain id).
    uint256 public constant DEV_CHAIN_ID = 31_337;
    /// @notice Most tokens one `faucet` call may mint (1,000,000 tokens of 18 decimals).
    uint256 public constant FAUCET_MAX = 1_000_000 ether;

    /// @notice `faucet` was called on a chain other than `DEV_CHAIN_ID`.
    error FaucetDisabled(uint256 chainId);
    /// @notice `faucet` was asked for more than `FAUCET_MAX`.
    error FaucetAmountTooLarge(uint256 amount, uint256 max);

    constructor() ERC20("Gleaner Test Token", "GLT") ERC20Permit("Gleaner Test Token") {}

    /// @notice Mints `amount` test tokens to `to`; dev chain only, at most `FAUCET_MAX` per call.
    /// @dev Emits the ERC-20 `Transfer(address(0), to, amount)` event.
    function faucet(address to, uint256 amount) external {
        if (block.chainid != DEV_CHAIN_ID) revert FaucetDisabled(block.chainid);
        if (amount > FAUCET_MAX) revert FaucetAmountTooLarge(amount, FAUCET_MAX);
        _mint(to, amount);
    }
}
