"""Stage `pretrain` on tiny models: the artifact loads with the Auto classes, loss falls, resume is exact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
import torch
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer, BertConfig, BertForPreTraining, BertModel, BertTokenizer

from conftest import FIXTURES, VENV_BIN, build, die_after_first_checkpoint, run_cli
from nlp_pipe import runner
from nlp_pipe.core.errors import UserError
from nlp_pipe.models import bert_pretraining as bert
from nlp_pipe.stages import pretrain

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 64}


@pytest.fixture(scope="module")
def bert_vocab(seg_news, seg_reviews, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain") / "bert_vocab"
    build("vocab", out, {"corpus": [seg_news, seg_reviews]}, kind="bert", min_freq=1)
    return out


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pretrain") / "tiny.json"
    path.write_text(json.dumps(TINY), encoding="utf-8")
    return path


@pytest.fixture
def settings(tiny_config) -> dict:
    """A tiny model on news.txt (blank-line documents) + reviews: ~150 blocks of 64, a few seconds."""
    return {"model_config": str(tiny_config), "max_seq_len": 64, "steps": 20, "batch_size": 8, "lr": 5e-3,
            "warmup": 0.1, "log_every": 5, "eval_every": 10, "save_every": 10, "eval_docs": 2, "precision": "fp32",
            "num_proc": 1, "seed": 3}


def corpus(seg_reviews) -> list[Path]:
    return [FIXTURES / "news.txt", seg_reviews]


def records(artifact: Path, split: str) -> list[dict]:
    rows = [json.loads(line) for line in (artifact / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return [{k: v for k, v in r.items() if k not in ("step_s", "tokens_per_s", "split")} for r in rows if r["split"] == split]


def test_artifact_loads_with_auto_classes_and_round_trips(tmp_path, bert_vocab, seg_reviews, settings):
    out = tmp_path / "bert"
    manifest = build("pretrain", out, {"corpus": corpus(seg_reviews), "tokenizer": bert_vocab}, **settings, report_to="tensorboard")
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["architectures"] == ["BertForPreTraining"]
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == config["vocab_size"] == len((bert_vocab / "vocab.txt").read_text(encoding="utf-8").splitlines())
    model = AutoModelForMaskedLM.from_pretrained(out).eval()
    inputs = tokenizer(["今天天气很好，我们去[MASK]园。"], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
        model.save_pretrained(tmp_path / "again")
        again = AutoModelForMaskedLM.from_pretrained(tmp_path / "again").eval()(**inputs).logits
        hidden = AutoModel.from_pretrained(out)(**inputs).last_hidden_state
    assert torch.equal(logits, again)
    assert hidden.shape == (1, inputs["input_ids"].shape[1], TINY["hidden_size"])
    metrics = manifest["metrics"]
    assert metrics["steps"] == 20 and metrics["padding_fraction"] < 0.02 and metrics["pair_blocks"] > 0
    assert "logits match" in metrics["reload_check"]
    for name in ("metrics.jsonl", "training_curves.png", "pretraining.json", "vocab.txt", "report.md"):
        assert (out / name).is_file(), name
    assert list((out / "tracking").rglob("events.out.tfevents.*"))
    assert not (tmp_path / "bert.checkpoints").exists()  # removed once the artifact was published
    assert manifest["counts"]["rows_out"] > 0


def test_loss_decreases_and_mlm_only_gives_masked_lm(tmp_path, bert_vocab, seg_reviews, settings):
    out = tmp_path / "mlm"
    build("pretrain", out, {"corpus": corpus(seg_reviews), "tokenizer": bert_vocab},
          **{**settings, "steps": 60, "eval_every": 20, "sentence_task": "none", "masking": "token", "save_every": 0})
    evals = records(out, "eval")
    assert [r["step"] for r in evals] == [0, 20, 40, 60]
    assert evals[-1]["mlm_loss"] < 0.9 * evals[0]["mlm_loss"]  # ln(vocab) -> below the unigram level
    train = records(out, "train")
    assert train[-1]["mlm_loss"] < train[0]["mlm_loss"]
    assert json.loads((out / "config.json").read_text(encoding="utf-8"))["architectures"] == ["BertForMaskedLM"]


def test_resume_after_a_kill_continues_exactly(tmp_path, bert_vocab, seg_reviews, settings, monkeypatch):
    inputs = {"corpus": corpus(seg_reviews), "tokenizer": bert_vocab}
    build("pretrain", tmp_path / "whole", inputs, **settings)
    die_after_first_checkpoint(monkeypatch)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        build("pretrain", out, inputs, **settings)
    assert (tmp_path / "killed.checkpoints" / "step_000010").is_dir() and not out.exists()
    position = json.loads((tmp_path / "killed.checkpoints" / "step_000010" / "data_position.json").read_text())
    assert position["step"] == 10 and position["micro_batches"] == 10
    monkeypatch.undo()
    manifest = build("pretrain", out, inputs, **settings)
    assert manifest["metrics"]["resumed_from_step"] == 10 and manifest["metrics"]["steps"] == 20
    assert manifest["metrics"]["data_cache_reused"]
    for split in ("train", "eval"):  # the resumed run logs what the uninterrupted one logged, no jump
        whole, resumed = records(tmp_path / "whole", split), records(out, split)
        assert [r["step"] for r in resumed] == [r["step"] for r in whole]
        for a, b in zip(whole, resumed):
            assert a == pytest.approx(b, rel=1e-4), (split, a["step"])
    assert not (tmp_path / "killed.checkpoints").exists()


def test_changed_settings_refuse_to_resume(tmp_path, bert_vocab, seg_reviews, settings, monkeypatch):
    inputs = {"corpus": corpus(seg_reviews), "tokenizer": bert_vocab}
    die_after_first_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        build("pretrain", tmp_path / "bert", inputs, **settings)
    monkeypatch.undo()
    with pytest.raises(UserError, match=r"other settings \(lr: 0.005 -> 0.001\).*--no-resume"):
        build("pretrain", tmp_path / "bert", inputs, **{**settings, "lr": 1e-3})
    manifest = build("pretrain", tmp_path / "bert", inputs, **{**settings, "lr": 1e-3, "resume": False})
    assert manifest["metrics"]["resumed_from_step"] == 0


def test_continued_pretraining_from_init_uses_its_tokenizer(tmp_path, bert_vocab, seg_reviews, settings):
    first = tmp_path / "first"
    build("pretrain", first, {"corpus": corpus(seg_reviews), "tokenizer": bert_vocab}, **{**settings, "steps": 10})
    second = tmp_path / "second"
    with pytest.raises(UserError, match="--init continues .* with its own shape"):  # was silently ignored
        build("pretrain", second, {"corpus": [FIXTURES / "news.txt"], "init": first}, **{**settings, "steps": 10})
    manifest = build("pretrain", second, {"corpus": [FIXTURES / "news.txt"], "init": first},
                     **{**settings, "model_config": "", "steps": 10, "sentence_task": "none", "export_dataset": True})
    # a pretrain artifact holds its tokenizer: --tokenizer takes it as --help says (the runner refused it)
    assert runner.plan("pretrain", settings, {"corpus": [FIXTURES / "news.txt"], "tokenizer": first}, tmp_path / "third")
    assert pretrain._tokenizer({"tokenizer": [first], "init": []})[0].get_vocab() == AutoTokenizer.from_pretrained(first).get_vocab()
    assert manifest["metrics"]["steps"] == 10
    exported = datasets.load_from_disk(str(second / "dataset" / "train"))
    assert list(datasets.load_from_disk(str(second / "dataset"))) == ["train", "eval"]  # a DatasetDict
    assert set(exported.column_names) == {"input_ids", "token_type_ids", "word_labels", "sentence_label"}
    assert {-1, 0, 1} == set(exported[0]["word_labels"])
    start = AutoModelForMaskedLM.from_pretrained(first).bert.encoder.layer[0].output.dense.weight
    after = AutoModelForMaskedLM.from_pretrained(second).bert.encoder.layer[0].output.dense.weight
    assert start.shape == after.shape and not torch.equal(start, after)


def test_user_mistakes_are_one_line_errors(tmp_path, bert_vocab, seg_reviews, tiny_config):
    news = FIXTURES / "news.txt"
    result = run_cli("pretrain", "--corpus", news, "--out", tmp_path / "x")
    assert result.code == 2 and "--tokenizer" in result.err_lines[-1]
    result = run_cli("pretrain", "--corpus", news, "--tokenizer", bert_vocab, "--out", tmp_path / "x",
                     "--mask-ratio", "0.95", "--random-ratio", "0.1")
    assert result.code == 2 and "mask_ratio + random_ratio" in result.err_lines[-1]
    result = run_cli("pretrain", "--corpus", news, "--tokenizer", FIXTURES, "--out", tmp_path / "x")
    assert result.code == 2 and "holds no tokenizer" in result.err_lines[-1]
    result = run_cli("pretrain", "--corpus", news, "--tokenizer", bert_vocab, "--out", tmp_path / "x",
                     "--model-config", tiny_config, "--max-seq-len", "64", "--batch-size", "512", "--steps", "1", "--num-proc", "1")
    assert result.code == 2 and "do not fill one batch" in result.err_lines[-1]


def test_a_bad_vocab_txt_says_what_is_wrong(tmp_path, bert_vocab):
    """BertTokenizer reads a repeated token, a blank line or a missing [MASK] without a word; only the token counts
    disagreed ("tokenizer has N tokens but vocab.txt M"), as they did for a tokenizer.json given as a vocab.txt."""
    tokens = (bert_vocab / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]

    def error(lines: list[str], name: str = "vocab.txt") -> str:
        path = tmp_path / name
        path.write_text("".join(t + "\n" for t in lines), encoding="utf-8")
        with pytest.raises(UserError) as caught:
            pretrain._tokenizer({"tokenizer": [path], "init": []})
        return str(caught.value)

    assert f"duplicate token '{tokens[10]}' at lines 11 and {len(tokens) + 1}" in error([*tokens, tokens[10]])
    assert "blank line 8;" in error([*tokens[:7], "", *tokens[7:]])
    assert "[MASK] missing" in error([t for t in tokens if t != "[MASK]"])
    assert "pass the directory that holds it" in error(
        (bert_vocab / "tokenizer.json").read_text(encoding="utf-8").splitlines(), "tokenizer.json")
    (tmp_path / "good.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    assert len(pretrain._tokenizer({"tokenizer": [tmp_path / "good.txt"], "init": []})[0]) == len(tokens)
    # beside a tokenizer.json, a blank line where the tokenizer's own token is '' is its table (HF reads Google's
    # U+2028 token, id 343, as ''; expand writes that table out)
    google = tmp_path / "google"
    table = BertTokenizer(vocab=str(FIXTURES / "bert_zh" / "vocab.txt"))
    table.save_pretrained(google)
    (google / "vocab.txt").write_text("".join(t + "\n" for t in table.convert_ids_to_tokens(list(range(len(table))))),
                                      encoding="utf-8")
    assert (google / "vocab.txt").read_text(encoding="utf-8").split("\n")[343] == ""
    assert len(pretrain._tokenizer({"tokenizer": [google], "init": []})[0]) == 21128


def _cli(*args) -> list[str]:
    return [str(a) for a in args]


def _stage_args(out: Path, vocab: Path, config: Path, steps: int) -> list[str]:
    return _cli("pretrain", "--corpus", FIXTURES / "news.txt", "--corpus", FIXTURES / "reviews.tsv", "--tokenizer", vocab,
                "--out", out, "--model-config", config, "--max-seq-len", 64, "--batch-size", 8, "--steps", steps,
                "--save-every", 10, "--eval-every", 0, "--eval-docs", 2, "--num-proc", 1, "--precision", "fp32")


@pytest.mark.slow
def test_killed_process_resumes_from_last_checkpoint(tmp_path, bert_vocab, tiny_config):
    out = tmp_path / "bert"
    args = [sys.executable, "-m", "nlp_pipe", *_stage_args(out, bert_vocab, tiny_config, 400)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((tmp_path / "bert.checkpoints").glob("step_*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and list((tmp_path / "bert.checkpoints").glob("step_*"))
    subprocess.run(args, env=env, check=True, capture_output=True)
    metrics = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["metrics"]
    assert metrics["steps"] == 400 and metrics["resumed_from_step"] >= 10


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["--cpu", "--multi_gpu"])
def test_accelerate_launch_two_processes(tmp_path, bert_vocab, tiny_config, mode):
    """`accelerate launch --cpu --num_processes 2` starts ONE process unless an MPI hostfile is given
    (accelerate 1.15's simple launcher); `--multi_gpu` runs torchrun, which on a machine without
    CUDA gives two gloo CPU processes (the Trainer passes cpu=True to accelerate there)."""
    if mode == "--multi_gpu" and torch.cuda.device_count() == 1:
        pytest.skip("one GPU: torchrun would put two processes on it")
    out = tmp_path / "bert"
    launch = [str(VENV_BIN / "accelerate"), "launch", mode, "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "nlp_pipe"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launch, *_stage_args(out, bert_vocab, tiny_config, 20)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["metrics"]
    assert metrics["processes"] == {"--cpu": 1, "--multi_gpu": 2}[mode] and metrics["steps"] == 20
    assert AutoModelForMaskedLM.from_pretrained(out).config.hidden_size == TINY["hidden_size"]
    assert not (tmp_path / "bert.checkpoints").exists()


def test_two_outs_share_one_cache_build_and_cache_ls_rm_free_it(tmp_path, bert_vocab, seg_reviews, settings):
    """The tokenised corpus is built once in the shared cache beside the --outs; another --out reuses it;
    `nlp-pipe cache ls` shows it with what built it, `cache rm KEY` frees it, `rm --all` also a killed build's leftovers."""
    inputs = {"corpus": corpus(seg_reviews), "tokenizer": bert_vocab}
    quick = {**settings, "steps": 2, "eval_every": 0, "save_every": 0}
    first = build("pretrain", tmp_path / "a", inputs, **quick)
    second = build("pretrain", tmp_path / "b", inputs, **{**quick, "lr": 1e-3})
    assert not first["metrics"]["data_cache_reused"] and second["metrics"]["data_cache_reused"]
    root = tmp_path / "nlp_pipe_cache"
    (entry,) = (root / "pretraining").iterdir()
    assert first["data_cache"] == second["data_cache"] == str(entry)
    listed = run_cli("cache", "ls", "--dir", root)
    assert listed.code == 0 and entry.name in listed.out and "news.txt" in listed.out and " MB" in listed.out
    removed = run_cli("cache", "rm", entry.name[:6], "--dir", root)
    assert removed.code == 0 and not entry.exists() and "removed 1 entry," in removed.out
    (root / "pretraining" / f".{entry.name}.tmp-4242").mkdir()  # a SIGKILLed build's leftovers
    assert "(unfinished)" in run_cli("cache", "ls", "--dir", root).out
    assert run_cli("cache", "rm", "--all", "--dir", root).code == 0 and not any((root / "pretraining").iterdir())
    assert run_cli("cache", "rm", "--dir", root).code == 2  # neither keys nor --all: a one-line error
    mistyped = run_cli("cache", "ls", "--dir", root / "nope")  # looked like an empty cache
    assert mistyped.code == 2 and "is not a directory" in mistyped.err_lines[0]


def test_raw_text_masks_with_the_init_artifacts_user_dictionary(tmp_path, bert_vocab):
    """pretrain --init EXPAND --corpus raw.txt: jieba cuts with the expansion's jieba_userdict.txt (its new words are
    masked whole, as its tokenizer emits them), not jieba's default dictionary alone."""
    init = tmp_path / "expanded"
    init.mkdir()
    (init / "jieba_userdict.txt").write_text("自然语言处理模型 5\n", encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(bert_vocab)
    spec = pretrain._build_spec(pretrain.Config(), {"tokenizer": [], "init": [init], "corpus": []}, tokenizer)
    assert spec.segmenter.userdict == (("自然语言处理模型", 5),)
    assert pretrain._build_spec(pretrain.Config(), {"tokenizer": [bert_vocab], "init": [], "corpus": []},
                                tokenizer).segmenter.userdict == ()


def test_init_without_pretraining_heads_is_warned(tmp_path, caplog):
    """An encoder-only checkpoint (a distill student) continued with MLM + SOP: its heads start from random
    weights, said in one warning line (was silent); a full pretraining checkpoint warns nothing."""
    config = BertConfig(vocab_size=50, **TINY)
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "student")
    BertForPreTraining(config).save_pretrained(tmp_path / "full")
    mine = lambda: [r for r in caplog.records if r.name == bert.__name__]  # noqa: E731
    with caplog.at_level("WARNING", logger=bert.__name__):
        bert.load(tmp_path / "full", "sop", "eager")
        assert not mine()
        bert.load(tmp_path / "student", "sop", "eager")
    (record,) = mine()
    assert "has no MLM head and no sop head and no pooler: they start from random weights" in record.getMessage()


def test_cache_ls_without_dir_points_at_the_caches_of_pipeline_workdirs(tmp_path, monkeypatch):
    """A pipeline keeps its cache in its workdir (runs/NAME/nlp_pipe_cache): `cache ls` without --dir looked in
    runs/nlp_pipe_cache only and said "empty" while runs/demo's cache held entries."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NLP_PIPE_CACHE", raising=False)
    entry = tmp_path / "runs" / "demo" / "nlp_pipe_cache" / "pretraining" / "abc123"
    entry.mkdir(parents=True)
    (entry / "stats.json").write_text('{"built_for": {"inputs": ["news.txt"]}}', encoding="utf-8")
    (tmp_path / "runs" / "other" / "nlp_pipe_cache").mkdir(parents=True)  # empty: not listed
    listed = run_cli("cache", "ls")
    assert listed.code == 0 and "runs/nlp_pipe_cache: empty" in listed.out
    assert "runs/demo/nlp_pipe_cache: 1 entry" in listed.out and "--dir runs/demo/nlp_pipe_cache" in listed.out
    assert "runs/other" not in listed.out
