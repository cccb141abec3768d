"""The embedded default chain: anvil with the reference protocol deployed and accounts seeded."""
