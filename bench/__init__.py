"""The side-by-side benchmark (`make bench`): in-process limit, micro-batching, the seed's Flask."""
