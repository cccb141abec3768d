// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @notice What a whitelisted DEX adapter offers a Credit Account: an exact-input swap that pulls
/// `amountIn` of `tokenIn` from the caller and pays `tokenOut` back to the caller.
interface ISwapAdapter {
    function swap(address tokenIn, address tokenOut, uint256 amountIn, uint256 minAmountOut)
        external
        returns (uint256 amountOut);
}
