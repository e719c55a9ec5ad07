"""Late-payment risk: an inspectable logistic model stored as data."""
