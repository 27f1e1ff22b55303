"""Bundled model files (ByteGPT) and their weights."""
