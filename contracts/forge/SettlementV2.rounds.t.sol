// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SettlementV2} from "../solidity/SettlementV2.sol";
import {Base} from "./Base.sol";

/// @notice Round commitments: operator-only, write-once per round id, stopped by a pause or a revoke.
/// Attacker's view: the operator key (and the admin key) must never change a commitment once made.
contract SettlementV2RoundsTest is Base {
    SettlementV2 internal s;
    address internal constant ADMIN = address(0xA11CE);
    address internal constant OPERATOR = address(0x0BE7);
    address internal constant PROVIDER = address(0xBEEF01);
    uint256 internal constant ALICE_KEY = 0xA1;

    function setUp() public {
        vm.warp(1_000_000);
        s = new SettlementV2(IERC20(address(0)), ADMIN, OPERATOR, 1 days);
        vm.deal(vm.addr(ALICE_KEY), 10 ether);
        vm.prank(vm.addr(ALICE_KEY));
        s.deposit{value: 1 ether}(1 ether);
    }

    function rounds(uint64 id, bytes32 snap, bytes32 result) internal pure returns (SettlementV2.RoundHashes[] memory rs) {
        rs = new SettlementV2.RoundHashes[](1);
        rs[0] = SettlementV2.RoundHashes(id, snap, result);
    }

    function commitment(bytes32 snap, bytes32 result) internal pure returns (bytes32) {
        return keccak256(abi.encode(snap, result));
    }

    function test_operatorCommitsARoundOnce() public {
        vm.prank(OPERATOR);
        s.commitRounds(rounds(7, "snap", "result"));
        assertTrue(s.roundCommitment(7) == commitment("snap", "result"), "stored");
        vm.prank(OPERATOR);
        vm.expectRevert(
            abi.encodeWithSelector(SettlementV2.RoundAlreadyCommitted.selector, uint256(7), commitment("snap", "result"))
        );
        s.commitRounds(rounds(7, "snap", "other"));
    }

    function test_onlyTheOperatorCommits() public {
        vm.prank(ADMIN);
        vm.expectRevert(SettlementV2.NotOperator.selector);
        s.commitRounds(rounds(1, "a", "b"));
        vm.prank(address(0xBAD));
        vm.expectRevert(SettlementV2.NotOperator.selector);
        s.commitRounds(rounds(1, "a", "b"));
    }

    function test_pauseAndRevokeStopCommitmentsAtOnce() public {
        vm.prank(ADMIN);
        s.setPaused(true);
        vm.prank(OPERATOR);
        vm.expectRevert(SettlementV2.IsPaused.selector);
        s.commitRounds(rounds(1, "a", "b"));
        vm.prank(ADMIN);
        s.setPaused(false);
        vm.prank(ADMIN);
        s.revokeOperator();
        vm.prank(OPERATOR);
        vm.expectRevert(SettlementV2.NotOperator.selector);
        s.commitRounds(rounds(1, "a", "b"));
    }

    function test_zeroIdsAndHashesAndEmptyCallsAreRefused() public {
        vm.startPrank(OPERATOR);
        vm.expectRevert(abi.encodeWithSelector(SettlementV2.InvalidRound.selector, uint256(0)));
        s.commitRounds(rounds(0, "a", "b"));
        vm.expectRevert(abi.encodeWithSelector(SettlementV2.InvalidRound.selector, uint256(3)));
        s.commitRounds(rounds(3, bytes32(0), "b"));
        vm.expectRevert(abi.encodeWithSelector(SettlementV2.InvalidRound.selector, uint256(3)));
        s.commitRounds(rounds(3, "a", bytes32(0)));
        vm.expectRevert(SettlementV2.EmptyRounds.selector);
        s.commitRounds(new SettlementV2.RoundHashes[](0));
        vm.stopPrank();
    }

    function test_aDuplicateInOneCallRevertsTheWholeCall() public {
        SettlementV2.RoundHashes[] memory rs = new SettlementV2.RoundHashes[](3);
        rs[0] = SettlementV2.RoundHashes(1, "a", "b");
        rs[1] = SettlementV2.RoundHashes(2, "c", "d");
        rs[2] = SettlementV2.RoundHashes(1, "e", "f");
        vm.prank(OPERATOR);
        vm.expectRevert(
            abi.encodeWithSelector(SettlementV2.RoundAlreadyCommitted.selector, uint256(1), commitment("a", "b"))
        );
        s.commitRounds(rs);
        assertTrue(s.roundCommitment(1) == bytes32(0) && s.roundCommitment(2) == bytes32(0), "nothing landed");
    }

    function test_settlementAndRoundsInOneTransaction() public {
        SettlementV2.Debit memory d = signedDebit(s, ALICE_KEY, 1, 10, 1, type(uint64).max);
        vm.prank(OPERATOR);
        s.commitBatchWithRounds("b1", one(d), credit(PROVIDER, 1), rounds(5, "s5", "r5"));
        assertTrue(s.rootOf("b1") != bytes32(0), "batch committed");
        assertTrue(s.roundCommitment(5) == commitment("s5", "r5"), "round committed");
        // A taken round id sinks the batch with it: nothing half-done.
        SettlementV2.Debit memory d2 = signedDebit(s, ALICE_KEY, 1, 10, 2, type(uint64).max);
        vm.prank(OPERATOR);
        vm.expectRevert(
            abi.encodeWithSelector(SettlementV2.RoundAlreadyCommitted.selector, uint256(5), commitment("s5", "r5"))
        );
        s.commitBatchWithRounds("b2", one(d2), credit(PROVIDER, 2), rounds(5, "s5", "r5"));
        assertTrue(s.rootOf("b2") == bytes32(0), "batch reverted with the round");
    }

    /// @dev The worst the operator key can do: squat a round id not cleared yet with hashes no replay will
    /// give. The honest commit of that round then fails and the lie stays on chain, public and signed; a
    /// revoke stops the key at once, and the squatted commitment is never rewritten, not even by the admin.
    function test_aSquattedRoundIdStaysAPublicLieNeverARewrite() public {
        vm.prank(OPERATOR);
        s.commitRounds(rounds(99, "forged snapshot", "forged result"));
        bytes32 forged = commitment("forged snapshot", "forged result");
        vm.prank(OPERATOR);
        vm.expectRevert(abi.encodeWithSelector(SettlementV2.RoundAlreadyCommitted.selector, uint256(99), forged));
        s.commitRounds(rounds(99, "true snapshot", "true result"));
        vm.prank(ADMIN);
        s.revokeOperator();
        vm.prank(OPERATOR);
        vm.expectRevert(SettlementV2.NotOperator.selector);
        s.commitRounds(rounds(100, "forged snapshot", "forged result"));
        assertTrue(s.roundCommitment(99) == forged, "the lie stays visible");
        assertTrue(s.roundCommitment(100) == bytes32(0), "stopped at once");
    }

    /// @dev Whatever the operator (or a new operator after the timelock, or the admin) sends later, a
    /// committed round keeps its first commitment.
    function testFuzz_aCommitmentIsNeverOverwritten(
        uint64 id,
        bytes32 snap,
        bytes32 result,
        bytes32 snap2,
        bytes32 result2,
        uint256 who
    ) public {
        vm.assume(id != 0 && snap != 0 && result != 0 && snap2 != 0 && result2 != 0);
        vm.prank(OPERATOR);
        s.commitRounds(rounds(id, snap, result));
        bytes32 first = s.roundCommitment(id);
        if (who % 2 == 1) {
            // the admin hands the operator role to a fresh key: the new key cannot rewrite history either
            vm.prank(ADMIN);
            s.proposeOperator(address(0xC0FFEE));
            vm.warp(block.timestamp + 2 days);
            vm.prank(ADMIN);
            s.executeOperator();
        }
        address sender = who % 2 == 1 ? address(0xC0FFEE) : OPERATOR;
        vm.prank(sender);
        vm.expectRevert(abi.encodeWithSelector(SettlementV2.RoundAlreadyCommitted.selector, uint256(id), first));
        s.commitRounds(rounds(id, snap2, result2));
        SettlementV2.Debit memory d = signedDebit(s, ALICE_KEY, 1, 10, 1, type(uint64).max);
        vm.prank(sender);
        vm.expectRevert(abi.encodeWithSelector(SettlementV2.RoundAlreadyCommitted.selector, uint256(id), first));
        s.commitBatchWithRounds("b", one(d), credit(PROVIDER, 1), rounds(id, snap2, result2));
        assertTrue(s.roundCommitment(id) == commitment(snap, result), "first commitment kept");
    }

    /// @dev Distinct ids in one call all land, each under its own hashes.
    function testFuzz_aBatchOfDistinctRoundsLandsWhole(uint64 start, uint8 n, bytes32 seed) public {
        n = uint8(bound(n, 1, 40));
        start = uint64(bound(start, 1, type(uint64).max - 64));
        SettlementV2.RoundHashes[] memory rs = new SettlementV2.RoundHashes[](n);
        for (uint256 i; i < n; ++i) {
            rs[i] = SettlementV2.RoundHashes(
                uint64(start + i), keccak256(abi.encode(seed, i, "s")), keccak256(abi.encode(seed, i, "r"))
            );
        }
        vm.prank(OPERATOR);
        s.commitRounds(rs);
        for (uint256 i; i < n; ++i) {
            assertTrue(s.roundCommitment(start + i) == commitment(rs[i].snapshotHash, rs[i].resultHash), "each");
        }
    }
}
