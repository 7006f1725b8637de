"""nlp_pipe: a Chinese text pipeline from raw corpus to small, fast classifiers."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # lazy, so `import nlp_pipe` (and the CLI's start-up) does not pay for torch
    if name == "TextClassifier":
        from .classifiers.loaded import TextClassifier

        return TextClassifier
    raise AttributeError(name)
