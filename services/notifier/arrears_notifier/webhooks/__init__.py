"""Provider webhooks: SMS status callbacks, inbound SMS (opt-out keywords), unsubscribe links."""
