// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @notice TEST DOUBLE: a 6-decimal stablecoin anyone can mint. Never deploy outside tests and benchmarks.
contract MockStablecoin is ERC20 {
    constructor(string memory symbol_) ERC20(symbol_, symbol_) {}

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}
