"""Signing and sending liquidations: fee pricing, send-error triage, the key, the go/no-go."""
