// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {GleanerToken} from "../src/GleanerToken.sol";
import {JobMarket} from "../src/JobMarket.sol";
import {WorkerRegistry} from "../src/WorkerRegistry.sol";
import {IJobLookup} from "../src/interfaces/IJobLookup.sol";
import {VM_ADDRESS, Vm} from "../test/utils/Vm.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

/// @title Deploy
/// @notice Deploys and wires WorkerRegistry and JobMarket (and a GleanerToken when TOKEN is unset). Holds no
/// keys: pass the deployer with forge's own flags, e.g.
///   forge script script/Deploy.s.sol --rpc-url $RPC --broadcast --private-key $KEY   (or --account NAME)
/// Environment (all optional):
///   ADMIN            final DEFAULT_ADMIN_ROLE holder (default: the deployer)
///   TREASURY         receives fees and unattributed slashes (default: ADMIN)
///   TOKEN            payment and staking ERC-20 (default: deploy a GleanerToken test token)
///   COORDINATOR      granted COORDINATOR_ROLE on the market (default: none)
///   VERIFIER         granted VERIFIER_ROLE on the market and SLASHER_ROLE on the registry (default: none)
///   MIN_STAKE        wei (default 100e18); UNBONDING_DELAY seconds (default 7 days); FEE_BPS (default 0)
contract Deploy {
    Vm internal constant vm = Vm(VM_ADDRESS);

    /// @notice Printed by forge script.
    event log_named_address(string key, address val);

    struct Deployment {
        address token;
        address registry;
        address market;
    }

    function run() external returns (Deployment memory d) {
        vm.startBroadcast();
        // The broadcasting account (from --private-key, --account or --sender) signs every transaction.
        (, address deployer,) = vm.readCallers();
        address admin = vm.envOr("ADMIN", deployer);
        address treasury = vm.envOr("TREASURY", admin);
        address tokenAddr = vm.envOr("TOKEN", address(0));
        address coordinator = vm.envOr("COORDINATOR", address(0));
        address verifier = vm.envOr("VERIFIER", address(0));
        uint256 minStake = vm.envOr("MIN_STAKE", uint256(100 ether));
        uint256 unbondingDelay = vm.envOr("UNBONDING_DELAY", uint256(7 days));
        uint256 feeBps = vm.envOr("FEE_BPS", uint256(0));

        if (tokenAddr == address(0)) tokenAddr = address(new GleanerToken());
        // The deployer administers both contracts while wiring them, then hands over to ADMIN.
        WorkerRegistry registry =
            new WorkerRegistry(IERC20(tokenAddr), deployer, minStake, _u64(unbondingDelay), treasury);
        JobMarket market = new JobMarket(IERC20(tokenAddr), registry, deployer, treasury);
        registry.setMarket(IJobLookup(address(market)));
        if (feeBps != 0) market.setFeeBps(_u16(feeBps));
        if (coordinator != address(0)) market.grantRole(market.COORDINATOR_ROLE(), coordinator);
        if (verifier != address(0)) {
            market.grantRole(market.VERIFIER_ROLE(), verifier);
            registry.grantRole(registry.SLASHER_ROLE(), verifier);
        }
        if (admin != deployer) {
            market.grantRole(market.DEFAULT_ADMIN_ROLE(), admin);
            registry.grantRole(registry.DEFAULT_ADMIN_ROLE(), admin);
            market.renounceRole(market.DEFAULT_ADMIN_ROLE(), deployer);
            registry.renounceRole(registry.DEFAULT_ADMIN_ROLE(), deployer);
        }
        vm.stopBroadcast();

        d = Deployment({token: tokenAddr, registry: address(registry), market: address(market)});
        emit log_named_address("token", d.token);
        emit log_named_address("registry", d.registry);
        emit log_named_address("market", d.market);
    }

    function _u64(uint256 x) private pure returns (uint64) {
        require(x <= type(uint64).max, "UNBONDING_DELAY too large");
        // casting to 'uint64' is safe because of the check above
        // forge-lint: disable-next-line(unsafe-typecast)
        return uint64(x);
    }

    function _u16(uint256 x) private pure returns (uint16) {
        require(x <= type(uint16).max, "FEE_BPS too large");
        // casting to 'uint16' is safe because of the check above
        // forge-lint: disable-next-line(unsafe-typecast)
        return uint16(x);
    }
}
