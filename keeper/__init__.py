"""Asgard Keeper: liquidation keeper for Asgard Credit Accounts."""
