// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ISwapAdapter} from "./interfaces/ISwapAdapter.sol";
import {IERC20} from "./interfaces/IERC20.sol";
import {PriceOracle} from "./PriceOracle.sol";
import {SafeTransfer} from "./libraries/SafeTransfer.sol";

/// @notice A DEX that trades from its own reserves at the oracle price minus a fee. It stands in
/// for the whitelisted protocols a Credit Account may use, with output anyone can predict.
contract OracleSwapAdapter is ISwapAdapter {
    using SafeTransfer for address;

    uint16 public constant PERCENTAGE_FACTOR = 10_000;

    PriceOracle public immutable oracle;
    uint16 public immutable feeBps;

    event Swap(
        address indexed trader, address indexed tokenIn, address indexed tokenOut, uint256 amountIn, uint256 amountOut
    );

    error InsufficientOutput(uint256 amountOut, uint256 minAmountOut);
    error InsufficientReserves(address token, uint256 reserve, uint256 amountOut);

    constructor(PriceOracle oracle_, uint16 feeBps_) {
        oracle = oracle_;
        feeBps = feeBps_;
    }

    function quote(address tokenIn, address tokenOut, uint256 amountIn) public view returns (uint256) {
        return oracle.convert(amountIn, tokenIn, tokenOut) * (PERCENTAGE_FACTOR - feeBps) / PERCENTAGE_FACTOR;
    }

    function swap(address tokenIn, address tokenOut, uint256 amountIn, uint256 minAmountOut)
        external
        returns (uint256 amountOut)
    {
        amountOut = quote(tokenIn, tokenOut, amountIn);
        if (amountOut < minAmountOut) revert InsufficientOutput(amountOut, minAmountOut);
        uint256 reserve = IERC20(tokenOut).balanceOf(address(this));
        if (reserve < amountOut) revert InsufficientReserves(tokenOut, reserve, amountOut);
        tokenIn.safeTransferFrom(msg.sender, address(this), amountIn);
        tokenOut.safeTransfer(msg.sender, amountOut);
        emit Swap(msg.sender, tokenIn, tokenOut, amountIn, amountOut);
    }
}
