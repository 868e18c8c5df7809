"""Stubs generated from the proto packages sentiment.*, one subpackage per version."""
