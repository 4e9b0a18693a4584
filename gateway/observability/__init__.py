"""What operators see: ``metrics`` (Prometheus), ``access_log`` and ``dashboard/`` (with its
ledger ``queries`` and ``charts``). Reads the tenants store and ledger and upstream health.
"""
