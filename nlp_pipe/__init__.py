"""nlp_pipe: a Chinese text pipeline from raw corpus to small, fast classifiers."""

__version__ = "0.1.0"
