// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {GleanerToken} from "../src/GleanerToken.sol";
import {Fixture} from "./utils/Fixture.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

contract GleanerTokenFaucetTest is Fixture {
    event Transfer(address indexed from, address indexed to, uint256 value);

    function test_Metadata() public view {
        assertEq(keccak256(bytes(token.name())), keccak256("Gleaner Test Token"));
        assertEq(keccak256(bytes(token.symbol())), keccak256("GLT"));
        assertEq(token.decimals(), 18);
    }

    function test_Faucet_MintsOnDevChain() public {
        uint256 supply = token.totalSupply();
        vm.expectEmit(address(token));
        emit Transfer(address(0), stranger, 5 ether);
        token.faucet(stranger, 5 ether);
        assertEq(token.balanceOf(stranger), 5 ether);
        assertEq(token.totalSupply(), supply + 5 ether);
    }

    function test_Faucet_MintsExactlyTheCap() public {
        token.faucet(stranger, token.FAUCET_MAX());
        assertEq(token.balanceOf(stranger), token.FAUCET_MAX());
    }

    function test_RevertWhen_FaucetAmountAboveCap() public {
        uint256 max = token.FAUCET_MAX();
        vm.expectRevert(abi.encodeWithSelector(GleanerToken.FaucetAmountTooLarge.selector, max + 1, max));
        token.faucet(stranger, max + 1);
    }

    function test_RevertWhen_FaucetOnOtherChain() public {
        vm.chainId(1);
        vm.expectRevert(abi.encodeWithSelector(GleanerToken.FaucetDisabled.selector, 1));
        token.faucet(stranger, 1 ether);
    }

    function testFuzz_Faucet_MintsAnyAmountUpToCap(address to, uint256 amount) public {
        if (to == address(0)) to = stranger;
        amount = bound(amount, 0, token.FAUCET_MAX());
        uint256 before = token.balanceOf(to);
        token.faucet(to, amount);
        assertEq(token.balanceOf(to), before + amount);
    }
}

contract GleanerTokenPermitTest is Fixture {
    uint256 internal constant OWNER_KEY = 0xA11CE;

    function test_Permit_SetsAllowanceAndNonce() public {
        address owner = vm.addr(OWNER_KEY);
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = signPermit(OWNER_KEY, stranger, 42 ether, deadline);
        token.permit(owner, stranger, 42 ether, deadline, v, r, s);
        assertEq(token.allowance(owner, stranger), 42 ether);
        assertEq(token.nonces(owner), 1);
    }

    function test_RevertWhen_PermitExpired() public {
        address owner = vm.addr(OWNER_KEY);
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = signPermit(OWNER_KEY, stranger, 1 ether, deadline);
        vm.warp(deadline + 1);
        vm.expectRevert(abi.encodeWithSelector(ERC20Permit.ERC2612ExpiredSignature.selector, deadline));
        token.permit(owner, stranger, 1 ether, deadline, v, r, s);
    }

    function test_RevertWhen_PermitReplayed() public {
        address owner = vm.addr(OWNER_KEY);
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = signPermit(OWNER_KEY, stranger, 1 ether, deadline);
        token.permit(owner, stranger, 1 ether, deadline, v, r, s);
        vm.expectPartialRevert(ERC20Permit.ERC2612InvalidSigner.selector);
        token.permit(owner, stranger, 1 ether, deadline, v, r, s);
    }
}
