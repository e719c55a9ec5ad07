"""Arrears common library, shared by the four services."""

__version__ = "0.1.0"
