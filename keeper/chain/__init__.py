"""JSON-RPC access to the node: raw requests with retries, chunked log queries, new heads."""
