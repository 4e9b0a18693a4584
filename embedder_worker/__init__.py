"""Warm embedding worker: an ONNX sentence-embedding model served over a Unix socket.

Import from the module that defines a thing (``embedder_worker.client``, ``.model``, ...).
"""
