"""gRPC and HTTP sentiment inference server; a request's path, top down, is the folder list.

`main` and `config` wire everything. `api/` is the edge (gRPC, HTTP, TLS and auth),
`scoring/` the TensorFlow model, `explanations/` the attribution method, `observability/`
metrics, logs and memory, `batching/` the queue and admission, and `errors` the one error
tree every layer raises. A layer imports only those below it (pyproject.toml, import-linter).
"""
