"""Tenants: API keys, limits and budgets, and the usage ledger, kept in one SQLite file.

Start with ``context.py`` (how the pieces are acquired and wired onto the app); the request path
uses ``auth.Authenticator``, ``quotas.Admission`` and ``ledger.Ledger``, all in memory.
"""
