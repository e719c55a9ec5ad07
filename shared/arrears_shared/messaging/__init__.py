"""Reliable messaging: the transactional outbox, the inbox, and the Kafka plumbing around them."""
