// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @notice floor(a * b / denominator) with a 512-bit intermediate product, so price conversions
/// never overflow on the way to a result that fits in 256 bits. Off-chain code reproduces it
/// exactly with unbounded integers: `a * b // denominator`.
library FullMath {
    error MulDivOverflow();

    function mulDiv(uint256 a, uint256 b, uint256 denominator) internal pure returns (uint256 result) {
        unchecked {
            // The product as a 512-bit number [high low], via the Chinese remainder theorem.
            uint256 low;
            uint256 high;
            assembly {
                let mm := mulmod(a, b, not(0))
                low := mul(a, b)
                high := sub(sub(mm, low), lt(mm, low))
            }
            if (high == 0) {
                if (denominator == 0) revert MulDivOverflow();
                return low / denominator;
            }
            if (denominator <= high) revert MulDivOverflow();

            // Subtract the remainder so the division is exact.
            uint256 remainder;
            assembly {
                remainder := mulmod(a, b, denominator)
                high := sub(high, gt(remainder, low))
                low := sub(low, remainder)
            }

            // Divide out the largest power of two that divides the denominator.
            uint256 twos = denominator & (~denominator + 1);
            assembly {
                denominator := div(denominator, twos)
                low := div(low, twos)
                twos := add(div(sub(0, twos), twos), 1)
            }
            low |= high * twos;

            // The denominator is now odd: invert it modulo 2^256 by Newton-Raphson, doubling the
            // correct bits each step (4 -> 8 -> ... -> 256).
            uint256 inverse = (3 * denominator) ^ 2;
            for (uint256 i = 0; i < 6; ++i) {
                inverse *= 2 - denominator * inverse;
            }
            result = low * inverse;
        }
    }
}
