"""charrnn: train character/subword recurrent language models on any text and sample from them."""

__version__ = "0.2.0"
