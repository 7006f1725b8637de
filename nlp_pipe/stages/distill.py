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
from pathlib import Path
from typing import Any, Literal

from ..classifiers import distillation
from ..classifiers.distillation import INTERMEDIATE_UNUSED, STUDENT_SHAPE, Teacher
from ..classifiers.outcome import finish_bert
from ..core.config import option
from ..core.contract import Counts, Input, Result
from ..data import bert_inputs
from ..data import pretraining as blocks_data
from ..data.labelled import Splits, augmented_train, load_splits
from ..text.corpus import ReadOptions
from ..training.options import TrainOptions, run_identity, stage_defaults
from ..training.trainer import Trainer

NAME = "distill"
VERSION = 4  # 2: soft targets from the teacher's trained head (its folded threshold taken out); 3: the teacher's
# tokenizer.json keeps padding and truncation on (saved by finetune): texts are encoded without them, no [PAD] as tokens;
# 4: general mode trains on the whole text packed into max_seq_len blocks (was: each text cut at max_seq_len)
DISTRIBUTED = True  # every process of `accelerate launch` trains; the main one writes the artifact
OUTPUTS = distillation.OUTPUTS

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
    distillation.check_inputs(config.mode, inputs, config.student_shape, NAME)
    run_key = run_identity(config, inputs, also_ignore=("quantize", "speed_batch", "speed_seq_len",  # report only
                                                            "num_proc", "cache_dir"))  # nor do these change the data
    return (_general if config.mode == "general" else _task)(config, inputs, out, run_key)


def _general(config: Config, inputs: dict[str, list[Path]], out: Path, run_key: dict) -> Result:
    """The student learns the teacher's intermediate layers on the corpus, packed into blocks as pretraining's
    data with sentence task none (data/pretraining.py: streamed, tokenised by worker processes, the shared cache)."""
    teacher = Teacher.encoder(inputs["teacher"][0], NAME)
    tokenizer = teacher.tokenizer
    max_len = min(config.max_seq_len or 128, teacher.model.config.max_position_embeddings)
    with Trainer(_phase_options(config, config.epochs), out, run_config=run_key, name=NAME,
                 unused_parameters=INTERMEDIATE_UNUSED) as trainer:
        spec = blocks_data.plain_spec(blocks_data.read_options(config), tokenizer, max_len, config.seed, config.eval_docs)
        built = blocks_data.build_for(inputs["corpus"], run_key["inputs"]["corpus"], tokenizer, spec, out, config.cache_dir,
                                      config.num_proc, NAME)
        counts = Counts.of(**built.stats["counts"])
        vocabulary = bert_inputs.coverage({"train": blocks_data.stream_encoding(built, tokenizer, max_len)},
                                          teacher.directory, NAME, counts)
        student = distillation.encoder_student(teacher, inputs["student"][0] if inputs["student"] else None, config, NAME)
        summary = distillation.fit(trainer, distillation.distiller(teacher, student, "intermediate", config), built.train,
                                   built.eval, tokenizer)
        student.set_attn_implementation("sdpa")  # the scores-reporting attention is for distillation only
        trainer.save_pretrained(student, tokenizer)
    if not trainer.is_main:
        return trainer.secondary_result()
    sizes = distillation.sizes(teacher, student, config)
    used = blocks_data.usage(built, summary.steps * config.batch_size * config.grad_accum * summary.processes)
    metrics = {"mode": "general", "steps": summary.steps, "resumed_from_step": summary.resumed_from, **sizes,
               "vocabulary": vocabulary, **used,
               **{f"train_{k}": round(v, 5) for k, v in summary.last_train.items() if k.endswith("loss")},
               **{f"eval_{k}": round(v, 5) for k, v in summary.last_eval.items() if k.endswith("loss")}}
    report = "\n".join(["## General distillation", distillation.shape_line(teacher, student, config),
                        blocks_data.usage_line(used, max_len), bert_inputs.coverage_line(vocabulary),
                        distillation.sizes_table(sizes), "",
                        f"{summary.steps} steps; last losses: " + ", ".join(f"{k} {v:.4f}" for k, v in summary.last_train.items()
                                                                              if k.endswith("loss")),
                        "", "![training curves](training_curves.png)"])
    return Result(counts, metrics, report, {"data_cache": str(built.cache_dir)}, cleanup=trainer.cleanup)


def _task(config: Config, inputs: dict[str, list[Path]], out: Path, run_key: dict) -> Result:
    """The student learns a finetune artifact's intermediate layers, then its predictions, on the train split or
    the augment artifact's copies of it; early stopping on dev."""
    teacher = Teacher.classifier(inputs["teacher"][0], NAME)
    first = lambda name: inputs[name][0] if inputs[name] else None  # noqa: E731
    splits = teacher.labels(load_splits(inputs["train"][0], first("dev"), first("test"), config.seed), NAME)
    train_ds, augmented = augmented_train(splits, first("augmented"), inputs["train"][0], NAME)
    max_len = min(config.max_seq_len or teacher.max_seq_len or 512, teacher.model.config.max_position_embeddings)
    encoded = bert_inputs.encode_all({"train": train_ds, "dev": splits.dev}, teacher.tokenizer, splits.labels, max_len)
    counts = Counts()
    vocabulary = encoded.coverage(teacher.directory, NAME, counts)
    train = encoded["train"]
    with Trainer(_phase_options(config, config.epochs), out, run_config=run_key, name=NAME, phase="intermediate",
                 unused_parameters=INTERMEDIATE_UNUSED) as trainer:
        student = distillation.classifier_student(teacher, splits.labels, first("student"), config, NAME)
        first_step = None
        if config.epochs or config.steps:
            first_step = distillation.fit(trainer, distillation.distiller(teacher, student, "intermediate", config), train,
                                          None, teacher.tokenizer, train["length"])
    cleanup = trainer.cleanup
    for model in (teacher.model, student):  # the prediction step needs logits only: back to the fast attention
        model.set_attn_implementation("sdpa")
    with Trainer(_phase_options(config, config.prediction_epochs), out, run_config=run_key, name=NAME, phase="prediction") as trainer:
        second = distillation.fit(trainer, distillation.distiller(teacher, student, "prediction", config), train,
                                  distillation.by_length(encoded["dev"]), teacher.tokenizer, train["length"],
                                  len(splits.labels), config)
    cleanup += trainer.cleanup
    if not trainer.is_main:
        return trainer.secondary_result()
    done = finish_bert(out, splits, student, teacher.tokenizer, max_len, name="student", baseline=config.baseline)
    sizes = distillation.sizes(teacher, student, config)
    compared = distillation.compare(teacher, student, splits, max_len, config, out, sizes["speed_seq_len"], done.metrics)
    summary = {"mode": "task", "train_rows": len(train_ds), "augmented_rows": augmented,
               "steps_intermediate": first_step.steps if first_step else 0, "steps_prediction": second.steps,
               "best_step": (second.best or {}).get("step"), "vocabulary": vocabulary, **sizes, **compared, **done.figures}
    counts.rows_in = counts.rows_out = len(train_ds) + len(splits.dev) + (len(splits.test) if splits.test is not None else 0)
    return Result(counts, summary, _task_report(teacher, student, config, sizes, compared, summary, splits, done.sections),
                  cleanup=cleanup)


def _phase_options(config: Config, epochs: float) -> Config:
    return dataclasses.replace(config, epochs=epochs or 1.0)


def _task_report(teacher: Teacher, student: Any, config: Config, sizes, compared, summary, splits: Splits,
                 sections: list[str]) -> str:
    name = compared["compared_on"]
    acc = lambda who: compared[f"{who}_{name}_accuracy"]  # noqa: E731
    lines = ["## Task distillation", distillation.shape_line(teacher, student, config),
             f"Training texts: {summary['train_rows']} ({summary['augmented_rows']} from the augment artifact); "
             f"{summary['steps_intermediate']} intermediate-layer steps, then {summary['steps_prediction']} prediction-layer steps "
             f"(best dev at step {summary['best_step']}); data {splits.origin}.", bert_inputs.coverage_line(summary["vocabulary"]),
             distillation.sizes_table({**sizes, **compared}), "",
             f"| {name} accuracy | teacher | student | retention |", "| --- | --- | --- | --- |",
             f"| fp32 | {acc('teacher'):.4f} | {acc('student'):.4f} | {compared['retention']:.1%} |"]
    if f"int8_{name}_accuracy" in compared:
        lines.append(f"| int8 student | | {compared[f'int8_{name}_accuracy']:.4f} | "
                     f"{compared[f'int8_{name}_accuracy'] / acc('teacher'):.1%} |")
    lines += ["", *sections, "", "![intermediate](training_curves_intermediate.png)", "",
              "![prediction](training_curves_prediction.png)",
              "", "![confusion matrix](confusion_matrix.png)"]
    return "\n".join(lines)
