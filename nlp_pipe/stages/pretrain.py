"""Stage `pretrain`: BERT pretraining (MLM + NSP/SOP or MLM only) from scratch or from a checkpoint.

    nlp-pipe pretrain --corpus docs.txt --tokenizer runs/bert_vocab --out runs/bert --size mini --steps 10000
    nlp-pipe pretrain --corpus runs/seg --init runs/bert --out runs/bert2 --sentence-task none   # continue
    accelerate launch --multi_gpu --num_processes 4 -m nlp_pipe pretrain ...   # 4 GPUs (or 4 CPU processes
                                                                                 # on a machine without CUDA)

Writes a HuggingFace directory (BertForPreTraining with a sentence task, BertForMaskedLM without)
plus the tokenizer, loadable with AutoModelForMaskedLM / AutoModel / AutoTokenizer.from_pretrained;
metrics.jsonl, training_curves.png and pretraining.json (objectives, data statistics) beside it.
Whole-word masking uses jieba words over the character tokens; blocks are packed to full length
(nlp_pipe.data.blocks); the MLM head projects onto the vocabulary at masked positions only
(nlp_pipe.models.bert_pretraining). Checkpoints go to NAME.checkpoints/ and a rerun after a kill
resumes from the newest. The tokenised corpus and its blocks go to the shared cache (--cache-dir,
$NLP_PIPE_CACHE, or nlp_pipe_cache/ beside --out; `nlp-pipe cache ls|rm`), keyed by what decides them,
so another --out, a continued run or another pipeline with the same corpus and tokenizer reuses them
(nlp_pipe.data.pretraining, docs/pretraining-cache.md).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..checkpoints import families, loading
from ..core import manifest as manifests
from ..core.config import option, to_dict
from ..core.contract import Counts, Input, Result
from ..core.errors import UserError
from ..core.files import CONFIG_JSON, DATASET_DIR, PRETRAINING_JSON, USERDICT_TXT, VOCAB_TXT, WEIGHTS, read_vocab
from ..data import pretraining as blocks_data
from ..data.blocks import BlockSpec
from ..data.masking import MaskingCollator
from ..models import bert_pretraining as bert
from ..text.corpus import ReadOptions
from ..text.segmenter import SegmenterSpec
from ..text.userdict import read_userdict
from ..training.options import TrainOptions, run_identity
from ..training.trainer import Summary, Trainer

NAME = "pretrain"
VERSION = 2
DISTRIBUTED = True  # every process of `accelerate launch` runs this stage; the main one writes the artifact
OUTPUTS = (CONFIG_JSON, WEIGHTS, PRETRAINING_JSON)

INPUTS = {
    "corpus": Input("text files (one document a line, or one sentence a line with blank lines between documents) "
                    "or segment artifacts", kind="any", multiple=True, stages=("segment",)),
    "tokenizer": Input("a vocab artifact made with --kind bert, a pretrain/expand/distill artifact (its tokenizer), a directory "
                       "AutoTokenizer loads, or a BERT vocab.txt", kind="any", required=False,
                       stages=("vocab", "pretrain", "expand", "distill"), hub=True),
    "init": Input("a BERT-family checkpoint (directory or Hub id) to continue pretraining from", kind="any", required=False,
                  stages=("pretrain", "expand", "distill"), hub=True),
}


@dataclasses.dataclass(frozen=True)
class Config(ReadOptions, TrainOptions):
    layout: Literal["auto", "line", "blank"] = option(
        "auto", "text files: one document a line (line), one sentence a line with blank lines between documents (blank), or detect (auto)")
    size: Literal["tiny", "mini", "small", "medium", "base"] = option(
        "mini", "model from scratch: tiny 2x128, mini 4x256, small 4x512, medium 8x512, base 12x768 (layers x hidden)")
    model_config: str = option("", "BertConfig JSON file for a model from scratch (overrides size)", path=True)
    max_seq_len: int = option(128, "tokens per block, [CLS] and [SEP] included", min=16, max=512)
    sentence_task: Literal["sop", "nsp", "none"] = option(
        "sop", "sentence-pair task: sop (ALBERT order prediction), nsp (BERT next sentence), none (MLM only)")
    masking: Literal["whole-word", "token"] = option("whole-word", "mask whole jieba words (BERT-wwm/ERNIE) or single tokens")
    mlm_probability: float = option(0.15, "share of each block's tokens to predict", min=0.01, max=0.5)
    mask_ratio: float = option(0.8, "of the chosen words: replaced by [MASK]", min=0.0, max=1.0)
    random_ratio: float = option(0.1, "of the chosen words: replaced by random tokens (the rest stay unchanged)", min=0.0, max=1.0)
    hmm: bool = option(True, "jieba HMM for words missing from its dictionary (text files; segment artifacts keep their words)")
    attention: Literal["sdpa", "eager"] = option("sdpa", "attention implementation")
    pair_sets: int = option(4, "nsp/sop: sets of pairs drawn with different splits (Google BERT's dupe_factor), "
                               "so several epochs do not repeat the same pairs; the training data holds the text that often", min=1, max=20)
    eval_docs: int = option(200, "documents held out for evaluation (at most a fifth of them)", min=0)
    num_proc: int = option(0, "processes for tokenisation and jieba; 0 = every core", min=0, neutral=True)  # same blocks
    cache_dir: str = option("", "shared cache folder for the tokenised corpus (default: $NLP_PIPE_CACHE, else nlp_pipe_cache/ "
                                "beside --out)", neutral=True)
    export_dataset: bool = option(False, "also save the tokenised blocks with word-boundary labels under dataset/ "
                                         "(a DatasetDict: train, eval)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mask_ratio + self.random_ratio > 1:
            raise ValueError(f"mask_ratio + random_ratio = {self.mask_ratio + self.random_ratio} exceeds 1")
        if self.model_config and not Path(self.model_config).is_file():
            raise ValueError(f"model_config {self.model_config} is not a file")


def run(config: Config, inputs: dict[str, list[Path]], out: Path) -> Result:
    tokenizer, tokenizer_source = _tokenizer(inputs)
    run_key = run_identity(config, inputs, also_ignore=("eval_every", "num_proc", "cache_dir"))  # nor do these
    with Trainer(config, out, run_config=run_key, name=NAME) as trainer:
        hf_model = _model(config, inputs, tokenizer)  # after Trainer(): seeded, identical on every process
        # every process tokenises a share of the documents; the main one builds the blocks and the cache
        built = blocks_data.build_for(inputs["corpus"], run_key["inputs"]["corpus"], tokenizer,
                                      _build_spec(config, inputs, tokenizer), out, config.cache_dir, config.num_proc)
        collator = MaskingCollator(tokenizer.pad_token_id, tokenizer.mask_token_id, len(tokenizer),
                                   tuple(tokenizer.all_special_ids), config.mlm_probability, config.mask_ratio,
                                   config.random_ratio, whole_word=config.masking == "whole-word", seed=config.seed)
        summary = trainer.fit(bert.MaskedOnlyPretraining(hf_model), built.train, collate=collator.collate,
                              transform=collator.mask, forward=_forward, eval_data=built.eval,
                              summarize=_summarizer(config.sentence_task))
        trainer.save_pretrained(hf_model, tokenizer)
    if not trainer.is_main:
        return trainer.secondary_result()
    metrics = _write_extras(out, config, hf_model, tokenizer_source, collator, built, summary)
    return Result(Counts.of(**built.stats["counts"]), metrics, _report(config, summary, built, hf_model),
                  {"device": trainer.device, "data_cache": str(built.cache_dir)}, trainer.cleanup)


def _write_extras(out: Path, config: Config, hf_model: Any, tokenizer_source: Path, collator: MaskingCollator,
                  built: blocks_data.Built, summary: Summary) -> dict[str, Any]:
    """vocab.txt, pretraining.json and the exported blocks beside the model; the reload check; metrics."""
    vocab_txt = tokenizer_source if tokenizer_source.is_file() else tokenizer_source / VOCAB_TXT
    if vocab_txt.exists():  # for tools that read vocab.txt (Google BERT, UER-py)
        shutil.copy(vocab_txt, out / VOCAB_TXT)
    if config.export_dataset:  # a DatasetDict: load_from_disk of dataset/ and of dataset/train both work
        from datasets import DatasetDict

        splits = {"train": built.train} | ({"eval": built.eval} if built.eval is not None else {})
        DatasetDict({name: data.to_dataset() for name, data in splits.items()}).save_to_disk(str(out / DATASET_DIR))
    settings = _settings(config, built, tokenizer_source, hf_model)
    (out / PRETRAINING_JSON).write_text(json.dumps(settings, indent=2, ensure_ascii=False), encoding="utf-8")
    return _metrics(summary, built, _check_saved(out, hf_model, collator, built))


def _tokenizer(inputs: dict[str, list[Path]]) -> tuple[Any, Path]:
    """The fast tokenizer from --tokenizer, else from --init; offsets are needed for word boundaries."""
    from transformers import AutoTokenizer, BertTokenizer

    given = inputs["tokenizer"] or inputs["init"]
    if not given:
        raise UserError("pretrain: needs --tokenizer (a vocab artifact: nlp-pipe vocab --kind bert ...) or --init (a checkpoint with its "
                        "tokenizer)")
    source = given[0]
    tokenizer: Any
    if source.is_file():  # a bare vocab.txt, e.g. Google's Chinese BERT vocabulary
        if source.suffix == ".json" or source.read_bytes()[:1] == b"{":
            raise UserError(f"pretrain: {source} is a tokenizer file, not a vocab.txt; pass the directory that holds it "
                            f"({source.parent})")
        # not BertTokenizerFast(vocab_file=): it ignores the file in transformers 5 (docs/library-notes.md)
        tokenizer, vocab_txt = BertTokenizer(vocab=str(source)), source
    elif (manifests.read_manifest(source) or {}).get("config", {}).get("kind") == "word":
        raise UserError(f"pretrain: {source} is a word vocabulary (vocab --kind word); BERT pretraining needs characters: "
                        f"nlp-pipe vocab --kind bert --corpus SEGMENTED --out DIR (or a BERT vocab.txt / checkpoint)")
    elif any((source / f).exists() for f in loading.TOKENIZER_FILES):
        tokenizer, vocab_txt = loading.load_tokenizer(source), source / VOCAB_TXT
    else:
        raise UserError(f"pretrain: {source} holds no tokenizer; make one with: nlp-pipe vocab --kind bert --corpus SEGMENTED --out DIR")
    if not tokenizer.is_fast or tokenizer.mask_token_id is None or tokenizer.cls_token_id is None:
        raise UserError(f"pretrain: {source} is not a fast BERT tokenizer with [CLS]/[SEP]/[MASK] (vocab --kind bert makes one)")
    if vocab_txt.exists():  # a tokenizer that silently lost its vocabulary would train on [UNK]
        empty_id = tokenizer.get_vocab().get("") if source.is_dir() else None  # a bare file: its lines are the table
        lines = _checked_vocab(vocab_txt, tokenizer.all_special_tokens, empty_id)
        if lines != len(tokenizer):
            raise UserError(f"pretrain: tokenizer in {source} has {len(tokenizer)} tokens but vocab.txt {lines}")
    init = inputs["init"][0] if inputs["init"] else None
    if init is not None and source != init and (init / "tokenizer.json").exists():
        if AutoTokenizer.from_pretrained(str(init)).get_vocab() != tokenizer.get_vocab():
            raise UserError(f"pretrain: the tokenizer {source} differs from the one saved with init {init}; leave out "
                            "--tokenizer to use the checkpoint's, or grow the checkpoint with the expand stage")
    return tokenizer, source


def _checked_vocab(vocab_txt: Path, specials: list[str], empty_id: int | None) -> int:
    """The line count of a vocab.txt once it is one distinct token a line holding the tokenizer's special tokens:
    the tokenizers read a blank line or a repeated token without a word (ids shift or alias) and add a missing
    special token past the end, so only the counts would disagree. A blank line beside a tokenizer.json is its own
    where its token at that id is '' (HF loaders read Google's U+2028 token so, and expand writes that table out)."""
    first: dict[str, int] = {}
    for number, token in enumerate(read_vocab(vocab_txt), start=1):
        if not token and number - 1 != empty_id:  # not token.strip(): U+2028 is a token of Google's vocabulary
            raise UserError(f"pretrain: {vocab_txt}: blank line {number}; a vocab.txt holds one token a line (a blank "
                            "line shifts the ids after it)")
        if token in first:
            raise UserError(f"pretrain: {vocab_txt}: duplicate token {token!r} at lines {first[token]} and {number}; each "
                            "token once (line number - 1 is its id)")
        first[token] = number
    missing = [t for t in specials if t not in first]
    if missing:
        raise UserError(f"pretrain: {vocab_txt}: {' '.join(missing)} missing; a BERT vocab.txt lists its special tokens "
                        "([PAD] [UNK] [CLS] [SEP] [MASK])")
    return len(first)


def _model(config: Config, inputs: dict[str, list[Path]], tokenizer: Any) -> Any:
    if inputs["init"]:
        if config.model_config or config.size != Config.size:
            option = "--model-config" if config.model_config else f"--size {config.size}"
            raise UserError(f"pretrain: {option} shapes a model from scratch; --init continues {inputs['init'][0]} "
                            "with its own shape. Give one of them")
        families.require(inputs["init"][0], NAME, "init")
        model = bert.load(inputs["init"][0], config.sentence_task, config.attention)
        loading.check_vocabulary(tokenizer, model, NAME, inputs["init"][0])
        return model
    bert_config = bert.new_config(config.size, config.model_config, len(tokenizer), config.max_seq_len, tokenizer.pad_token_id)
    return bert.create(bert_config, config.sentence_task, config.attention)


def _build_spec(config: Config, inputs: dict[str, list[Path]], tokenizer: Any) -> blocks_data.BuildSpec:
    read = blocks_data.read_options(config)
    block = BlockSpec(config.max_seq_len, config.sentence_task, config.seed, tokenizer.cls_token_id, tokenizer.sep_token_id)
    return blocks_data.BuildSpec(block, config.layout, read, _segmenter_spec(config, inputs), config.eval_docs, config.pair_sets)


def _segmenter_spec(config: Config, inputs: dict[str, list[Path]]) -> SegmenterSpec:
    """How raw text is cut for whole-word masking: with the user dictionary of the tokenizer's or the checkpoint's
    artifact when it has one (an expand artifact's new words are then masked whole, as its tokenizer emits them)."""
    for source in (*inputs["tokenizer"], *inputs["init"]):
        if source.is_dir() and (source / USERDICT_TXT).is_file():
            return SegmenterSpec(hmm=config.hmm, userdict=tuple(read_userdict(source / USERDICT_TXT)))
    return SegmenterSpec(hmm=config.hmm)


def _forward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 token_type_ids=batch["token_type_ids"], labels=batch["labels"], sentence_label=batch.get("sentence_label"))


def _summarizer(task: str):
    def summarize(sums: dict[str, float]) -> dict[str, float]:
        out = {"mlm_loss": sums["mlm_loss_sum"] / max(sums["mlm_count"], 1)}  # per masked token, not per batch
        if "mlm_correct" in sums:  # evaluation only
            out["mlm_accuracy"] = sums["mlm_correct"] / max(sums["mlm_count"], 1)
        if sums.get("sentence_count"):
            out[f"{task}_loss"] = sums["sentence_loss_sum"] / sums["sentence_count"]
            out[f"{task}_accuracy"] = sums["sentence_correct"] / sums["sentence_count"]
        return out

    return summarize


@torch.no_grad()
def _check_saved(out: Path, hf_model: Any, collator: MaskingCollator, built: blocks_data.Built) -> str:
    """Reload the artifact with the Auto classes and compare MLM logits with the trained model."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(out))
    reloaded = loading.load_model(AutoModelForMaskedLM, out).eval()  # quiet: the pooler/NSP weights it skips
    if len(tokenizer) != reloaded.config.vocab_size:
        raise RuntimeError(f"saved tokenizer has {len(tokenizer)} tokens, the model {reloaded.config.vocab_size}")
    data = built.eval if built.eval is not None else built.train
    batch = collator.mask(collator.collate(data[: min(4, len(data))]), np.random.default_rng(0))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    trained = hf_model.to("cpu").float().eval()
    mine = trained(**inputs)
    mine = mine.prediction_logits if hasattr(mine, "prediction_logits") else mine.logits  # BertForPreTraining names it so
    diff = (mine - reloaded(**inputs).logits).abs().max().item()
    if diff > 1e-4:
        raise RuntimeError(f"reloaded model's logits differ by {diff}")
    return f"AutoModelForMaskedLM reloads it; logits match (max diff {diff:.1e})"


def _metrics(summary: Summary, built: blocks_data.Built, check: str) -> dict[str, Any]:
    train = built.stats["train"]
    metrics = {"steps": summary.steps, "resumed_from_step": summary.resumed_from, "precision": summary.precision,
               "processes": summary.processes, "tokens_per_s": round(summary.tokens_per_s, 1),
               "padding_fraction": round(summary.padding_fraction, 5), "blocks": train["blocks"],
               "block_tokens": train["tokens"], "pair_blocks": train["pair_blocks"],
               "documents": built.stats["documents"], "data_cache_reused": built.reused, "reload_check": check}
    metrics.update({f"train_{k}": round(v, 4) for k, v in summary.last_train.items()})
    metrics.update({f"eval_{k}": round(v, 4) for k, v in summary.last_eval.items()})
    return metrics


def _settings(config: Config, built: blocks_data.Built, tokenizer_source: Path, hf_model: Any) -> dict[str, Any]:
    return {"objectives": {"mlm_probability": config.mlm_probability, "masking": config.masking,
                           "replacement": {"mask": config.mask_ratio, "random": config.random_ratio,
                                           "unchanged": round(1 - config.mask_ratio - config.random_ratio, 4)},
                           "sentence_task": config.sentence_task, "dynamic_masking": True},
            "word_labels": {"0": "word start", "1": "inside a word", "-1": "[CLS]/[SEP]/padding"},
            "model_class": type(hf_model).__name__, "tokenizer_source": str(tokenizer_source),
            "data": built.stats, "config": to_dict(config)}


def _report(config: Config, summary: Summary, built: blocks_data.Built, hf_model: Any) -> str:
    c = hf_model.config
    lines = ["## Pretraining",
             f"{type(hf_model).__name__}: {c.num_hidden_layers} layers x {c.hidden_size} hidden, vocabulary {c.vocab_size}, "
             f"{sum(p.numel() for p in hf_model.parameters()):,} parameters.",
             f"MLM ({config.masking} masking, {config.mlm_probability:.0%}) + {config.sentence_task}; {summary.steps} steps"
             f"{f' (resumed at step {summary.resumed_from})' if summary.resumed_from else ''}, {summary.processes} process(es), "
             f"{summary.arithmetic}; {summary.tokens_per_s:,.0f} real tokens/s, padding {summary.padding_fraction:.2%}.",
             f"Data: {built.stats['documents']} documents -> {built.stats['train']['blocks']} training blocks of "
             f"{config.max_seq_len} ({built.stats['train']['pair_blocks']} sentence pairs"
             f"{f', {config.pair_sets} pair sets' if config.sentence_task != 'none' else ''}); cache {built.cache_dir}.",
             *(f"Read: {notice}." for notice in built.stats.get("notices", [])),
             "", "| split | " + " | ".join(summary.last_eval or summary.last_train) + " |",
             "| --- |" + " --- |" * len(summary.last_eval or summary.last_train)]
    for split, values in (("train", summary.last_train), ("eval", summary.last_eval)):
        if values:
            cells = [f"{values[k]:.4f}" if k in values else "-" for k in (summary.last_eval or summary.last_train)]
            lines.append(f"| {split} | " + " | ".join(cells) + " |")
    lines += ["", "![training curves](training_curves.png)"]
    return "\n".join(lines)
