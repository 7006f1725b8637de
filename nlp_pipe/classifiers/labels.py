"""labels.json of a classifier artifact: class names in id order, the binary threshold, the training cut.

BERT classifiers carry their threshold folded into the head (classifiers/decision.py), so `threshold` is
null there and `threshold_folded` says what it was; textcnn keeps `threshold` and applies it on load.
`halfwidth` records the text normalisation of the training data (text.normalization), which every loader
applies before it cuts or tokenizes.

textcnn, finetune and distill write it; `TextClassifier.load` and distill (reading its teacher) read it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..core.errors import UserError
from ..core.files import LABELS_JSON


@dataclass(frozen=True)
class LabelInfo:
    labels: list[str]  # class id -> label name
    threshold: float | None = None  # binary tasks: probability of class 1 above which it is predicted (dev F1-optimal)
    max_seq_len: int | None = None  # tokens per text in training (BERT classifiers); longer texts are cut alike
    threshold_folded: float | None = None  # BERT classifiers: the dev threshold, folded into the head (argmax applies)
    halfwidth: bool = False  # the training text was mapped to half-width (segment --halfwidth): so is every text predicted

    def save(self, directory: Path) -> None:
        (directory / LABELS_JSON).write_text(json.dumps(asdict(self), ensure_ascii=False, indent=2), encoding="utf-8")

    @staticmethod
    def load(directory: Path) -> LabelInfo:
        """The artifact's labels.json."""
        found = LabelInfo.find(directory)
        if found is None:
            raise UserError(f"{directory} has no {LABELS_JSON}; point to a textcnn, finetune or distill artifact")
        return found

    @staticmethod
    def find(directory: Path) -> LabelInfo | None:
        """The artifact's labels.json, or None when it has none (a plain Hugging Face classifier directory)."""
        path = directory / LABELS_JSON
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise UserError(f"{path} is not valid JSON ({exc}); rebuild the artifact") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("labels"), list):
            raise UserError(f"{path} holds no 'labels' list; rebuild the artifact")
        return LabelInfo([str(v) for v in raw["labels"]], raw.get("threshold"), raw.get("max_seq_len"),
                         raw.get("threshold_folded"), bool(raw.get("halfwidth", False)))
