"""The learned routing policy: which tier each kind of prompt needs, learned from outcomes.

Import from the module that defines a thing: ``learner`` (outcome memory and the estimate),
``memory`` (the neighbours' graph), ``linear`` (each tier's ridge estimate), ``store`` (the
SQLite file), ``policy`` (the cheapest tier that reaches the quality target, exploration),
``context`` (the cleanup context and app key), ``replay`` (``learn replay`` and ``learn
eval``'s simulation and measures), ``cli`` (``gateway learn``).
"""
