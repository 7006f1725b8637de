"""`--compile` (torch.compile, inductor): predictions match eager; off by default everywhere (docs/performance.md)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import build, fixture_lines
from nlp_pipe import TextClassifier
from nlp_pipe.training.options import TrainOptions


def test_compile_is_off_by_default():
    assert TrainOptions(steps=1).compile is False


@pytest.mark.slow
def test_compiled_predictions_match_eager(tmp_path, tiny_bert, seg_reviews):
    out = tmp_path / "clf"
    build("finetune", out, {"checkpoint": tiny_bert, "train": seg_reviews}, steps=2, batch_size=8, precision="fp32",
          patience=0, max_seq_len=32)
    texts = [line.split("\t", 1)[-1] for line in fixture_lines("reviews.tsv")[1:40]]
    eager = TextClassifier.load(out).predict(texts, batch_size=16)
    compiled = TextClassifier.load(out, compile=True).predict(texts, batch_size=16)
    np.testing.assert_allclose(compiled, eager, atol=1e-5)
