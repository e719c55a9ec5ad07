"""Each account's ledger: documents in, exact receivables state out."""
