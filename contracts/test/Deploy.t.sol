// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Deploy} from "../script/Deploy.s.sol";
import {GleanerToken} from "../src/GleanerToken.sol";
import {JobMarket} from "../src/JobMarket.sol";
import {WorkerRegistry} from "../src/WorkerRegistry.sol";
import {Test} from "./utils/Test.sol";

contract DeployScriptTest is Test {
    function test_Run_DeploysAndWiresWithHandOver() public {
        address admin = makeAddr("final-admin");
        address treasury = makeAddr("treasury");
        address coordinator = makeAddr("coordinator");
        address verifier = makeAddr("verifier");
        vm.setEnv("ADMIN", vm.toString(admin));
        vm.setEnv("TREASURY", vm.toString(treasury));
        vm.setEnv("COORDINATOR", vm.toString(coordinator));
        vm.setEnv("VERIFIER", vm.toString(verifier));
        vm.setEnv("MIN_STAKE", "5");
        vm.setEnv("UNBONDING_DELAY", "3600");
        vm.setEnv("FEE_BPS", "25");

        Deploy script = new Deploy();
        Deploy.Deployment memory d = script.run();
        JobMarket market = JobMarket(d.market);
        WorkerRegistry registry = WorkerRegistry(d.registry);

        assertEq(GleanerToken(d.token).FAUCET_MAX(), 1_000_000 ether);
        assertEq(address(market.token()), d.token);
        assertEq(address(market.registry()), d.registry);
        assertEq(address(registry.token()), d.token);
        assertEq(address(registry.market()), d.market);
        assertEq(market.treasury(), treasury);
        assertEq(registry.treasury(), treasury);
        assertEq(market.feeBps(), 25);
        assertEq(registry.minStake(), 5);
        assertEq(registry.unbondingDelay(), 3600);
        assertTrue(market.hasRole(market.COORDINATOR_ROLE(), coordinator));
        assertTrue(market.hasRole(market.VERIFIER_ROLE(), verifier));
        assertTrue(registry.hasRole(registry.SLASHER_ROLE(), verifier));
        assertTrue(market.hasRole(market.DEFAULT_ADMIN_ROLE(), admin));
        assertTrue(registry.hasRole(registry.DEFAULT_ADMIN_ROLE(), admin));
        assertFalse(market.hasRole(market.DEFAULT_ADMIN_ROLE(), address(this)));
        assertFalse(registry.hasRole(registry.DEFAULT_ADMIN_ROLE(), address(this)));
    }
}
