"""The reference protocol as the keeper sees it: compiled artifacts and revert decoding."""
