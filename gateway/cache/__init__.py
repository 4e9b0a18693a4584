"""The semantic cache: exact and meaning-based reuse of complete answers, per tenant and context.

Modules (the ``[cache]`` table is read by ``gateway.core.cache_settings``): ``fingerprint`` (context
hash and compared text), ``text_features`` (a text read into the profile the guards compare),
``questions`` (what it asks), ``tokens`` (the word both read), ``guards`` (false-hit checks) and
``lexicon`` (their word lists), ``index`` (the hnswlib wrapper), ``store`` (SQLite entries),
``entries`` (their in-memory table), ``semantic_cache`` (lookup and store), ``replay`` (a hit as an
SSE stream), ``controls`` (Cache-Control, policies, response headers), ``calibration``/``evaluate``
(fitting the threshold through the serving path), ``cli`` (``gateway cache fit|eval``), ``context``
(the app's cleanup context). Import from the module that defines a thing; this file stays empty.
"""
