// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SettlementV2} from "../solidity/SettlementV2.sol";
import {Base} from "./Base.sol";

/// @notice Random deposits, signed and forged commits, claims, relays and reclaims, with ghost totals.
contract Handler is Base {
    SettlementV2 public s;
    address public constant OPERATOR = address(0x0BE7);
    uint256[3] internal keys = [uint256(0xA1), 0xB0, 0xC0];
    address[3] public payees = [address(0xBEEF01), address(0xBEEF02), address(0xBEEF03)];
    mapping(address => uint256) public credited; // ghost: cumulative credited per payee
    mapping(address => bytes32) public lastBatch;
    mapping(address => uint256) public signedCap; // ghost: the largest cumulativeMax each consumer signed
    mapping(address => uint64) public nonceOf;
    uint256 public forgedDebits; // forged commits that went through (must stay 0)
    uint256 internal batches;

    constructor(SettlementV2 s_) {
        s = s_;
        for (uint256 i; i < 3; ++i) vm.deal(vm.addr(keys[i]), 1_000 ether);
    }

    function consumer(uint256 i) public view returns (address) {
        return vm.addr(keys[i % 3]);
    }

    function deposit(uint256 i, uint256 amount) external {
        amount = bound(amount, 1, 10 ether);
        vm.prank(consumer(i));
        s.deposit{value: amount}(amount);
    }

    function commit(uint256 i, uint256 amount, uint256 p, uint256 headroom) external {
        address c = consumer(i);
        (uint256 escrow, uint256 debited,,,) = s.escrowOf(c);
        if (escrow == 0) return;
        amount = bound(amount, 1, escrow);
        uint256 cap = debited + amount + bound(headroom, 0, 1 ether);
        if (cap > signedCap[c]) signedCap[c] = cap;
        SettlementV2.Debit memory d = signedDebit(s, keys[i % 3], amount, cap, ++nonceOf[c], type(uint64).max);
        _credit(payees[p % 3], d);
    }

    function _credit(address payee, SettlementV2.Debit memory d) private {
        uint256 cumulative = credited[payee] + d.amount;
        bytes32 id = keccak256(abi.encode("batch", ++batches));
        vm.prank(OPERATOR);
        s.commitBatch(id, one(d), credit(payee, cumulative));
        credited[payee] = cumulative;
        lastBatch[payee] = id;
    }

    function forgedCommit(uint256 i, uint256 amount, uint256 wrongKey) external {
        wrongKey = bound(wrongKey, 0xD000, 0xDFFF);
        SettlementV2.Debit memory d = signedDebit(s, wrongKey, bound(amount, 1, 1 ether), 10 ether, 1000, type(uint64).max);
        d.consumer = consumer(i);
        vm.prank(OPERATOR);
        try s.commitBatch(keccak256(abi.encode("forged", ++batches)), one(d), credit(OPERATOR, 1 ether)) {
            forgedDebits++;
        } catch {}
    }

    function claim(uint256 p) external {
        address payee = payees[p % 3];
        if (lastBatch[payee] == bytes32(0)) return;
        try s.claim(lastBatch[payee], payee, credited[payee], new bytes32[](0)) {} catch {}
    }

    function reclaim(uint256 i, uint256 wait) external {
        vm.warp(block.timestamp + bound(wait, 0, 2 days));
        vm.prank(consumer(i));
        try s.reclaim() {} catch {}
    }
}

contract SettlementV2Invariants is Base {
    SettlementV2 internal s;
    Handler internal handler;

    function setUp() public {
        vm.warp(1_000_000);
        s = new SettlementV2(IERC20(address(0)), address(0xA11CE), address(0x0BE7), 1 days);
        handler = new Handler(s);
    }

    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    /// sum of escrow == contract balance - claimable (pot + parked)
    function invariant_escrowIsBalanceLessClaimable() public view {
        uint256 escrow;
        for (uint256 i; i < 3; ++i) {
            (uint256 e,,,,) = s.escrowOf(handler.consumer(i));
            escrow += e;
        }
        uint256 parked;
        for (uint256 i; i < 3; ++i) parked += s.parked(handler.payees(i));
        assertEq(escrow, address(s).balance - s.pot() - parked, "escrow == balance - claimable");
    }

    function invariant_noDebitWithoutSignedOrder() public view {
        assertEq(handler.forgedDebits(), 0, "forged debits");
        for (uint256 i; i < 3; ++i) {
            address c = handler.consumer(i);
            (, uint256 debited,,,) = s.escrowOf(c);
            assertTrue(debited <= handler.signedCap(c), "debited beyond what the consumer signed");
        }
    }

    function invariant_noDoublePayment() public view {
        for (uint256 i; i < 3; ++i) {
            address p = handler.payees(i);
            assertTrue(s.claimed(p) <= handler.credited(p), "claimed beyond cumulative credit");
            assertEq(p.balance + s.parked(p), s.claimed(p), "paid == claimed");
        }
    }
}
