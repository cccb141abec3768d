// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {CreditAccount} from "./CreditAccount.sol";
import {IERC20} from "./interfaces/IERC20.sol";
import {ISwapAdapter} from "./interfaces/ISwapAdapter.sol";
import {LendingPool} from "./LendingPool.sol";
import {PriceOracle} from "./PriceOracle.sol";
import {SafeTransfer} from "./libraries/SafeTransfer.sol";

/// @notice Opens Credit Accounts in one underlying asset, lends them the pool's funds, keeps them
/// above a health factor of 1 and lets anyone liquidate them below it.
///
/// Valuation, in the underlying, for the tokens an account holds:
///     value_i  = balance_i converted by the oracle (the underlying itself counts 1:1)
///     TV       = sum(value_i)
///     TWV      = sum(value_i * liquidationThreshold_i / 10_000)        (rounded down per token)
///     new      = principal * index(now) / cumulativeIndex - principal   (since the last update)
///     interest = accruedInterest + new
///     fee      = accruedFees + new * feeInterest / 10_000
///     Hf (WAD) = TWV * 1e18 / (principal + interest + fee)
/// With every threshold at 10_000, Hf is exactly TV / (borrow + interest + fee).
///
/// Balances are the manager's own accounting of what each action moved, not `balanceOf`: every
/// change is announced by an event carrying the new absolute value, so an observer rebuilds every
/// account from logs alone. Tokens sent to an account outside the manager are not collateral; they
/// leave with the account's other assets on close or liquidation.
contract CreditManager {
    using SafeTransfer for address;

    uint256 public constant WAD = 1e18;
    uint16 public constant PERCENTAGE_FACTOR = 10_000;
    uint256 public constant MAX_COLLATERAL_TOKENS = 16;

    struct CreditAccountData {
        address owner;
        uint256 principal;
        uint256 cumulativeIndex;
        uint256 accruedInterest;
        uint256 accruedFees;
    }

    /// @notice How a liquidation's funds are split. `amountPaid` comes from the liquidator.
    struct LiquidationPayout {
        uint256 amountPaid;
        uint256 repaidToPool;
        uint256 protocolFees;
        uint256 remainingFunds;
        uint256 loss;
    }

    address public immutable underlying;
    LendingPool public immutable pool;
    PriceOracle public immutable oracle;
    address public immutable accountImplementation;
    address public immutable owner;

    address public treasury;
    bool public paused;
    /// @notice Share of interest owed to the treasury, in basis points.
    uint16 public feeInterest;
    /// @notice Share of total value owed to the treasury on liquidation, in basis points.
    uint16 public liquidationFee;
    /// @notice Discount on total value that the liquidator earns, in basis points.
    uint16 public liquidationPremium;

    address[] internal _collateralTokens;
    mapping(address => bool) public isCollateralToken;
    mapping(address => uint16) public liquidationThreshold;
    mapping(address => bool) public isAdapterAllowed;
    mapping(address => bool) public isEmergencyLiquidator;

    address[] internal _creditAccounts;
    mapping(address => uint256) internal _creditAccountSlot; // position in _creditAccounts, plus one
    mapping(address => CreditAccountData) internal _accountData;
    mapping(address => mapping(address => uint256)) internal _balances;
    uint256 private _entered;

    event CreditManagerInitialized(
        address indexed underlying, address indexed pool, address indexed oracle, address accountImplementation
    );
    event CollateralTokenSet(address indexed token, uint16 liquidationThreshold);
    event FeesSet(uint16 feeInterest, uint16 liquidationFee, uint16 liquidationPremium);
    event TreasurySet(address indexed treasury);
    event AdapterSet(address indexed adapter, bool allowed);
    event EmergencyLiquidatorSet(address indexed liquidator, bool allowed);
    event Paused(address indexed by);
    event Unpaused(address indexed by);

    event CreditAccountOpened(address indexed creditAccount, address indexed owner);
    event BalanceUpdated(address indexed creditAccount, address indexed token, uint256 balance);
    event DebtUpdated(
        address indexed creditAccount,
        uint256 principal,
        uint256 cumulativeIndex,
        uint256 accruedInterest,
        uint256 accruedFees
    );
    event CreditAccountClosed(address indexed creditAccount, address indexed owner, address to);
    event CreditAccountLiquidated(
        address indexed creditAccount,
        address indexed owner,
        address indexed liquidator,
        address to,
        uint256 totalValue,
        uint256 amountPaid,
        uint256 repaidToPool,
        uint256 protocolFees,
        uint256 remainingFunds,
        uint256 loss
    );

    error NotOwner();
    error ProtocolPaused();
    error Reentrancy();
    error ZeroAmount();
    error ZeroAddress();
    error InvalidBasisPoints(uint256 value);
    error TooManyCollateralTokens();
    error TokenAlreadyAllowed(address token);
    error TokenNotAllowed(address token);
    error AdapterNotAllowed(address adapter);
    error UnknownCreditAccount(address creditAccount);
    error NotAccountOwner(address creditAccount, address caller);
    error InsufficientCollateral(address token, uint256 balance, uint256 amount);
    error RepaymentExceedsDebt(uint256 amount, uint256 totalDebt);
    error HealthFactorBelowOne(uint256 healthFactor);
    error NotLiquidatable(uint256 healthFactor);
    error NotEmergencyLiquidator(address caller);

    constructor(
        LendingPool pool_,
        PriceOracle oracle_,
        address treasury_,
        uint16 underlyingLiquidationThreshold,
        uint16 feeInterest_,
        uint16 liquidationFee_,
        uint16 liquidationPremium_
    ) {
        if (treasury_ == address(0)) revert ZeroAddress();
        owner = msg.sender;
        pool = pool_;
        oracle = oracle_;
        underlying = pool_.underlying();
        accountImplementation = address(new CreditAccount());
        treasury = treasury_;
        emit CreditManagerInitialized(underlying, address(pool_), address(oracle_), accountImplementation);
        emit TreasurySet(treasury_);
        _setFees(feeInterest_, liquidationFee_, liquidationPremium_);
        _addCollateralToken(underlying, underlyingLiquidationThreshold);
    }

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner();
        _;
    }

    modifier whenNotPaused() {
        if (paused) revert ProtocolPaused();
        _;
    }

    modifier nonReentrant() {
        if (_entered != 0) revert Reentrancy();
        _entered = 1;
        _;
        _entered = 0;
    }

    modifier onlyAccountOwner(address creditAccount) {
        address accountOwner = _accountData[creditAccount].owner;
        if (accountOwner == address(0)) revert UnknownCreditAccount(creditAccount);
        if (accountOwner != msg.sender) revert NotAccountOwner(creditAccount, msg.sender);
        _;
    }

    // ------------------------------------------------------------------ configuration

    function addCollateralToken(address token, uint16 threshold) external onlyOwner {
        _addCollateralToken(token, threshold);
    }

    function setLiquidationThreshold(address token, uint16 threshold) external onlyOwner {
        if (!isCollateralToken[token]) revert TokenNotAllowed(token);
        _requireBasisPoints(threshold);
        liquidationThreshold[token] = threshold;
        emit CollateralTokenSet(token, threshold);
    }

    function setFees(uint16 feeInterest_, uint16 liquidationFee_, uint16 liquidationPremium_) external onlyOwner {
        _setFees(feeInterest_, liquidationFee_, liquidationPremium_);
    }

    function setTreasury(address treasury_) external onlyOwner {
        if (treasury_ == address(0)) revert ZeroAddress();
        treasury = treasury_;
        emit TreasurySet(treasury_);
    }

    function setAdapter(address adapter, bool allowed) external onlyOwner {
        isAdapterAllowed[adapter] = allowed;
        emit AdapterSet(adapter, allowed);
    }

    function setEmergencyLiquidator(address liquidator, bool allowed) external onlyOwner {
        isEmergencyLiquidator[liquidator] = allowed;
        emit EmergencyLiquidatorSet(liquidator, allowed);
    }

    function pause() external onlyOwner {
        paused = true;
        emit Paused(msg.sender);
    }

    function unpause() external onlyOwner {
        paused = false;
        emit Unpaused(msg.sender);
    }

    // ------------------------------------------------------------------ borrower actions

    /// @notice Opens an account for the caller, lends it `debt` of the underlying and moves
    /// `collateralAmount` of `collateralToken` from the caller into it.
    function openCreditAccount(uint256 debt, address collateralToken, uint256 collateralAmount)
        external
        whenNotPaused
        nonReentrant
        returns (address creditAccount)
    {
        if (debt == 0) revert ZeroAmount();
        creditAccount = _cloneAccount();
        CreditAccount(creditAccount).initialize(address(this));
        _creditAccounts.push(creditAccount);
        _creditAccountSlot[creditAccount] = _creditAccounts.length;
        emit CreditAccountOpened(creditAccount, msg.sender);

        CreditAccountData storage data = _accountData[creditAccount];
        data.owner = msg.sender;
        data.principal = debt;
        data.cumulativeIndex = pool.calcCumulativeIndex();
        emit DebtUpdated(creditAccount, debt, data.cumulativeIndex, 0, 0);
        pool.borrow(creditAccount, debt);
        _setBalance(creditAccount, underlying, debt);

        if (collateralAmount != 0) _depositCollateral(creditAccount, collateralToken, collateralAmount);
        _requireHealthy(creditAccount);
    }

    /// @notice Moves collateral from the caller into an account. Anyone may top an account up.
    /// It is the one action without a health check: it only adds value, so it is how an account
    /// below Hf 1 is rescued, in as many steps as it takes.
    function addCollateral(address creditAccount, address token, uint256 amount) external whenNotPaused nonReentrant {
        if (_accountData[creditAccount].owner == address(0)) revert UnknownCreditAccount(creditAccount);
        if (amount == 0) revert ZeroAmount();
        _depositCollateral(creditAccount, token, amount);
    }

    function withdrawCollateral(address creditAccount, address token, uint256 amount, address to)
        external
        whenNotPaused
        nonReentrant
        onlyAccountOwner(creditAccount)
    {
        if (amount == 0) revert ZeroAmount();
        if (to == address(0)) revert ZeroAddress();
        _decreaseBalance(creditAccount, token, amount);
        CreditAccount(creditAccount).transfer(token, to, amount);
        _requireHealthy(creditAccount);
    }

    function increaseDebt(address creditAccount, uint256 amount)
        external
        whenNotPaused
        nonReentrant
        onlyAccountOwner(creditAccount)
    {
        if (amount == 0) revert ZeroAmount();
        CreditAccountData storage data = _accrueInterest(creditAccount);
        data.principal += amount;
        _emitDebt(creditAccount, data);
        pool.borrow(creditAccount, amount);
        _setBalance(creditAccount, underlying, _balances[creditAccount][underlying] + amount);
        _requireHealthy(creditAccount);
    }

    /// @notice Repays `amount` from the account's underlying: the protocol fee first, then
    /// interest, then principal. Total debt falls by exactly `amount`.
    function decreaseDebt(address creditAccount, uint256 amount)
        external
        whenNotPaused
        nonReentrant
        onlyAccountOwner(creditAccount)
    {
        if (amount == 0) revert ZeroAmount();
        CreditAccountData storage data = _accrueInterest(creditAccount);
        uint256 totalDebt = data.principal + data.accruedInterest + data.accruedFees;
        if (amount > totalDebt) revert RepaymentExceedsDebt(amount, totalDebt);
        _decreaseBalance(creditAccount, underlying, amount);

        uint256 feePaid = _min(amount, data.accruedFees);
        uint256 interestPaid = _min(amount - feePaid, data.accruedInterest);
        uint256 principalPaid = amount - feePaid - interestPaid;
        data.accruedFees -= feePaid;
        data.accruedInterest -= interestPaid;
        data.principal -= principalPaid;
        _emitDebt(creditAccount, data);

        _sendFromAccount(creditAccount, treasury, feePaid);
        _repayPool(creditAccount, principalPaid, interestPaid);
        _requireHealthy(creditAccount);
    }

    /// @notice Swaps through a whitelisted adapter. The account's balances change by what actually
    /// left and arrived, measured around the call.
    function swap(
        address creditAccount,
        address adapter,
        address tokenIn,
        address tokenOut,
        uint256 amountIn,
        uint256 minAmountOut
    ) external whenNotPaused nonReentrant onlyAccountOwner(creditAccount) {
        if (!isAdapterAllowed[adapter]) revert AdapterNotAllowed(adapter);
        if (!isCollateralToken[tokenOut]) revert TokenNotAllowed(tokenOut);
        if (amountIn == 0) revert ZeroAmount();
        uint256 balanceIn = _balances[creditAccount][tokenIn];
        if (balanceIn < amountIn) revert InsufficientCollateral(tokenIn, balanceIn, amountIn);

        (uint256 spent, uint256 received) =
            _executeSwap(creditAccount, adapter, tokenIn, tokenOut, amountIn, minAmountOut);
        _setBalance(creditAccount, tokenIn, balanceIn - spent);
        _setBalance(creditAccount, tokenOut, _balances[creditAccount][tokenOut] + received);
        _requireHealthy(creditAccount);
    }

    /// @notice Repays all debt and sends every asset to `to`. Underlying the account's collateral
    /// balance lacks for the repayment is pulled from the caller.
    function closeCreditAccount(address creditAccount, address to)
        external
        whenNotPaused
        nonReentrant
        onlyAccountOwner(creditAccount)
    {
        if (to == address(0)) revert ZeroAddress();
        CreditAccountData storage data = _accrueInterest(creditAccount);
        uint256 principal = data.principal;
        uint256 interest = data.accruedInterest;
        uint256 fee = data.accruedFees;
        uint256 held = _balances[creditAccount][underlying];
        uint256 owed = principal + interest + fee;
        if (held < owed) underlying.safeTransferFrom(msg.sender, creditAccount, owed - held);

        _sendFromAccount(creditAccount, treasury, fee);
        _repayPool(creditAccount, principal, interest);
        address accountOwner = data.owner;
        _releaseAccount(creditAccount, to);
        emit CreditAccountClosed(creditAccount, accountOwner, to);
    }

    // ------------------------------------------------------------------ liquidation

    /// @notice Liquidates an account whose health factor is below 1. The caller pays
    /// TV * (1 - premium) in the underlying and `to` receives all of the account's assets. While
    /// the protocol is paused only emergency liquidators may call.
    function liquidateCreditAccount(address creditAccount, address to) external nonReentrant {
        if (paused && !isEmergencyLiquidator[msg.sender]) revert NotEmergencyLiquidator(msg.sender);
        if (to == address(0)) revert ZeroAddress();
        CreditAccountData memory data = _accountData[creditAccount];
        if (data.owner == address(0)) revert UnknownCreditAccount(creditAccount);

        (uint256 principal, uint256 interest, uint256 fee) = calcDebt(creditAccount);
        (uint256 totalValue, uint256 weightedValue) = calcTotalValue(creditAccount);
        uint256 healthFactor = _healthFactor(weightedValue, principal + interest + fee);
        if (healthFactor >= WAD) revert NotLiquidatable(healthFactor);

        LiquidationPayout memory payout = calcLiquidationPayout(totalValue, principal, interest, fee);
        underlying.safeTransferFrom(msg.sender, address(pool), payout.repaidToPool);
        if (payout.protocolFees != 0) underlying.safeTransferFrom(msg.sender, treasury, payout.protocolFees);
        if (payout.remainingFunds != 0) underlying.safeTransferFrom(msg.sender, data.owner, payout.remainingFunds);
        uint256 interestRepaid = payout.repaidToPool > principal ? payout.repaidToPool - principal : 0;
        pool.repay(creditAccount, principal, interestRepaid, payout.loss);

        _releaseAccount(creditAccount, to);
        emit CreditAccountLiquidated(
            creditAccount,
            data.owner,
            msg.sender,
            to,
            totalValue,
            payout.amountPaid,
            payout.repaidToPool,
            payout.protocolFees,
            payout.remainingFunds,
            payout.loss
        );
    }

    /// @notice The split of a liquidation: the liquidator pays TV less the premium; the pool is
    /// repaid first (principal, then interest), then the treasury's fees, then the owner gets the
    /// rest. `loss` is principal the pool does not get back: bad debt. Interest left unpaid is
    /// income the pool never earned, not a loss, so the pool's books stay balanced.
    function calcLiquidationPayout(uint256 totalValue, uint256 principal, uint256 interest, uint256 fee)
        public
        view
        returns (LiquidationPayout memory payout)
    {
        payout.amountPaid = totalValue * (PERCENTAGE_FACTOR - liquidationPremium) / PERCENTAGE_FACTOR;
        uint256 owedToPool = principal + interest;
        uint256 owedFees = fee + totalValue * liquidationFee / PERCENTAGE_FACTOR;
        if (payout.amountPaid >= owedToPool + owedFees) {
            payout.repaidToPool = owedToPool;
            payout.protocolFees = owedFees;
            payout.remainingFunds = payout.amountPaid - owedToPool - owedFees;
        } else if (payout.amountPaid >= owedToPool) {
            payout.repaidToPool = owedToPool;
            payout.protocolFees = payout.amountPaid - owedToPool;
        } else {
            payout.repaidToPool = payout.amountPaid;
            payout.loss = principal > payout.amountPaid ? principal - payout.amountPaid : 0;
        }
    }

    // ------------------------------------------------------------------ views

    function collateralTokens() external view returns (address[] memory) {
        return _collateralTokens;
    }

    function creditAccountsCount() external view returns (uint256) {
        return _creditAccounts.length;
    }

    /// @notice Open accounts from position `offset`, at most `limit` of them. Positions shift
    /// when an account closes, so page at one block (or rebuild from events).
    function creditAccounts(uint256 offset, uint256 limit) external view returns (address[] memory page) {
        uint256 total = _creditAccounts.length;
        uint256 remaining = offset < total ? total - offset : 0;
        page = new address[](_min(remaining, limit));
        for (uint256 i = 0; i < page.length; ++i) {
            page[i] = _creditAccounts[offset + i];
        }
    }

    function creditAccountInfo(address creditAccount)
        external
        view
        returns (
            address accountOwner,
            uint256 principal,
            uint256 cumulativeIndex,
            uint256 accruedInterest,
            uint256 accruedFees
        )
    {
        CreditAccountData memory data = _accountData[creditAccount];
        return (data.owner, data.principal, data.cumulativeIndex, data.accruedInterest, data.accruedFees);
    }

    function balanceOf(address creditAccount, address token) external view returns (uint256) {
        return _balances[creditAccount][token];
    }

    /// @notice The account's balance of every collateral token, in `collateralTokens()` order.
    function balances(address creditAccount) external view returns (address[] memory tokens, uint256[] memory amounts) {
        tokens = _collateralTokens;
        amounts = new uint256[](tokens.length);
        for (uint256 i = 0; i < tokens.length; ++i) {
            amounts[i] = _balances[creditAccount][tokens[i]];
        }
    }

    /// @notice Principal, interest accrued to now and the protocol fee on that interest.
    function calcDebt(address creditAccount) public view returns (uint256 principal, uint256 interest, uint256 fee) {
        CreditAccountData memory data = _accountData[creditAccount];
        if (data.owner == address(0)) revert UnknownCreditAccount(creditAccount);
        principal = data.principal;
        uint256 newInterest = principal * pool.calcCumulativeIndex() / data.cumulativeIndex - principal;
        interest = data.accruedInterest + newInterest;
        fee = data.accruedFees + newInterest * feeInterest / PERCENTAGE_FACTOR;
    }

    function calcTotalDebt(address creditAccount) public view returns (uint256) {
        (uint256 principal, uint256 interest, uint256 fee) = calcDebt(creditAccount);
        return principal + interest + fee;
    }

    /// @notice Total value and liquidation-threshold-weighted value, in the underlying.
    function calcTotalValue(address creditAccount) public view returns (uint256 totalValue, uint256 weightedValue) {
        uint256 count = _collateralTokens.length;
        for (uint256 i = 0; i < count; ++i) {
            address token = _collateralTokens[i];
            uint256 balance = _balances[creditAccount][token];
            if (balance == 0) continue;
            uint256 value = token == underlying ? balance : oracle.convert(balance, token, underlying);
            totalValue += value;
            weightedValue += value * liquidationThreshold[token] / PERCENTAGE_FACTOR;
        }
    }

    /// @notice Health factor in WAD (1e18 = 1.0); type(uint256).max for an account without debt.
    function calcHealthFactor(address creditAccount) public view returns (uint256) {
        (, uint256 weightedValue) = calcTotalValue(creditAccount);
        return _healthFactor(weightedValue, calcTotalDebt(creditAccount));
    }

    function isLiquidatable(address creditAccount) external view returns (bool) {
        return calcHealthFactor(creditAccount) < WAD;
    }

    // ------------------------------------------------------------------ internals

    function _healthFactor(uint256 weightedValue, uint256 totalDebt) internal pure returns (uint256) {
        return totalDebt == 0 ? type(uint256).max : weightedValue * WAD / totalDebt;
    }

    function _requireHealthy(address creditAccount) internal view {
        uint256 healthFactor = calcHealthFactor(creditAccount);
        if (healthFactor < WAD) revert HealthFactorBelowOne(healthFactor);
    }

    /// @dev Folds interest accrued so far, and the fee on it, into the account and moves it to the
    /// current index, so a debt change starts from the present.
    function _accrueInterest(address creditAccount) internal returns (CreditAccountData storage data) {
        data = _accountData[creditAccount];
        uint256 index = pool.calcCumulativeIndex();
        uint256 newInterest = data.principal * index / data.cumulativeIndex - data.principal;
        data.accruedInterest += newInterest;
        data.accruedFees += newInterest * feeInterest / PERCENTAGE_FACTOR;
        data.cumulativeIndex = index;
    }

    function _emitDebt(address creditAccount, CreditAccountData storage data) internal {
        emit DebtUpdated(
            creditAccount, data.principal, data.cumulativeIndex, data.accruedInterest, data.accruedFees
        );
    }

    function _min(uint256 a, uint256 b) internal pure returns (uint256) {
        return a < b ? a : b;
    }

    /// @dev Runs the adapter as the account and returns what actually left and arrived.
    function _executeSwap(
        address creditAccount,
        address adapter,
        address tokenIn,
        address tokenOut,
        uint256 amountIn,
        uint256 minAmountOut
    ) internal returns (uint256 spent, uint256 received) {
        uint256 heldInBefore = IERC20(tokenIn).balanceOf(creditAccount);
        uint256 heldOutBefore = IERC20(tokenOut).balanceOf(creditAccount);
        CreditAccount account = CreditAccount(creditAccount);
        account.approve(tokenIn, adapter, amountIn);
        account.execute(adapter, abi.encodeCall(ISwapAdapter.swap, (tokenIn, tokenOut, amountIn, minAmountOut)));
        account.approve(tokenIn, adapter, 0);
        spent = heldInBefore - IERC20(tokenIn).balanceOf(creditAccount);
        received = IERC20(tokenOut).balanceOf(creditAccount) - heldOutBefore;
    }

    function _depositCollateral(address creditAccount, address token, uint256 amount) internal {
        if (!isCollateralToken[token]) revert TokenNotAllowed(token);
        token.safeTransferFrom(msg.sender, creditAccount, amount);
        _setBalance(creditAccount, token, _balances[creditAccount][token] + amount);
    }

    function _decreaseBalance(address creditAccount, address token, uint256 amount) internal {
        uint256 balance = _balances[creditAccount][token];
        if (balance < amount) revert InsufficientCollateral(token, balance, amount);
        _setBalance(creditAccount, token, balance - amount);
    }

    function _setBalance(address creditAccount, address token, uint256 balance) internal {
        _balances[creditAccount][token] = balance;
        emit BalanceUpdated(creditAccount, token, balance);
    }

    /// @dev Pays the pool from the account and books it; nothing at all when there is nothing to pay.
    function _repayPool(address creditAccount, uint256 principal, uint256 interest) internal {
        if (principal + interest == 0) return;
        _sendFromAccount(creditAccount, address(pool), principal + interest);
        pool.repay(creditAccount, principal, interest, 0);
    }

    function _sendFromAccount(address creditAccount, address to, uint256 amount) internal {
        if (amount != 0) CreditAccount(creditAccount).transfer(underlying, to, amount);
    }

    /// @dev Sends every token the account holds to `to` and forgets the account.
    function _releaseAccount(address creditAccount, address to) internal {
        uint256 count = _collateralTokens.length;
        for (uint256 i = 0; i < count; ++i) {
            address token = _collateralTokens[i];
            delete _balances[creditAccount][token];
            uint256 held = IERC20(token).balanceOf(creditAccount);
            if (held != 0) CreditAccount(creditAccount).transfer(token, to, held);
        }
        delete _accountData[creditAccount];
        uint256 slot = _creditAccountSlot[creditAccount];
        address last = _creditAccounts[_creditAccounts.length - 1];
        _creditAccounts[slot - 1] = last;
        _creditAccountSlot[last] = slot;
        _creditAccounts.pop();
        delete _creditAccountSlot[creditAccount];
    }

    /// @dev An EIP-1167 minimal proxy delegating to `accountImplementation`.
    function _cloneAccount() internal returns (address instance) {
        bytes memory code = abi.encodePacked(
            hex"3d602d80600a3d3981f3363d3d373d3d3d363d73", accountImplementation, hex"5af43d82803e903d91602b57fd5bf3"
        );
        assembly {
            instance := create(0, add(code, 0x20), mload(code))
        }
        if (instance == address(0)) revert ZeroAddress();
    }

    function _addCollateralToken(address token, uint16 threshold) internal {
        if (token == address(0)) revert ZeroAddress();
        if (isCollateralToken[token]) revert TokenAlreadyAllowed(token);
        if (_collateralTokens.length == MAX_COLLATERAL_TOKENS) revert TooManyCollateralTokens();
        _requireBasisPoints(threshold);
        oracle.getPrice(token); // a collateral token must be priceable
        _collateralTokens.push(token);
        isCollateralToken[token] = true;
        liquidationThreshold[token] = threshold;
        emit CollateralTokenSet(token, threshold);
    }

    function _setFees(uint16 feeInterest_, uint16 liquidationFee_, uint16 liquidationPremium_) internal {
        _requireBasisPoints(feeInterest_);
        _requireBasisPoints(uint256(liquidationFee_) + liquidationPremium_);
        feeInterest = feeInterest_;
        liquidationFee = liquidationFee_;
        liquidationPremium = liquidationPremium_;
        emit FeesSet(feeInterest_, liquidationFee_, liquidationPremium_);
    }

    function _requireBasisPoints(uint256 value) internal pure {
        if (value > PERCENTAGE_FACTOR) revert InvalidBasisPoints(value);
    }
}
