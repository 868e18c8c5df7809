"""Serving across processes (--workers): the supervisor, the model process's listener and the
front processes' client of it, and the frames between them.

May import server.errors, server.observability and server.explanations; never TensorFlow,
gRPC, aiohttp, server.api or server.scoring (server.main wires those in each process).
"""
