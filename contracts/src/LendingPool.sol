// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "./interfaces/IERC20.sol";
import {SafeTransfer} from "./libraries/SafeTransfer.sol";

/// @notice Lends one underlying asset to one CreditManager. Debt grows by a cumulative interest
/// index (ray) that compounds at every rate change and grows linearly in between:
///     index(t) = indexAtLastUpdate * (RAY + ratePerSecond * (t - lastUpdateTimestamp)) / RAY
/// so anyone holding the last `InterestRateUpdated` event can compute it for any later time.
contract LendingPool {
    using SafeTransfer for address;

    uint256 public constant RAY = 1e27;

    address public immutable underlying;
    address public immutable owner;
    address public creditManager;

    uint256 public cumulativeIndexAtLastUpdate;
    uint256 public lastUpdateTimestamp;
    uint256 public interestRatePerSecond;

    uint256 public totalDeposits;
    uint256 public totalBorrowed;
    uint256 public totalInterestEarned;
    uint256 public totalLosses;
    mapping(address => uint256) public depositOf;

    event InterestRateUpdated(uint256 interestRatePerSecond, uint256 cumulativeIndex, uint256 timestamp);
    event CreditManagerSet(address indexed creditManager);
    event Deposit(address indexed provider, uint256 amount);
    event Borrow(address indexed creditAccount, uint256 amount);
    event Repay(address indexed creditAccount, uint256 principal, uint256 interest, uint256 loss);

    error NotOwner();
    error NotCreditManager();
    error CreditManagerAlreadySet();
    error InsufficientLiquidity(uint256 available, uint256 requested);

    constructor(address underlying_, uint256 interestRatePerSecond_) {
        underlying = underlying_;
        owner = msg.sender;
        cumulativeIndexAtLastUpdate = RAY;
        lastUpdateTimestamp = block.timestamp;
        interestRatePerSecond = interestRatePerSecond_;
        emit InterestRateUpdated(interestRatePerSecond_, RAY, block.timestamp);
    }

    modifier onlyCreditManager() {
        if (msg.sender != creditManager) revert NotCreditManager();
        _;
    }

    function setCreditManager(address creditManager_) external {
        if (msg.sender != owner) revert NotOwner();
        if (creditManager != address(0)) revert CreditManagerAlreadySet();
        creditManager = creditManager_;
        emit CreditManagerSet(creditManager_);
    }

    /// @notice Checkpoints the index at the old rate, then switches to the new one.
    function setInterestRate(uint256 interestRatePerSecond_) external {
        if (msg.sender != owner) revert NotOwner();
        uint256 index = calcCumulativeIndex();
        cumulativeIndexAtLastUpdate = index;
        lastUpdateTimestamp = block.timestamp;
        interestRatePerSecond = interestRatePerSecond_;
        emit InterestRateUpdated(interestRatePerSecond_, index, block.timestamp);
    }

    function calcCumulativeIndex() public view returns (uint256) {
        return cumulativeIndexAt(block.timestamp);
    }

    /// @notice The index at `timestamp` (not before the last update).
    function cumulativeIndexAt(uint256 timestamp) public view returns (uint256) {
        uint256 elapsed = timestamp - lastUpdateTimestamp;
        return cumulativeIndexAtLastUpdate * (RAY + interestRatePerSecond * elapsed) / RAY;
    }

    function availableLiquidity() public view returns (uint256) {
        return IERC20(underlying).balanceOf(address(this));
    }

    function deposit(uint256 amount) external {
        underlying.safeTransferFrom(msg.sender, address(this), amount);
        depositOf[msg.sender] += amount;
        totalDeposits += amount;
        emit Deposit(msg.sender, amount);
    }

    function borrow(address creditAccount, uint256 amount) external onlyCreditManager {
        uint256 available = availableLiquidity();
        if (available < amount) revert InsufficientLiquidity(available, amount);
        totalBorrowed += amount;
        underlying.safeTransfer(creditAccount, amount);
        emit Borrow(creditAccount, amount);
    }

    /// @notice Books a repayment whose funds the manager has already sent here: `principal` leaves
    /// the borrowed total, `interest` is the income received, `loss` the part of `principal` that
    /// was not recovered. Afterwards, as before:
    ///     totalDeposits + totalInterestEarned - totalLosses == availableLiquidity + totalBorrowed
    function repay(address creditAccount, uint256 principal, uint256 interest, uint256 loss)
        external
        onlyCreditManager
    {
        totalBorrowed -= principal;
        totalInterestEarned += interest;
        totalLosses += loss;
        emit Repay(creditAccount, principal, interest, loss);
    }
}
