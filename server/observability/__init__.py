"""What the server tells about itself: Prometheus metrics, JSON logs with request ids, and
memory (the frozen Python heap, glibc's arenas).

May import server.explanations and server.batching (the stats it exports) and server.errors;
no TensorFlow or Keras, and never the edges (api) or the model (scoring).
"""
