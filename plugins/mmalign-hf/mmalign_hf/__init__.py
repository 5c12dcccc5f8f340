"""Hugging Face vision-language models behind mmalign's model interface (plugin ``hf``)."""
__version__ = "0.1.0"
