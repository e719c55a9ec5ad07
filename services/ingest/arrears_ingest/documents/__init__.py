"""Documents and files: UBL invoices, camt bank statements, CSV open-items exports, import batches."""
