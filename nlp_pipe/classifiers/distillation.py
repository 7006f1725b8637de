"""TinyBERT distillation on the Trainer: each mode's teacher and student, a step's fit, and how the student
compares with its teacher. The `distill` stage drives it; models/tinybert.py holds the losses.

    teacher = Teacher.encoder(teacher_dir, NAME)                 # general: a pretrained BERT's encoder
    student = encoder_student(teacher, student_dir, options, NAME)
    teacher = Teacher.classifier(teacher_dir, NAME)              # task: a finetune artifact, its head as trained
    student = classifier_student(teacher, labels, student_dir, options, NAME)
    summary = fit(trainer, distiller(teacher, student, "intermediate", options), train, dev, teacher.tokenizer)
    compared = compare(teacher, student, splits, max_len, options, out, sizes(teacher, student, options), metrics)

`options` is the distill stage's Config: its student_shape, mapping, projection, temperature, loss weights,
quantize and speed fields.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from ..checkpoints import loading
from ..core.errors import UserError
from ..core.files import CONFIG_JSON, WEIGHTS
from ..data.bert_inputs import Collator
from ..data.labelled import Splits
from ..metrics import throughput
from ..metrics.scores import confusion_sums
from ..metrics.scores import summarize as summarize_scores
from ..models import tinybert as kd
from ..models.int8 import quantize_int8, save_int8
from ..training.trainer import Trainer
from .decision import load_trained
from .outcome import Evaluation, bert_probabilities

OUTPUTS = (CONFIG_JSON, WEIGHTS)  # in every distill artifact: the student's save_pretrained files
STUDENT_SHAPE = "tinybert4"  # a new student's preset unless --student-shape says otherwise
# the intermediate-layer loss leaves the student's pooler and classifier without gradients: DDP must look for them
INTERMEDIATE_UNUSED = True


def check_inputs(mode: str, inputs: dict[str, list[Path]], student_shape: str, stage: str) -> None:
    """One-line errors for what `mode` lacks, and for a --student beside a --student-shape."""
    for name in ("corpus",) if mode == "general" else ("train",):
        if not inputs[name]:
            raise UserError(f"{stage} --mode {mode} needs --{name}")
    if inputs["student"] and student_shape != STUDENT_SHAPE:
        raise UserError(f"{stage}: --student {inputs['student'][0]} has its own shape; --student-shape {student_shape} "
                        "shapes a new student. Give one of them")


@dataclasses.dataclass
class Teacher:
    directory: Path
    tokenizer: Any  # checked: a family the stage takes, a padding token, an embedding row for every id
    model: Any
    max_seq_len: int | None = None  # a finetune artifact's (its labels.json)
    threshold: float | None = None  # binary: the threshold that applies on top of its trained head (None: argmax)

    @classmethod
    def encoder(cls, directory: Path, stage: str) -> Teacher:
        """General mode: the checkpoint's own family's encoder (not BERT weights by name)."""
        from transformers import AutoModel

        tokenizer = loading.checked_tokenizer(directory, stage, "teacher")
        model = loading.load_model(AutoModel, directory)
        loading.check_vocabulary(tokenizer, model, stage, directory)
        return cls(directory, tokenizer, model)

    @classmethod
    def classifier(cls, directory: Path, stage: str) -> Teacher:
        """Task mode: a trained classifier, its head as trained (decision.load_trained): its logits are the soft targets."""
        tokenizer = loading.checked_tokenizer(directory, stage, "teacher")
        model, meta, threshold = load_trained(directory)
        loading.check_vocabulary(tokenizer, model, stage, directory)
        return cls(directory, tokenizer, model, meta.max_seq_len if meta else None, threshold)

    def labels(self, splits: Splits, stage: str) -> Splits:
        """The splits with the teacher's class ids, so the student's logits line up with the teacher's."""
        labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        unknown = sorted(set(splits.labels) - set(labels))
        if unknown:
            raise UserError(f"{stage}: label '{unknown[0]}' is not one of the teacher's labels ({', '.join(labels)})")
        return dataclasses.replace(splits, labels=labels)


def encoder_student(teacher: Teacher, directory: Path | None, options: Any, stage: str) -> Any:
    """General mode's student: the BertModel of `directory`, else a new one of options.student_shape (no pooler)."""
    from transformers import BertModel

    student = loading.load_model(BertModel, directory) if directory else BertModel(
        kd.student_for(teacher.model.config, options.student_shape), add_pooling_layer=False)
    loading.check_vocabulary(teacher.tokenizer, student, stage, directory or teacher.directory)
    return student


def classifier_student(teacher: Teacher, labels: list[str], directory: Path | None, options: Any, stage: str) -> Any:
    """Task mode's student: a BertForSequenceClassification for `labels`, from `directory` or new of options.student_shape."""
    from transformers import BertForSequenceClassification

    heads = {"num_labels": len(labels), "id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}}
    if directory:
        student = loading.load_model(BertForSequenceClassification, directory, **heads)
    else:
        shape = kd.student_for(teacher.model.config, options.student_shape)
        student = BertForSequenceClassification(type(shape)(**{**shape.to_dict(), **heads}))
    loading.check_vocabulary(teacher.tokenizer, student, stage, directory or teacher.directory)
    return student


def distiller(teacher: Teacher, student: Any, mode: kd.Mode, options: Any) -> kd.Distiller:
    return kd.Distiller(teacher.model, student, mode=mode, mapping=options.mapping or None, projection=options.projection,
                        temperature=options.temperature, weights=options.weights)


def fit(trainer: Trainer, model: kd.Distiller, train: Any, dev: Any, tokenizer: Any, lengths: Any = None,
        num_labels: int = 0, options: Any = None) -> Any:
    """One distillation step. With labelled dev data (the prediction step: `num_labels` and `options`), the student's
    dev figures are measured, the best epoch on options.monitor kept and training stopped early after
    options.patience epochs without improvement. `lengths`: the training texts' (similar lengths batched together)."""
    per_epoch = trainer.steps_per_epoch(len(train))

    def forward(m: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        losses = m(**batch)
        if num_labels and not m.training:  # dev: how well the student itself classifies
            logits = m.student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            losses |= confusion_sums(logits, batch["labels"], num_labels)
        return losses

    def summarize(sums: dict[str, float]) -> dict[str, float]:
        out = {k: v / max(sums["batches"], 1) for k, v in sums.items() if k.endswith("loss")}
        return out | ({k: v for k, v in summarize_scores(sums, num_labels).items() if k != "loss"}
                      if num_labels and "count" in sums else {})

    monitor, patience = (options.monitor, options.patience) if (options and dev is not None) else (None, 0)
    return trainer.fit(model, train, collate=Collator(tokenizer), forward=forward, eval_data=dev, summarize=summarize,
                       best_metric=monitor, patience=patience, eval_steps=per_epoch, lengths=lengths)


def by_length(ds: datasets.Dataset) -> datasets.Dataset:
    """Evaluation rows sorted by length: batches of similar lengths carry little padding."""
    return ds.select(np.argsort(ds["length"], kind="stable"))


def sizes(teacher: Teacher, student: Any, options: Any) -> dict[str, Any]:
    """Parameters and measured fp32 inference speed of both (options.speed_batch x speed_seq_len; metrics/throughput.py)."""
    return throughput.compare(teacher.model, student, options.speed_batch, options.speed_seq_len)


def compare(teacher: Teacher, student: Any, splits: Splits, max_len: int, options: Any, out: Path, speed_seq_len: int,
            student_metrics: dict[str, Any]) -> dict[str, Any]:
    """Teacher vs student (and the int8 student, written beside it with options.quantize int8) on the test split, or
    dev without one; each model with the binary threshold chosen on dev for it. The student's score is the one
    `finish_bert` measured (its metrics.json); the teacher's threshold (unfolded for distillation, `load_trained`)
    applies on top of its trained head."""
    split = splits.test if splits.test is not None else splits.dev
    name = "test" if splits.test is not None else "dev"
    gold = splits.ids(split)
    teacher_probs = bert_probabilities(teacher.model.eval(), teacher.tokenizer, splits.labels, max_len)(split)
    scores = {"teacher": Evaluation(teacher_probs, gold).metrics(teacher.threshold)["accuracy"],
              "student": student_metrics[name]["accuracy"]}
    result = {"compared_on": name, f"teacher_{name}_accuracy": scores["teacher"], f"student_{name}_accuracy": scores["student"],
              "retention": round(scores["student"] / scores["teacher"], 4) if scores["teacher"] else None}
    if options.quantize == "int8":
        int8 = quantize_int8(student.cpu().eval())
        save_int8(int8, out)
        int8_probs = bert_probabilities(int8, teacher.tokenizer, splits.labels, max_len)(split)
        result[f"int8_{name}_accuracy"] = Evaluation(int8_probs, gold).metrics(None)["accuracy"]
        result["cpu_int8_texts_per_s"] = round(throughput.texts_per_second(int8, options.speed_batch, speed_seq_len,
                                                                              vocab_size=student.config.vocab_size), 1)
    return result


def shape_line(teacher: Teacher, student: Any, options: Any) -> str:
    """The report's sentence on both shapes and which teacher layer each student layer learns."""
    t, s = teacher.model.config, student.config
    layers = kd.layer_map(s.num_hidden_layers, t.num_hidden_layers, options.mapping or None)
    return (f"Teacher {t.num_hidden_layers}x{t.hidden_size} ({t.num_attention_heads} heads) -> student "
            f"{s.num_hidden_layers}x{s.hidden_size} ({s.num_attention_heads} heads, FFN {s.intermediate_size}); "
            f"student layers 1..{s.num_hidden_layers} learn teacher layers {layers}.")


def sizes_table(sizes: dict[str, Any]) -> str:
    """Markdown: `sizes` side by side (and the int8 student's CPU speed when `compare` measured it)."""
    lines = ["", "| | teacher | student | ratio |", "| --- | --- | --- | --- |",
             f"| parameters | {sizes['teacher_params']:,} | {sizes['student_params']:,} | {sizes['size_ratio']}x smaller |"]
    for device in ("cpu", "cuda"):
        if f"{device}_speedup" in sizes:
            lines.append(f"| {device} texts/s (fp32, batch x {sizes['speed_seq_len']} tokens) | {sizes[f'{device}_teacher_texts_per_s']} "
                         f"| {sizes[f'{device}_student_texts_per_s']} | {sizes[f'{device}_speedup']}x faster |")
    if "cpu_int8_texts_per_s" in sizes:
        lines.append(f"| cpu texts/s, int8 student | | {sizes['cpu_int8_texts_per_s']} | "
                     f"{sizes['cpu_int8_texts_per_s'] / sizes['cpu_teacher_texts_per_s']:.2f}x faster |")
    return "\n".join(lines)
