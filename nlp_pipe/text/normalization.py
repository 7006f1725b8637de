"""Text normalisation a corpus may go through before segmentation, and that serving must repeat.

`segment --halfwidth` maps full-width ASCII forms (Ａ１！) and the ideographic space to their half-width
forms. A classifier trained on such text has only seen half-width characters, so every loader of it
(TextClassifier, `nlp-pipe predict`, an export, `nlp-pipe serve`) applies the same mapping first;
labels.json records it (`halfwidth`). Imports nothing heavy: the serving path uses it.
"""

from __future__ import annotations

HALFWIDTH = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}


def to_halfwidth(text: str) -> str:
    return text.translate(HALFWIDTH)
