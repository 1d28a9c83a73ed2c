// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {SettlementV2} from "../solidity/SettlementV2.sol";

/// @notice The few Foundry cheatcodes these tests use (forge-std is not on npm; the cheatcode address is).
interface Vm {
    function warp(uint256) external;
    function prank(address) external;
    function startPrank(address) external;
    function stopPrank() external;
    function deal(address, uint256) external;
    function expectRevert(bytes calldata) external;
    function expectRevert(bytes4) external;
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
    function addr(uint256 privateKey) external pure returns (address);
    function assume(bool) external pure;
}

abstract contract Base {
    Vm internal constant vm = Vm(0x7109709ECfa91a80626fF3989D68f67F5b1DD12D);

    function assertEq(uint256 a, uint256 b, string memory what) internal pure {
        if (a != b) revert(string.concat(what, ": not equal"));
    }

    function assertTrue(bool ok, string memory what) internal pure {
        if (!ok) revert(what);
    }

    function bound(uint256 x, uint256 lo, uint256 hi) internal pure returns (uint256) {
        return lo + (x % (hi - lo + 1));
    }

    /// @dev A debit under an order signed with `key` (the consumer's wallet).
    function signedDebit(
        SettlementV2 s,
        uint256 key,
        uint256 amount,
        uint256 cumulativeMax,
        uint64 nonce,
        uint64 deadline
    ) internal pure returns (SettlementV2.Debit memory d) {
        d.consumer = vm.addr(key);
        d.jobHash = keccak256(abi.encode("job", nonce));
        d.maxAmount = cumulativeMax;
        d.cumulativeMax = cumulativeMax;
        d.nonce = nonce;
        d.deadline = deadline;
        d.amount = amount;
        (d.v, d.r, d.s) = vm.sign(key, _digest(s, d));
    }

    function _digest(SettlementV2 s, SettlementV2.Debit memory d) private pure returns (bytes32) {
        // orderDigest is a view of the contract; recompute it here so this helper stays pure.
        bytes32 domain = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("CPX Settlement"),
                keccak256("2"),
                uint256(31337),
                address(s)
            )
        );
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256(
                    "Order(address consumer,bytes32 jobHash,uint256 maxAmount,uint256 cumulativeMax,uint64 nonce,uint64 deadline)"
                ),
                d.consumer,
                d.jobHash,
                d.maxAmount,
                d.cumulativeMax,
                d.nonce,
                d.deadline
            )
        );
        return keccak256(abi.encodePacked("\x19\x01", domain, structHash));
    }

    function one(SettlementV2.Debit memory d) internal pure returns (SettlementV2.Debit[] memory ds) {
        ds = new SettlementV2.Debit[](1);
        ds[0] = d;
    }

    function credit(address payee, uint256 cumulative) internal pure returns (SettlementV2.Credit[] memory cs) {
        cs = new SettlementV2.Credit[](1);
        cs[0] = SettlementV2.Credit(payee, cumulative);
    }
}
