"""Accepting ERP events: validation, idempotency, invoice-number conflicts, and the ledger outbox."""
