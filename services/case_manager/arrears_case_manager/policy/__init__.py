"""Escalation policy: YAML, versioned, validated when loaded."""
