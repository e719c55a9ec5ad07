"""Arrears ingest: the front door that validates ERP events onto ar.ledger.v1."""
