"""Compiled kernels of the models' fast paths (built on first use with the system C compiler)."""
