// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SettlementV2} from "../solidity/SettlementV2.sol";
import {FeeOnTransferToken} from "../solidity/test/FeeOnTransferToken.sol";
import {Base} from "./Base.sol";

/// @notice Unit and fuzz tests of SettlementV2's rules (the trust model in its docstring).
contract SettlementV2Test is Base {
    SettlementV2 internal s;
    address internal constant ADMIN = address(0xA11CE);
    address internal constant OPERATOR = address(0x0BE7);
    address internal constant PROVIDER = address(0xBEEF01);
    uint256 internal constant ALICE_KEY = 0xA1;
    uint256 internal constant BOB_KEY = 0xB0;
    address internal alice;
    address internal bob;
    uint32 internal constant WINDOW = 1 days;

    function setUp() public {
        vm.warp(1_000_000);
        s = new SettlementV2(IERC20(address(0)), ADMIN, OPERATOR, WINDOW);
        alice = vm.addr(ALICE_KEY);
        bob = vm.addr(BOB_KEY);
        vm.deal(alice, 100 ether);
        vm.deal(bob, 100 ether);
        vm.prank(alice);
        s.deposit{value: 10 ether}(10 ether);
        vm.prank(bob);
        s.deposit{value: 10 ether}(10 ether);
    }

    function _commit(bytes32 id, SettlementV2.Debit[] memory ds, SettlementV2.Credit[] memory cs) internal {
        vm.prank(OPERATOR);
        s.commitBatch(id, ds, cs);
    }

    function _escrow(address who) internal view returns (uint256 escrow) {
        (escrow,,,,) = s.escrowOf(who);
    }

    function test_signedDebitAndCumulativeClaim() public {
        _commit("b1", one(signedDebit(s, ALICE_KEY, 1 ether, 1 ether, 1, type(uint64).max)), credit(PROVIDER, 1 ether));
        _commit("b2", one(signedDebit(s, ALICE_KEY, 2 ether, 3 ether, 2, type(uint64).max)), credit(PROVIDER, 3 ether));
        assertEq(_escrow(alice), 7 ether, "escrow");
        s.claim("b2", PROVIDER, 3 ether, new bytes32[](0));
        assertEq(PROVIDER.balance, 3 ether, "one claim pays both batches");
        vm.expectRevert(abi.encodeWithSelector(SettlementV2.NothingToClaim.selector, PROVIDER));
        s.claim("b1", PROVIDER, 1 ether, new bytes32[](0));
    }

    function test_operatorCannotDebitWithoutTheConsumersSignature() public {
        SettlementV2.Debit memory d = signedDebit(s, BOB_KEY, 1 ether, 1 ether, 1, type(uint64).max);
        d.consumer = alice; // bob's signature presented as alice's order
        vm.expectRevert(abi.encodeWithSelector(SettlementV2.InvalidSignature.selector, alice));
        _commit("b1", one(d), credit(OPERATOR, 1 ether));
    }

    function test_replayedOrderCannotBeSpentTwice() public {
        SettlementV2.Debit memory d = signedDebit(s, ALICE_KEY, 1 ether, 1 ether, 1, type(uint64).max);
        _commit("b1", one(d), credit(PROVIDER, 1 ether));
        vm.expectRevert(abi.encodeWithSelector(SettlementV2.OrderExceeded.selector, alice, 2 ether, 1 ether));
        _commit("b2", one(d), credit(PROVIDER, 2 ether));
    }

    function test_batchIdOnce() public {
        _commit("b1", one(signedDebit(s, ALICE_KEY, 1, 10, 1, type(uint64).max)), credit(PROVIDER, 1));
        vm.expectRevert(abi.encodeWithSelector(SettlementV2.BatchAlreadySettled.selector, bytes32("b1")));
        _commit("b1", one(signedDebit(s, ALICE_KEY, 1, 10, 1, type(uint64).max)), credit(PROVIDER, 2));
    }

    function test_adminSplitAndTimelock() public {
        vm.expectRevert(SettlementV2.AdminIsOperator.selector);
        new SettlementV2(IERC20(address(0)), OPERATOR, OPERATOR, WINDOW);
        vm.prank(OPERATOR);
        vm.expectRevert(SettlementV2.NotAdmin.selector);
        s.proposeWindow(2 days);
        vm.prank(ADMIN);
        s.proposeOperator(address(0xBAD));
        vm.prank(ADMIN);
        vm.expectRevert(abi.encodeWithSelector(SettlementV2.TimelockActive.selector, uint256(1_000_000 + 2 days)));
        s.executeOperator();
    }

    function test_windowNeverAppliesToEscrowAlreadyDeposited() public {
        vm.prank(ADMIN);
        s.proposeWindow(365 days);
        vm.warp(block.timestamp + 2 days);
        vm.prank(ADMIN);
        s.executeWindow();
        uint256 before = alice.balance;
        vm.prank(alice);
        s.reclaim(); // alice deposited under the 1-day window
        assertEq(alice.balance - before, 10 ether, "reclaimed under the old window");
    }

    function test_replayedOrderDoesNotMoveTheReclaimClock() public {
        SettlementV2.Debit memory d = signedDebit(s, ALICE_KEY, 1, 1 ether, 1, type(uint64).max);
        _commit("b1", one(d), credit(PROVIDER, 1));
        vm.warp(block.timestamp + WINDOW - 10);
        _commit("b2", one(d), credit(PROVIDER, 2)); // the operator re-uses the order to keep escrow frozen
        vm.warp(block.timestamp + 11);
        vm.prank(ADMIN);
        s.setPaused(true); // nor can a pause keep the consumer in
        vm.prank(alice);
        s.reclaim();
        assertEq(_escrow(alice), 0, "reclaimed");
    }

    function test_feeOnTransferTokenCreditsWhatArrived() public {
        FeeOnTransferToken t = new FeeOnTransferToken();
        SettlementV2 ts = new SettlementV2(IERC20(address(t)), ADMIN, OPERATOR, WINDOW);
        t.mint(alice, 1000);
        vm.startPrank(alice);
        t.approve(address(ts), 1000);
        ts.deposit(1000);
        vm.stopPrank();
        (uint256 escrow,,,,) = ts.escrowOf(alice);
        assertEq(escrow, 990, "escrow is what arrived");
        assertEq(t.balanceOf(address(ts)), escrow, "solvent");
    }

    function testFuzz_noDebitWithoutSignature(uint256 key, uint96 amount) public {
        key = bound(key, 1, 2 ** 128);
        vm.assume(vm.addr(key) != alice);
        amount = uint96(bound(amount, 1, 10 ether));
        SettlementV2.Debit memory d = signedDebit(s, key, amount, amount, 1, type(uint64).max);
        d.consumer = alice;
        vm.expectRevert(abi.encodeWithSelector(SettlementV2.InvalidSignature.selector, alice));
        _commit("b", one(d), credit(OPERATOR, amount));
    }

    function testFuzz_debitsNeverExceedTheSignedTotal(uint96 cap, uint96 first, uint96 second) public {
        cap = uint96(bound(cap, 1, 10 ether));
        first = uint96(bound(first, 1, cap));
        second = uint96(bound(second, 1, 10 ether));
        SettlementV2.Debit memory d = signedDebit(s, ALICE_KEY, first, cap, 1, type(uint64).max);
        _commit("b1", one(d), credit(PROVIDER, first));
        d.amount = second;
        if (uint256(first) + second > cap) {
            vm.expectRevert(
                abi.encodeWithSelector(SettlementV2.OrderExceeded.selector, alice, uint256(first) + second, cap)
            );
        }
        _commit("b2", one(d), credit(PROVIDER, uint256(first) + second));
        (, uint256 debited,,,) = s.escrowOf(alice);
        assertTrue(debited <= cap, "within the signed total");
    }

    function testFuzz_claimPaysEachUnitOnce(uint96 a, uint96 b) public {
        a = uint96(bound(a, 1, 5 ether));
        b = uint96(bound(b, a, 10 ether));
        _commit("b1", one(signedDebit(s, ALICE_KEY, a, 10 ether, 1, type(uint64).max)), credit(PROVIDER, a));
        s.claim("b1", PROVIDER, a, new bytes32[](0));
        if (b > a) {
            _commit("b2", one(signedDebit(s, ALICE_KEY, b - a, 10 ether, 2, type(uint64).max)), credit(PROVIDER, b));
            s.claim("b2", PROVIDER, b, new bytes32[](0));
        }
        assertEq(PROVIDER.balance, b, "paid exactly the cumulative amount");
        assertEq(s.pot(), 0, "pot emptied");
    }
}
