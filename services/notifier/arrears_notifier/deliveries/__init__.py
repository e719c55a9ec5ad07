"""Deliveries: record, decide (contact rules), send, report."""
