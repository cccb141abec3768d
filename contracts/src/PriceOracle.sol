// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AggregatorV3Interface} from "./interfaces/AggregatorV3Interface.sol";
import {IERC20} from "./interfaces/IERC20.sol";
import {FullMath} from "./libraries/FullMath.sol";

/// @notice One price feed per token, all quoting the same unit (USD). Converts token amounts into
/// one another and refuses to price with a stale or non-positive answer.
contract PriceOracle {
    struct FeedConfig {
        address feed;
        uint8 tokenDecimals;
        uint8 feedDecimals;
        uint32 stalenessPeriod;
    }

    address public immutable owner;
    mapping(address => FeedConfig) public feedConfig;

    event PriceFeedSet(
        address indexed token, address indexed feed, uint8 tokenDecimals, uint8 feedDecimals, uint32 stalenessPeriod
    );

    error NotOwner();
    error NoPriceFeed(address token);
    error StalePrice(address token, uint256 updatedAt);
    error NonPositivePrice(address token, int256 answer);

    constructor() {
        owner = msg.sender;
    }

    /// @notice Points `token` at `feed`; answers older than `stalenessPeriod` seconds are refused.
    function setPriceFeed(address token, address feed, uint32 stalenessPeriod) external {
        if (msg.sender != owner) revert NotOwner();
        uint8 tokenDecimals = IERC20(token).decimals();
        uint8 feedDecimals = AggregatorV3Interface(feed).decimals();
        feedConfig[token] = FeedConfig(feed, tokenDecimals, feedDecimals, stalenessPeriod);
        emit PriceFeedSet(token, feed, tokenDecimals, feedDecimals, stalenessPeriod);
    }

    /// @notice The token's latest answer and its feed's decimals; reverts if stale or <= 0.
    function getPrice(address token) public view returns (uint256 price, uint8 feedDecimals) {
        FeedConfig memory config = feedConfig[token];
        if (config.feed == address(0)) revert NoPriceFeed(token);
        (, int256 answer,, uint256 updatedAt,) = AggregatorV3Interface(config.feed).latestRoundData();
        if (answer <= 0) revert NonPositivePrice(token, answer);
        if (block.timestamp > updatedAt && block.timestamp - updatedAt > config.stalenessPeriod) {
            revert StalePrice(token, updatedAt);
        }
        return (uint256(answer), config.feedDecimals);
    }

    /// @notice `amount` of `tokenFrom` expressed in `tokenTo`, rounded down:
    /// amount * priceFrom * 10^(decTo + feedDecTo) / (priceTo * 10^(decFrom + feedDecFrom)).
    function convert(uint256 amount, address tokenFrom, address tokenTo) external view returns (uint256) {
        (uint256 priceFrom, uint8 feedDecimalsFrom) = getPrice(tokenFrom);
        (uint256 priceTo, uint8 feedDecimalsTo) = getPrice(tokenTo);
        uint256 scaleTo = uint256(feedConfig[tokenTo].tokenDecimals) + feedDecimalsTo;
        uint256 scaleFrom = uint256(feedConfig[tokenFrom].tokenDecimals) + feedDecimalsFrom;
        if (scaleTo >= scaleFrom) {
            return FullMath.mulDiv(amount, priceFrom * 10 ** (scaleTo - scaleFrom), priceTo);
        }
        return FullMath.mulDiv(amount, priceFrom, priceTo * 10 ** (scaleFrom - scaleTo));
    }
}
