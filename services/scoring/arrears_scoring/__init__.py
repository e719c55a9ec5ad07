"""Arrears scoring: exact account ledgers, aging, and late-payment risk."""
