"""The micro-batcher and its admission: the queue, deadlines, the model gate, length groups.

Standard library (and NumPy for length groups) only, plus server.errors: the model is a
`predict(list[str]) -> list[float]` callable handed in, so nothing here imports TensorFlow,
gRPC, aiohttp or any other part of the server.
"""
