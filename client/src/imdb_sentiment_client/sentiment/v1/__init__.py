"""Stubs generated from protos/sentiment/v1/sentiment.proto by `make proto`; never edit them."""
