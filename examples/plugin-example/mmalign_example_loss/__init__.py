"""An example third-party mmalign plugin: the ``margin-dpo`` loss."""
__version__ = "0.1.0"
