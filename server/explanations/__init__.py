"""Why a score: words and spans, integrated gradients by adaptive quadrature, the Explainer.

TensorFlow-free: the model supplies token ids, scores and gradients through the
ExplainableModel protocol. May import server.batching (the model gate) and server.errors.
"""
