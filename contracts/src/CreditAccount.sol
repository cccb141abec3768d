// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {SafeTransfer} from "./libraries/SafeTransfer.sol";

/// @notice A restricted wallet: it holds a borrower's collateral and borrowed funds, and only its
/// CreditManager can move them. Deployed as EIP-1167 clones of one implementation.
contract CreditAccount {
    using SafeTransfer for address;

    address public creditManager;

    error AlreadyInitialized();
    error NotCreditManager();

    /// @dev The implementation belongs to its deployer so nobody can initialize it.
    constructor() {
        creditManager = msg.sender;
    }

    function initialize(address creditManager_) external {
        if (creditManager != address(0)) revert AlreadyInitialized();
        creditManager = creditManager_;
    }

    modifier onlyCreditManager() {
        if (msg.sender != creditManager) revert NotCreditManager();
        _;
    }

    function transfer(address token, address to, uint256 amount) external onlyCreditManager {
        token.safeTransfer(to, amount);
    }

    function approve(address token, address spender, uint256 amount) external onlyCreditManager {
        token.safeApprove(spender, amount);
    }

    /// @notice Calls `target` as this account; the manager only points it at whitelisted adapters.
    function execute(address target, bytes calldata data) external onlyCreditManager returns (bytes memory) {
        (bool ok, bytes memory result) = target.call(data);
        if (!ok) {
            assembly {
                revert(add(result, 0x20), mload(result))
            }
        }
        return result;
    }
}
