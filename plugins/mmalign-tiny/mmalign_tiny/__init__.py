"""A tiny LLaVA for tests and the CPU quickstart (plugin ``tiny``)."""
__version__ = "0.1.0"
