"""Stage `distill`: TinyBERT distillation, general (pretrained teacher, unlabelled text) or task-specific.

    nlp-pipe distill --mode general --teacher runs/bert --corpus runs/seg --out runs/tiny_general
    nlp-pipe distill --mode task --teacher runs/clf --train runs/seg_train --dev runs/seg_dev --test runs/seg_test \
        --augmented runs/aug --student runs/tiny_general --out runs/tiny_clf --quantize int8

general: the student learns the teacher's embedding output, hidden states (through a learned projection)
and attention scores (nlp_pipe.models.tinybert) on the corpus, all of its text packed into max_seq_len blocks
by pretraining's streaming data path and shared cache (nlp_pipe.data.pretraining); it is saved as a BertModel directory that
`finetune`, `extract` and `distill --student` load. task: the teacher is a `finetune` artifact; the
student (from --student, else a fresh one of --student-shape) first learns the intermediate layers for
`epochs`, then the teacher's soft predictions for `prediction_epochs` with early stopping on dev. Its
artifact is a classifier like finetune's (TextClassifier, `nlp-pipe predict`), plus model_int8.pt with
--quantize int8. The report compares teacher and student: parameters, accuracy (retention) and
measured inference speed on this machine. Trains across the processes of `accelerate launch` / torchrun
like pretrain (DDP; the intermediate-layer step with find_unused_parameters, since the student's
pooler and head get no gradient there); the main process evaluates and writes the artifact.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np
import torch

from ..checkpoints import loading
from ..classifiers.decision import load_trained
from ..classifiers.outcome import Evaluation, bert_probabilities, finish_bert
from ..core import artifacts
from ..core import manifest as manifests
from ..core.config import option
from ..core.contract import Counts, Input, Result
from ..core.errors import UserError
from ..core.files import CONFIG_JSON, WEIGHTS
from ..data import bert_inputs
from ..data import pretraining as blocks_data
from ..data.blocks import BlockSpec
from ..data.labelled import Splits, load_dataset, load_splits
from ..metrics.scores import confusion_sums
from ..metrics.scores import summarize as summarize_scores
from ..metrics.throughput import param_count, texts_per_second
from ..models import tinybert as kd
from ..models.int8 import quantize_int8, save_int8
from ..text.corpus import ReadOptions
from ..text.segmenter import SegmenterSpec, default_workers
from ..training.options import TrainOptions, run_identity, stage_defaults
from ..training.trainer import Trainer

log = logging.getLogger(__name__)

NAME = "distill"
VERSION = 4  # 2: soft targets from the teacher's trained head (its folded threshold taken out); 3: the teacher's
# tokenizer.json keeps padding and truncation on (saved by finetune): texts are encoded without them, no [PAD] as tokens;
# 4: general mode trains on the whole text packed into max_seq_len blocks (was: each text cut at max_seq_len)
DISTRIBUTED = True  # every process of `accelerate launch` trains; the main one writes the artifact
# the intermediate-layer loss leaves the student's pooler and classifier without gradients: DDP must look for them
INTERMEDIATE_UNUSED = True
OUTPUTS = (CONFIG_JSON, WEIGHTS)
_CHUNK = 1 << 24  # tokens of the corpus's token stream read at a time

INPUTS = {
    "teacher": Input("general: a pretrained BERT (pretrain/expand artifact); task: a finetune artifact",
                     kind="any", stages=("pretrain", "expand", "finetune"), hub=True),
    "corpus": Input("general mode: text files or segment artifacts", kind="any", multiple=True, required=False, stages=("segment",)),
    "train": Input("task mode: labelled training data (segment artifact)", kind="artifact", required=False, stages=("segment",)),
    "dev": Input("task mode: labelled dev data", kind="artifact", required=False, stages=("segment",)),
    "test": Input("task mode: labelled test data", kind="artifact", required=False, stages=("segment",)),
    "augmented": Input("task mode: augmented training texts (augment artifact of the train input)", kind="artifact",
                       required=False, stages=("augment",)),
    "student": Input("a general-distilled student to start from (distill artifact or Hub id)", kind="any", required=False,
                     stages=("distill",), hub=True),
}


STUDENT_SHAPE = "tinybert4"
TRAINING = {"steps": 0, "epochs": 3.0, "save_every": 0}
TRAINING_HELP = {"steps": "optimizer steps of each step (intermediate, prediction); 0 = from epochs",
                 "epochs": "passes over the data learning the intermediate layers (general mode: all of it; 0 = skip in task mode)",
                 "save_every": "checkpoint every N steps; 0 = once an epoch"}


@dataclasses.dataclass(frozen=True)
@stage_defaults(TRAINING, TRAINING_HELP)
class Config(ReadOptions, TrainOptions):
    mode: Literal["general", "task"] = option("task", "general: intermediate layers on unlabelled text; task: a fine-tuned teacher")
    student_shape: str = option(STUDENT_SHAPE, "student preset (tinybert4: 4x312, tinybert6: 6x768) or a BertConfig JSON file; "
                                              "not with --student (which has its own)", path=True)
    mapping: tuple[int, ...] = option((), "teacher layer for each student layer (1-based); empty = uniform g(m) = m*N/M")
    projection: Literal["shared", "per_layer"] = option("shared",
                                                        "student -> teacher hidden projection: one for all layers (TinyBERT) or one each")
    temperature: float = option(1.0, "softmax temperature of the prediction-layer loss", min=0.01)
    w_embedding: float = option(1.0, "weight of the embedding-layer MSE", min=0.0)
    w_hidden: float = option(1.0, "weight of the hidden-state MSE", min=0.0)
    w_attention: float = option(1.0, "weight of the attention-score MSE", min=0.0)
    w_prediction: float = option(1.0, "weight of the soft cross-entropy on the teacher's logits", min=0.0)
    w_hard: float = option(0.0, "weight of the cross-entropy on the gold labels (task mode)", min=0.0)
    prediction_epochs: float = option(3.0, "task mode: passes learning the teacher's predictions", min=0.0)
    max_seq_len: int = option(0, "task mode: tokens per text, [CLS]/[SEP] included, 0 = the teacher classifier's (labels.json); "
                                 "general mode: tokens per block, 0 = 128", min=0, max=512)
    eval_docs: int = option(200, "general mode: documents held out for the evaluation loss (at most a fifth of them)", min=0)
    num_proc: int = option(0, "general mode: processes tokenising the corpus; 0 = every core", min=0, neutral=True)
    cache_dir: str = option("", "general mode: the shared cache of tokenised corpora, as pretrain's (default: $NLP_PIPE_CACHE, "
                                "else nlp_pipe_cache/ beside --out)", neutral=True)
    patience: int = option(3, "task mode: stop after this many dev evaluations without improvement (0 = never)", min=0)
    monitor: Literal["macro_f1", "accuracy"] = option("macro_f1", "task mode: dev figure for early stopping")
    baseline: bool = option(True, "task mode: also fit the TF-IDF + LR baseline on the same split and report it beside the student")
    quantize: Literal["none", "int8"] = option("none", "task mode: also write model_int8.pt (dynamic int8 linear layers, CPU)")
    speed_batch: int = option(32, "batch of the reported inference speed", min=1)
    speed_seq_len: int = option(128, "sequence length of the reported inference speed", min=8, max=512)

    def __post_init__(self) -> None:
        if self.mode == "general" and self.epochs == 0 and self.steps == 0:
            raise ValueError("general mode needs epochs or steps")
        if self.mode == "task" and self.prediction_epochs == 0 and self.steps == 0:
            raise ValueError("task mode needs prediction_epochs or steps")

    @property
    def weights(self) -> dict[str, float]:
        return {k: getattr(self, f"w_{k}") for k in ("embedding", "hidden", "attention", "prediction", "hard")}


def run(config: Config, inputs: dict[str, list[Path]], out: Path) -> Result:
    needed = ("corpus",) if config.mode == "general" else ("train",)
    for name in needed:
        if not inputs[name]:
            raise UserError(f"distill --mode {config.mode} needs --{name}")
    if inputs["student"] and config.student_shape != STUDENT_SHAPE:
        raise UserError(f"distill: --student {inputs['student'][0]} has its own shape; --student-shape {config.student_shape} "
                        "shapes a new student. Give one of them")
    run_key = run_identity(config, inputs, also_ignore=("quantize", "speed_batch", "speed_seq_len",  # report only
                                                            "num_proc", "cache_dir"))  # nor do these change the data
    return (_general if config.mode == "general" else _task)(config, inputs, out, run_key)


def _general(config: Config, inputs: dict[str, list[Path]], out: Path, run_key: dict) -> Result:
    from transformers import AutoModel, BertModel

    tokenizer = loading.checked_tokenizer(inputs["teacher"][0], NAME, "teacher")
    teacher = loading.load_model(AutoModel, inputs["teacher"][0])  # its own family's encoder, not BERT weights by name
    loading.check_vocabulary(tokenizer, teacher, NAME, inputs["teacher"][0])
    max_len = min(config.max_seq_len or 128, teacher.config.max_position_embeddings)
    with Trainer(_phase_options(config, config.epochs), out, run_config=run_key, name=NAME,
                 unused_parameters=INTERMEDIATE_UNUSED) as trainer:
        built = _general_blocks(config, inputs, out, run_key, tokenizer, max_len)
        counts = Counts.of(**built.stats["counts"])
        vocabulary = bert_inputs.coverage({"train": _stream_encoding(built, tokenizer, max_len)}, inputs["teacher"][0], NAME, counts)
        student = loading.load_model(BertModel, inputs["student"][0]) if inputs["student"] else BertModel(
            _student_config(teacher.config, config), add_pooling_layer=False)
        loading.check_vocabulary(tokenizer, student, NAME, inputs["student"][0] if inputs["student"] else inputs["teacher"][0])
        distiller = _distiller(teacher, student, "intermediate", config)
        summary = _fit(trainer, distiller, built.train, built.eval, bert_inputs.Collator(tokenizer))
        student.set_attn_implementation("sdpa")  # the scores-reporting attention is for distillation only
        trainer.save_pretrained(student, tokenizer)
    if not trainer.is_main:
        return trainer.secondary_result()
    sizes = _sizes(teacher, student, config)
    used = _data_used(built, summary, config)
    metrics = {"mode": "general", "steps": summary.steps, "resumed_from_step": summary.resumed_from, **sizes,
               "vocabulary": vocabulary, **used,
               **{f"train_{k}": round(v, 5) for k, v in summary.last_train.items() if k.endswith("loss")},
               **{f"eval_{k}": round(v, 5) for k, v in summary.last_eval.items() if k.endswith("loss")}}
    report = "\n".join(["## General distillation", _shape_line(teacher, student, config), _data_line(used, max_len),
                        bert_inputs.coverage_line(vocabulary), _sizes_table(sizes), "",
                        f"{summary.steps} steps; last losses: " + ", ".join(f"{k} {v:.4f}" for k, v in summary.last_train.items()
                                                                              if k.endswith("loss")),
                        "", "![training curves](training_curves.png)"])
    return Result(counts, metrics, report, {"data_cache": str(built.cache_dir)}, cleanup=trainer.cleanup)


def _general_blocks(config: Config, inputs: dict[str, list[Path]], out: Path, run_key: dict, tokenizer: Any,
                    max_len: int) -> blocks_data.Built:
    """The corpus as pretraining's packed blocks without sentence pairs (data/pretraining.py): documents streamed,
    tokenised by worker processes and cut into max_len blocks, documents separated by [SEP], so every token of
    the text is in one block and memory stays flat in the corpus size. It is the shared cache's entry of
    `pretrain --sentence-task none` with the same corpus, tokenizer, max_seq_len, seed and eval_docs."""
    read = ReadOptions(**{f.name: getattr(config, f.name) for f in dataclasses.fields(ReadOptions)})
    block = BlockSpec(max_len, "none", config.seed, tokenizer.cls_token_id, tokenizer.sep_token_id)
    spec = blocks_data.BuildSpec(block, "auto", read, SegmenterSpec(), config.eval_docs)
    return blocks_data.build(inputs["corpus"], manifests.sha256_json(run_key["inputs"]["corpus"]), tokenizer, spec,
                             artifacts.cache_dir(out, config.cache_dir) / blocks_data.CACHE_KIND,
                             config.num_proc or default_workers(), NAME)


def _stream_encoding(built: blocks_data.Built, tokenizer: Any, max_len: int) -> bert_inputs.Encoding:
    """The corpus's [UNK] count, read from the token stream a chunk at a time (it stays on disk); no text is cut."""
    ids, unk = built.train.stream.ids, tokenizer.unk_token_id
    unknown = 0 if unk is None else sum(int(np.count_nonzero(ids[i:i + _CHUNK] == unk)) for i in range(0, len(ids), _CHUNK))
    return bert_inputs.Encoding(max_len, 0, built.stats["documents"], int(built.stats["tokens"]), unknown)


def _data_used(built: blocks_data.Built, summary: Any, config: Config) -> dict[str, Any]:
    """How much of the corpus the student saw: documents, blocks and tokens, and the share of the blocks the steps covered."""
    stats, train = built.stats, built.stats["train"]
    seen = summary.steps * config.batch_size * config.grad_accum * summary.processes
    return {"documents": stats["documents"] - stats["eval_documents"], "eval_documents": stats["eval_documents"],
            "text_tokens": stats["tokens"], "blocks": train["blocks"], "block_tokens": train["tokens"],
            "eval_blocks": stats.get("eval", {}).get("blocks", 0), "padding_fraction": train["padding_fraction"],
            "blocks_trained": seen, "passes": round(seen / max(train["blocks"], 1), 4), "data_cache_reused": built.reused}


def _data_line(used: dict[str, Any], max_len: int) -> str:
    documents = used["documents"] + used["eval_documents"]
    return (f"Data: {documents:,} documents, {used['text_tokens']:,} tokens, every one of them in a block (none cut off): "
            f"{used['blocks']:,} training blocks of {max_len} tokens ([SEP] between documents, {used['padding_fraction']:.2%} "
            f"padding) and {used['eval_blocks']:,} evaluation blocks from {used['eval_documents']:,} held-out documents; "
            f"the steps trained on {used['blocks_trained']:,} blocks, {used['passes']:.4g} passes over the training blocks.")


def _task(config: Config, inputs: dict[str, list[Path]], out: Path, run_key: dict) -> Result:
    from transformers import BertForSequenceClassification

    teacher_dir = inputs["teacher"][0]
    tokenizer = loading.checked_tokenizer(teacher_dir, NAME, "teacher")
    teacher, teacher_meta, teacher_threshold = load_trained(teacher_dir)
    loading.check_vocabulary(tokenizer, teacher, NAME, teacher_dir)
    first = lambda name: inputs[name][0] if inputs[name] else None  # noqa: E731
    splits = _teacher_labels(load_splits(inputs["train"][0], first("dev"), first("test"), config.seed), teacher)
    train_ds, augmented = _training_texts(splits, first("augmented"), inputs["train"][0])
    max_len = min(config.max_seq_len or (teacher_meta.max_seq_len if teacher_meta else None) or 512, teacher.config.max_position_embeddings)
    tokenizer.model_max_length = max_len  # saved with the student: pipeline(..., truncation=True) cuts alike
    train, train_encoding = bert_inputs.encode(train_ds, tokenizer, splits.labels, max_len)
    dev, dev_encoding = bert_inputs.encode(splits.dev, tokenizer, splits.labels, max_len)
    counts = Counts()
    vocabulary = bert_inputs.coverage({"train": train_encoding, "dev": dev_encoding}, teacher_dir, NAME, counts)
    collate = bert_inputs.Collator(tokenizer)
    labels = {"num_labels": len(splits.labels), "id2label": dict(enumerate(splits.labels)),
              "label2id": {n: i for i, n in enumerate(splits.labels)}}
    with Trainer(_phase_options(config, config.epochs), out, run_config=run_key, name=NAME, phase="intermediate",
                 unused_parameters=INTERMEDIATE_UNUSED) as trainer:
        if inputs["student"]:
            student = loading.load_model(BertForSequenceClassification, inputs["student"][0], **labels)
        else:
            shape = _student_config(teacher.config, config)
            student = BertForSequenceClassification(type(shape)(**{**shape.to_dict(), **labels}))
        loading.check_vocabulary(tokenizer, student, NAME, inputs["student"][0] if inputs["student"] else teacher_dir)
        first_step = None
        if config.epochs or config.steps:
            first_step = _fit(trainer, _distiller(teacher, student, "intermediate", config), train, None, collate,
                              train["length"])
    cleanup = trainer.cleanup
    for model in (teacher, student):  # the prediction step needs logits only: back to the fast attention
        model.set_attn_implementation("sdpa")
    with Trainer(_phase_options(config, config.prediction_epochs), out, run_config=run_key, name=NAME, phase="prediction") as trainer:
        distiller = _distiller(teacher, student, "prediction", config)
        second = _fit(trainer, distiller, train, _by_length(dev), collate, train["length"], len(splits.labels), config)
    cleanup += trainer.cleanup
    if not trainer.is_main:
        return trainer.secondary_result()
    done = finish_bert(out, splits, student, tokenizer, max_len, name="student", baseline=config.baseline)
    sizes = _sizes(teacher, student, config)
    compared = _compare(teacher, student, tokenizer, splits, max_len, config, out, sizes["speed_seq_len"], teacher_threshold,
                        done.metrics)
    summary = {"mode": "task", "train_rows": len(train_ds), "augmented_rows": augmented,
               "steps_intermediate": first_step.steps if first_step else 0, "steps_prediction": second.steps,
               "best_step": (second.best or {}).get("step"), "vocabulary": vocabulary, **sizes, **compared, **done.figures}
    counts.rows_in = counts.rows_out = len(train_ds) + len(splits.dev) + (len(splits.test) if splits.test is not None else 0)
    return Result(counts, summary, _task_report(teacher, student, config, sizes, compared, summary, splits, done.sections),
                  cleanup=cleanup)


def _phase_options(config: Config, epochs: float) -> Config:
    return dataclasses.replace(config, epochs=epochs or 1.0)


def _fit(trainer: Trainer, distiller: kd.Distiller, train, dev, collate: Any, lengths: Any = None, num_labels: int = 0,
         config: Config | None = None):
    """One distillation step. With labelled dev data (the prediction step), the student's dev accuracy
    picks the best epoch and stops early. `lengths`: the training texts' (similar lengths batched together)."""
    per_epoch = trainer.steps_per_epoch(len(train))

    def forward(model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        losses = model(**batch)
        if num_labels and not model.training:  # dev: how well the student itself classifies
            logits = model.student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            losses |= confusion_sums(logits, batch["labels"], num_labels)
        return losses

    def summarize(sums: dict[str, float]) -> dict[str, float]:
        out = {k: v / max(sums["batches"], 1) for k, v in sums.items() if k.endswith("loss")}
        return out | ({k: v for k, v in summarize_scores(sums, num_labels).items() if k != "loss"}
                      if num_labels and "count" in sums else {})

    monitor, patience = (config.monitor, config.patience) if (config and dev is not None) else (None, 0)
    return trainer.fit(distiller, train, collate=collate, forward=forward, eval_data=dev, summarize=summarize,
                       best_metric=monitor, patience=patience, eval_steps=per_epoch, lengths=lengths)


def _by_length(ds: datasets.Dataset) -> datasets.Dataset:
    """Evaluation rows sorted by length: batches of similar lengths carry little padding."""
    return ds.select(np.argsort(ds["length"], kind="stable"))


def _distiller(teacher: Any, student: Any, mode: kd.Mode, config: Config) -> kd.Distiller:
    return kd.Distiller(teacher, student, mode=mode, mapping=config.mapping or None, projection=config.projection,
                        temperature=config.temperature, weights=config.weights)


def _student_config(teacher_config: Any, config: Config) -> Any:
    """The student's BertConfig from the preset or file, with the teacher's number of attention heads when they
    differ (attention scores are compared head by head): TinyBERT-4 of a 4-head BERT-mini has 4 heads of 78."""
    shape = kd.student_config(teacher_config, Path(config.student_shape) if config.student_shape.endswith(".json")
                              else config.student_shape)
    heads = teacher_config.num_attention_heads
    if shape.num_attention_heads != heads:
        if shape.hidden_size % heads:
            raise UserError(f"distill: the student's hidden size {shape.hidden_size} does not split into the teacher's "
                            f"{heads} attention heads; choose a student shape whose hidden size it divides")
        # a preset follows the teacher quietly; heads the user wrote in a shape file are worth a word on the terminal
        log.log(logging.WARNING if config.student_shape.endswith(".json") else logging.INFO,
                "the student takes the teacher's %d attention heads (its shape had %d): attention scores are "
                "compared head by head", heads, shape.num_attention_heads)
        shape.num_attention_heads = heads
    return shape


def _teacher_labels(splits: Splits, teacher: Any) -> Splits:
    """The splits with the teacher's class ids, so the student's logits line up with the teacher's."""
    labels = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
    unknown = sorted(set(splits.labels) - set(labels))
    if unknown:
        raise UserError(f"distill: label '{unknown[0]}' is not one of the teacher's labels ({', '.join(labels)})")
    return dataclasses.replace(splits, labels=labels)


def _training_texts(splits: Splits, augmented: Path | None, train_artifact: Path) -> tuple[datasets.Dataset, int]:
    """The train split, or the augmented copies of its rows (originals included). Copies of rows carved out
    for dev/test are left out, and the originals must be the train artifact's texts."""
    if augmented is None:
        return splits.train, 0
    table = load_dataset(augmented, "augmented")
    if "source_row" not in table.column_names:
        raise UserError(f"distill: {augmented} is not an augment artifact (no source_row column)")
    original = load_dataset(train_artifact, "train")
    source = np.asarray(table["source_row"])
    first = np.flatnonzero(~np.asarray(table["augmented"]))
    if source.max(initial=-1) >= len(original) or any(
            table[int(i)]["text"] != original[int(source[i])]["text"] for i in first[:: max(1, len(first) // 50)]):
        raise UserError(f"distill: {augmented} was not made from the train input {train_artifact}; augment that artifact")
    missing = np.setdiff1d(splits.train_rows, source)
    if len(missing):  # an augment of part of the train input would silently leave the other rows out of training
        raise UserError(f"distill: {augmented} holds no copy of {len(missing)} of the {len(splits.train_rows)} train rows "
                        f"(first: row {int(missing[0])}); it was made from another artifact than the train input "
                        f"{train_artifact}: augment that artifact")
    keep = np.flatnonzero(np.isin(source, splits.train_rows))
    return table.select(keep).select_columns(["text", "label"]), int(len(keep))


def _sizes(teacher: Any, student: Any, config: Config) -> dict[str, Any]:
    """Parameters and measured fp32 inference speed (random ids, speed_batch x speed_seq_len) on this machine's CPU,
    and on its GPU when there is one."""
    t, s = param_count(teacher), param_count(student)
    seq = min(config.speed_seq_len, teacher.config.max_position_embeddings, student.config.max_position_embeddings)
    sizes: dict[str, Any] = {"teacher_params": t, "student_params": s, "size_ratio": round(t / s, 2), "speed_seq_len": seq}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        speeds = {}
        for name, model in (("teacher", teacher), ("student", student)):
            model.to(device)
            speeds[name] = texts_per_second(model, config.speed_batch, seq)
            model.to("cpu")
        sizes[f"{device}_teacher_texts_per_s"] = round(speeds["teacher"], 1)
        sizes[f"{device}_student_texts_per_s"] = round(speeds["student"], 1)
        sizes[f"{device}_speedup"] = round(speeds["student"] / speeds["teacher"], 2)
    return sizes


def _compare(teacher: Any, student: Any, tokenizer: Any, splits: Splits, max_len: int, config: Config, out: Path,
             speed_seq_len: int, teacher_threshold: float | None, student_metrics: dict[str, Any]) -> dict[str, Any]:
    """Teacher vs student (and the int8 student) on the test split, or dev without one; each model with
    the binary threshold chosen on dev for it. The student's score is the one `finish_bert` measured (its
    metrics.json); the teacher's threshold (unfolded for distillation, `load_trained`) applies on top of its
    trained head."""
    split = splits.test if splits.test is not None else splits.dev
    name = "test" if splits.test is not None else "dev"
    gold = splits.ids(split)
    teacher_probs = bert_probabilities(teacher.eval(), tokenizer, splits.labels, max_len)(split)
    scores = {"teacher": Evaluation(teacher_probs, gold).metrics(teacher_threshold)["accuracy"],
              "student": student_metrics[name]["accuracy"]}
    result = {"compared_on": name, f"teacher_{name}_accuracy": scores["teacher"], f"student_{name}_accuracy": scores["student"],
              "retention": round(scores["student"] / scores["teacher"], 4) if scores["teacher"] else None}
    if config.quantize == "int8":
        int8 = quantize_int8(student.cpu().eval())
        save_int8(int8, out)
        int8_probs = bert_probabilities(int8, tokenizer, splits.labels, max_len)(split)
        result[f"int8_{name}_accuracy"] = Evaluation(int8_probs, gold).metrics(None)["accuracy"]
        result["cpu_int8_texts_per_s"] = round(texts_per_second(int8, config.speed_batch, speed_seq_len,
                                                                   vocab_size=student.config.vocab_size), 1)
    return result


def _shape_line(teacher: Any, student: Any, config: Config) -> str:
    t, s = teacher.config, student.config
    layers = kd.layer_map(s.num_hidden_layers, t.num_hidden_layers, config.mapping or None)
    return (f"Teacher {t.num_hidden_layers}x{t.hidden_size} ({t.num_attention_heads} heads) -> student "
            f"{s.num_hidden_layers}x{s.hidden_size} ({s.num_attention_heads} heads, FFN {s.intermediate_size}); "
            f"student layers 1..{s.num_hidden_layers} learn teacher layers {layers}.")


def _sizes_table(sizes: dict[str, Any]) -> str:
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


def _task_report(teacher, student, config: Config, sizes, compared, summary, splits: Splits, sections: list[str]) -> str:
    name = compared["compared_on"]
    acc = lambda who: compared[f"{who}_{name}_accuracy"]  # noqa: E731
    lines = ["## Task distillation", _shape_line(teacher, student, config),
             f"Training texts: {summary['train_rows']} ({summary['augmented_rows']} from the augment artifact); "
             f"{summary['steps_intermediate']} intermediate-layer steps, then {summary['steps_prediction']} prediction-layer steps "
             f"(best dev at step {summary['best_step']}); data {splits.origin}.", bert_inputs.coverage_line(summary["vocabulary"]),
             _sizes_table({**sizes, **compared}), "",
             f"| {name} accuracy | teacher | student | retention |", "| --- | --- | --- | --- |",
             f"| fp32 | {acc('teacher'):.4f} | {acc('student'):.4f} | {compared['retention']:.1%} |"]
    if f"int8_{name}_accuracy" in compared:
        lines.append(f"| int8 student | | {compared[f'int8_{name}_accuracy']:.4f} | "
                     f"{compared[f'int8_{name}_accuracy'] / acc('teacher'):.1%} |")
    lines += ["", *sections, "", "![intermediate](training_curves_intermediate.png)", "",
              "![prediction](training_curves_prediction.png)",
              "", "![confusion matrix](confusion_matrix.png)"]
    return "\n".join(lines)
