"""Versioned event schemas: the CloudEvents envelope and the v1 payload models."""

from arrears_shared.events.envelope import CloudEvent, new_event

__all__ = ["CloudEvent", "new_event"]
