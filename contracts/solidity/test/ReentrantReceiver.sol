// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @notice TEST DOUBLE: a hostile payee. When paid it calls back into `target` with a preset payload
/// (e.g. claim the same leaf again, or reclaim) and records whether that nested call succeeded and what it
/// returned; or it rejects payments outright. Never deploy outside tests.
contract ReentrantReceiver {
    address public target;
    bytes public attackPayload;
    bool public rejectPayments;
    bool public attacked;
    bool public attackSucceeded;
    bytes public attackResult;

    function setTarget(address target_) external {
        target = target_;
    }

    function arm(bytes calldata payload) external {
        attackPayload = payload;
        attacked = false;
    }

    function setRejectPayments(bool reject) external {
        rejectPayments = reject;
    }

    /// @notice Act as a consumer: forward value (or approve-less token call data) to the target.
    function callTarget(bytes calldata data) external payable returns (bytes memory) {
        (bool ok, bytes memory result) = target.call{value: msg.value}(data);
        if (!ok) {
            assembly {
                revert(add(result, 32), mload(result))
            }
        }
        return result;
    }

    receive() external payable {
        if (rejectPayments) revert("ReentrantReceiver: rejected");
        if (attackPayload.length != 0 && !attacked) {
            attacked = true;
            (bool ok, bytes memory result) = target.call(attackPayload);
            attackSucceeded = ok;
            attackResult = result;
        }
    }
}
