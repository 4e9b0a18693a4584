"""The vocabulary every layer shares: the typed request and answer, errors, settings and the
storage helpers.

Imports no other gateway package (tests/test_layers.py checks it).
"""
