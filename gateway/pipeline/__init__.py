"""The stages of a chat request, composed from the capabilities: admit, cache, dispatch, relay,
account.

``caching`` (the cache stage), ``dispatch`` (tiers, escalation), ``streaming`` (relaying and
replaying streams), ``accounting`` (ledger, settlement, metrics, access log), ``request_record``
(what each stage learned), ``heap`` (collector settings for a served pipeline).
"""
