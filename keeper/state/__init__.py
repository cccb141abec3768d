"""What the keeper knows about the protocol, and the checkpoint of it kept on disk."""
