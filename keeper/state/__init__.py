"""What the keeper knows about the protocol: plain data, no I/O."""
