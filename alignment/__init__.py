"""alignment: preference alignment for Hugging Face language models."""

__version__ = "0.1.0"
