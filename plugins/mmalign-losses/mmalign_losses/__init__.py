"""Offline preference losses and the SFT objective (plugin ``losses``)."""
__version__ = "0.1.0"
