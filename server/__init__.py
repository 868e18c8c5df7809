"""gRPC sentiment inference server: settings, micro-batcher, serving model and the gRPC edge."""
