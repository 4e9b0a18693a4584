"""Intent routing for ``model: "auto"``: routes, the classifier, the decision policy, escalation.

Import from the module that defines a thing (the ``[routing]`` table is read by
``gateway.core.routing_settings``): ``routes``
(the routes file), ``prompt`` (what is embedded), ``vectors`` (the utterance vector cache),
``classifier`` (route scores), ``policy`` (decisions), ``router`` (the two together, headers),
``calibrate`` (fitting and measuring), ``escalation`` and ``jsonschema_lite`` (answer checks),
``signals`` (what is recorded for learning), ``context`` (wiring), ``cli`` (``gateway routes``).
"""
