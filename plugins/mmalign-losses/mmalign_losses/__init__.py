"""Offline preference losses (dpo, ipo, slic, robust-dpo, avg-dpo, weighted-sum) and the SFT objective (plugin ``losses``)."""
__version__ = "0.1.0"
