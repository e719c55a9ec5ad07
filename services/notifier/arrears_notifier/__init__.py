"""Arrears notifier: the only part of Arrears that speaks to debtors."""
