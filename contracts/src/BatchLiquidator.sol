// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {CreditManager} from "./CreditManager.sol";
import {IERC20} from "./interfaces/IERC20.sol";
import {SafeTransfer} from "./libraries/SafeTransfer.sol";

/// @notice Liquidates many Credit Accounts of one CreditManager in one transaction, for its owner
/// (a keeper's signer). When a price crash sinks a thousand accounts at once, one transaction per
/// account means a thousand transactions and nonces; a batch needs a handful.
///
/// Each account is liquidated through an external call to this contract inside try/catch, so an
/// account that reverts (already liquidated by a competitor, healthy again, unknown) is skipped
/// with a `LiquidationSkipped` event and the rest of the batch goes through. Per account the owner
/// pays exactly the liquidation's `amountPaid` (pulled just before the manager pulls it from here)
/// and receives every asset of the account: nothing stays in this contract between transactions.
///
/// Only the owner may call it: governance may make this contract an emergency liquidator, and
/// then nobody else may use that right while the protocol is paused.
contract BatchLiquidator {
    using SafeTransfer for address;

    address public immutable owner;

    event LiquidationSkipped(address indexed creditManager, address indexed creditAccount, bytes reason);

    error NotOwner();
    error NotSelf(address caller);
    error ZeroAddress();
    error OutOfGas(address creditAccount);

    constructor(address owner_) {
        if (owner_ == address(0)) revert ZeroAddress();
        owner = owner_;
    }

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner();
        _;
    }

    /// @notice Liquidates each of `creditAccounts` to the owner, skipping those that revert.
    /// `liquidated[i]` says whether account i was liquidated, `reasons[i]` why not, and
    /// `gasSpent[i]` what its attempt consumed (before refunds): one `eth_call` of this function
    /// tells the keeper which accounts a batch would liquidate, why the others would not, and the
    /// gas the batch of just the first needs, without the repeated executions of a gas estimate.
    function liquidateBatch(CreditManager manager, address[] calldata creditAccounts)
        external
        onlyOwner
        returns (bool[] memory liquidated, bytes[] memory reasons, uint256[] memory gasSpent)
    {
        liquidated = new bool[](creditAccounts.length);
        reasons = new bytes[](creditAccounts.length);
        gasSpent = new uint256[](creditAccounts.length);
        for (uint256 i = 0; i < creditAccounts.length; ++i) {
            uint256 gasBefore = gasleft();
            try this.liquidateOne(manager, creditAccounts[i]) {
                liquidated[i] = true;
            } catch (bytes memory reason) {
                // A call that ran out of gas, however deep, gives back only the 1/64 each frame
                // kept (EIP-150): a few percent of the gas it was given. That is the transaction's
                // gas limit failing, not the account: revert the whole batch, or a gas estimate
                // would settle on a limit that skips accounts instead of liquidating them. A real
                // revert of an account costs a fraction of what its liquidation does.
                if (gasleft() < gasBefore / 8) revert OutOfGas(creditAccounts[i]);
                reasons[i] = reason;
                emit LiquidationSkipped(address(manager), creditAccounts[i], reason);
            }
            gasSpent[i] = gasBefore - gasleft();
        }
    }

    /// @notice One liquidation of `liquidateBatch`, callable only by this contract, so its revert
    /// undoes the payment pulled for it and nothing else. Pulls from the owner exactly what the
    /// manager will pull from here (its own views, in the same transaction: the same figures),
    /// and has the assets sent straight to the owner.
    function liquidateOne(CreditManager manager, address creditAccount) external {
        if (msg.sender != address(this)) revert NotSelf(msg.sender);
        (uint256 principal, uint256 interest, uint256 fee) = manager.calcDebt(creditAccount);
        (uint256 totalValue,) = manager.calcTotalValue(creditAccount);
        uint256 amountPaid = manager.calcLiquidationPayout(totalValue, principal, interest, fee).amountPaid;
        address underlying = manager.underlying();
        underlying.safeTransferFrom(owner, address(this), amountPaid);
        // One unlimited approval per manager: this contract holds nothing between calls, so the
        // allowance exposes nothing, and the per-account approval it saves is an SSTORE.
        if (IERC20(underlying).allowance(address(this), address(manager)) < amountPaid) {
            underlying.safeApprove(address(manager), type(uint256).max);
        }
        manager.liquidateCreditAccount(creditAccount, owner);
    }
}
