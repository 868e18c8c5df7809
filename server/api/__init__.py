"""The edges: the gRPC servicer and interceptors, HTTP/JSON with its page and OpenAPI document,
TLS and bearer-token auth, and the one mapping of service errors to status codes.

Translates between the wire and plain Python values. May import every core package except
server.scoring (it never touches the model, only the batcher and the Explainer); never config.
"""
