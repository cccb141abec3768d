// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

interface IOpensCreditAccounts {
    function openCreditAccount(uint256 debt, address collateralToken, uint256 collateralAmount)
        external
        returns (address creditAccount);
}

interface IApprovable {
    function approve(address spender, uint256 amount) external returns (bool);
}

/// @notice Devnet and benchmark tool, never part of a real deployment: opens many Credit Accounts
/// in one transaction, so a devnet with 100,000 accounts is built in minutes instead of hours of
/// one-account transactions. It deposits collateral minted to it beforehand and owns every
/// account it opens. The accounts are ordinary ones: the manager emits the
/// same events and answers the same views as for an account opened by a borrower.
contract BulkAccountOpener {
    error LengthMismatch(uint256 debts, uint256 collaterals);

    /// @notice Opens one account per entry, borrowing `debts[i]` and depositing `collaterals[i]`
    /// of `collateralToken`.
    function openMany(
        address manager,
        address collateralToken,
        uint256[] calldata debts,
        uint256[] calldata collaterals
    ) external {
        if (debts.length != collaterals.length) revert LengthMismatch(debts.length, collaterals.length);
        uint256 total;
        for (uint256 i = 0; i < collaterals.length; ++i) {
            total += collaterals[i];
        }
        IApprovable(collateralToken).approve(manager, total);
        for (uint256 i = 0; i < debts.length; ++i) {
            IOpensCreditAccounts(manager).openCreditAccount(debts[i], collateralToken, collaterals[i]);
        }
    }
}
