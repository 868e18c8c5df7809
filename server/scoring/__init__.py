"""The serving model: version folders and hot swaps, the Keras and XLA fast paths, and the
model's backward passes that Explain's gradients come from.

The only server package that imports TensorFlow. May import server.explanations (the
standardiser mirrors), server.observability, server.batching and server.errors; never api.
"""
