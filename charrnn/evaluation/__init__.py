"""How well a model predicts text: bits per character, dynamic evaluation, adaptation to a
passage, and the report ``charrnn eval`` prints."""
