"""Benchmarks: speed and memory targets, run by hand or by `make bench`, never as timed tests.

Each module here with a ``main()`` is one benchmark; ``python -m bench`` runs them all and
``python -m bench.<name>`` runs one. Each prints its figures and the command that produced them.
"""
