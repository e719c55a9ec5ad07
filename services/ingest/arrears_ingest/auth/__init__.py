"""Per-source API keys (hashed at rest) and optional HMAC-SHA256 request signatures."""
