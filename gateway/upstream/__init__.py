"""Everything that talks to providers: ``providers/`` (one adapter per wire format), ``http_client``
(the pooled HTTP/1.1 client), ``sse``, ``calls`` (provider calls with per-phase timeouts),
``failover`` (health, breakers, candidate order), ``catalog`` (public names to deployments).
"""
