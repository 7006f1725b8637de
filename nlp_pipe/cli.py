"""`nlp-pipe`: one sub-command per stage, plus run / status / inspect / stages.

    nlp-pipe run pipelines/demo.yaml            run a pipeline, skipping fresh stages
    nlp-pipe status pipelines/demo.yaml         what would run, and why
    nlp-pipe segment --corpus a.txt --out runs/seg   run one stage by hand
    nlp-pipe inspect runs/demo/segment           manifest summary, file hashes checked

Stage flags are generated from each stage's typed config, the same dataclass the
pipeline YAML is validated against. Mistakes a user can fix print one line and exit 2.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import click
import yaml

from . import __version__, runner, stages
from . import pipeline as pipelines
from .core import artifacts, console, distributed, process
from .core import cache as cache_store
from .core import config as configs
from .core import manifest as manifests
from .core.errors import SaidByMainRank, UserError, did_you_mean

log = logging.getLogger("nlp_pipe")


class StageGroup(click.Group):
    """Adds one lazily built sub-command per registered stage."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(super().list_commands(ctx)) + list(stages.STAGES)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in stages.STAGES:
            return _stage_command(name)
        return super().get_command(ctx, name)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in stages.STAGES and name not in self.commands:
            # click's own message suggests only the built-in commands, never a stage name
            raise click.UsageError(f"No such command '{name}'{did_you_mean(name, self.list_commands(ctx))}.", ctx)
        # a stage's module is imported here (torch for a training stage: seconds), before click has parsed --out: a
        # Ctrl-C meanwhile names the checkpoint a rerun resumes from, as it does later
        with runner.naming_checkpoints(_out_argument(args) if name in stages.STAGES else []):
            return super().resolve_command(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        own = [(n, self.commands[n].get_short_help_str(60)) for n in sorted(self.commands)]
        with formatter.section("Commands"):
            formatter.write_dl(own)
        with formatter.section("Stages (nlp-pipe STAGE --help)"):
            formatter.write_dl([(n, "") for n in stages.STAGES])


@click.group(cls=StageGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="nlp-pipe")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging, the libraries' own output, full tracebacks.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors: no stage lines, no progress bars.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="warning", show_default=True,
              help="What else reaches the terminal beside the stage lines; stage.log always keeps INFO.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, quiet: bool, log_level: str) -> None:
    """Chinese text pipeline: segmentation, vocabularies, vectors, BERT pretraining, classifiers."""
    ctx.obj = {"verbose": verbose}
    console.configure(log_level, quiet=quiet, verbose=verbose)


def _out_argument(args: list[str]) -> list[Path]:
    """The --out a stage command was given, read from its raw arguments (click parses them only after the stage's
    module, which declares the options, is imported)."""
    for flag, value in zip(args, [*args[1:], ""]):
        if flag == "--out" and value:
            return [Path(value)]
        if flag.startswith("--out="):
            return [Path(flag[len("--out="):])]
    return []


def _pipeline_options(fn):
    fn = click.option("--var", "variables", multiple=True, metavar="KEY=VALUE", help="Override a pipeline var (value parsed as YAML).")(fn)
    fn = click.option("--set", "overrides", multiple=True, metavar="STAGE.KEY=VALUE", help="Override one stage config value.")(fn)
    fn = click.option("--workdir", default=None, help="Write artifacts under this directory instead of the file's workdir.")(fn)
    return click.argument("pipeline_file", type=click.Path(dir_okay=False))(fn)


def _load_pipeline(pipeline_file: str, variables: tuple[str, ...], overrides: tuple[str, ...], workdir: str | None):
    parsed_vars = {k: pipelines.from_command_line(v) for k, v in (_key_value(item, "--var") for item in variables)}
    parsed_sets: dict[str, dict[str, Any]] = {}
    for item in overrides:
        key, value = _key_value(item, "--set")
        stage, _, field = key.partition(".")
        if not field:
            raise UserError(f"--set {item}: expected STAGE.KEY=VALUE")
        parsed_sets.setdefault(stage, {})[field] = value
    return pipelines.load(pipeline_file, parsed_vars, parsed_sets, workdir)


def _key_value(item: str, flag: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise UserError(f"{flag} {item}: expected KEY=VALUE")
    try:
        parsed = yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip(), ([] if parsed is None else parsed)


@cli.command()
@_pipeline_options
@click.option("--only", multiple=True, help="Run only these stages (repeatable).")
@click.option("--from", "start", default=None, help="Run this stage and every stage after it.")
@click.option("--force", is_flag=True,
              help="Rebuild the selected stages even when fresh (and discard checkpoints a run with other settings left).")
def run(pipeline_file, variables, overrides, workdir, only, start, force) -> None:
    """Run a pipeline file: every stage whose artifact is missing or stale."""
    pipe = _load_pipeline(pipeline_file, variables, overrides, workdir)
    selected = pipe.select(list(only), start)
    with runner.naming_checkpoints([step.out for step in selected]):  # Ctrl-C while planning too
        rows = _run_steps(pipe, selected, force)
    if not distributed.is_main():  # under a launch the table is the main rank's
        return
    _table(["stage", "status", "time", "artifact"], rows)
    click.echo(f"\nartifacts in {pipe.workdir}/ (nlp-pipe inspect DIR shows one)")


def _run_steps(pipe: pipelines.Pipeline, selected: list[pipelines.Step], force: bool) -> list[tuple]:
    """Plan and run the selected steps; a row of `run`'s table for each."""
    # planned once, before any work starts (every config and reference checked), each step against what the
    # steps before it will produce. A step is planned again (against the disk) only when an upstream artifact is
    # not the planned one: left out by --only/--from while stale, changed or missing (plan_now says what to run),
    # or itself planned again. A step fresh as planned whose upstream was left out is skipped without that: it
    # already holds what the planned upstream artifacts give (as `status` says), even where one is missing now
    planned = {step.name: plan for step, plan in zip(pipe.steps, pipe.plans())}
    as_planned = {name for name, plan in planned.items() if plan.fresh}
    replanned: set[str] = set()
    rows = []
    for step in selected:
        plan = planned[step.name]
        if any(up not in as_planned for up in step.upstream) and (force or not plan.fresh or replanned & set(step.upstream)):
            plan = pipe.plan_now(step)
            as_planned.discard(step.name)
            replanned.add(step.name)
        else:
            as_planned.add(step.name)  # fresh, or about to be built as planned
        if runner.skipped(plan, force):
            _say(f"[{step.name}] fresh, skipped ({plan.out})")
            rows.append((step.name, "skipped (fresh)", "", plan.out))
            continue
        _say(f"[{step.name}] running: {'forced' if force and plan.fresh else plan.reason}")
        t0 = time.perf_counter()
        runner.execute(plan, force=force)
        rows.append((step.name, "ran", f"{time.perf_counter() - t0:.1f}s", plan.out))
    return rows


@cli.command()
@_pipeline_options
def status(pipeline_file, variables, overrides, workdir) -> None:
    """Say which stages of a pipeline would run, and why."""
    pipe = _load_pipeline(pipeline_file, variables, overrides, workdir)
    # an artifact changed on disk since it was written is rebuilt only with --force (run refuses it without)
    rows = [(p.stage if s.name == p.stage else f"{s.name} ({p.stage})",
             "fresh" if p.fresh else "needs --force" if p.changed else "will run", p.reason, p.out)
            for s, p in zip(pipe.steps, pipe.plans())]
    _table(["stage", "status", "reason", "artifact"], rows)


@cli.command()
@click.argument("artifact_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
def inspect(artifact_dir: str, as_json: bool) -> None:
    """Summarise an artifact's manifest and check its files against the recorded hashes."""
    manifest = manifests.require_manifest(artifact_dir, "Is this an nlp-pipe artifact directory?")
    problems = manifests.verify(artifact_dir)
    if as_json:
        click.echo(json.dumps(manifest, indent=2, ensure_ascii=False))
    else:
        counts = manifest.get("counts") or {}
        click.echo(f"stage:       {manifest['stage']} (version {manifest.get('stage_version')})")
        click.echo(f"fingerprint: {manifest.get('fingerprint')}")
        click.echo(f"finished:    {manifest.get('finished')} ({manifest.get('wall_time_s')} s on {manifest.get('device')})")
        for name, info in manifest.get("inputs", {}).items():
            for path in info.get("paths", []):
                click.echo(f"input:       {name} = {path}")
        click.echo("config:      " + ", ".join(f"{k}={v}" for k, v in manifest.get("config", {}).items()))
        if counts:
            click.echo(f"rows:        {counts.get('rows_in')} in, {counts.get('rows_out')} out, dropped {counts.get('dropped') or {}}")
        for key, value in (manifest.get("metrics") or {}).items():
            click.echo(f"metric:      {key} = {value}")
        files = manifest.get("files", [])
        click.echo(f"files:       {len(files)} ({sum(f['bytes'] for f in files):,} bytes)")
        for f in files:
            click.echo(f"  {f['name']:40s} {f['bytes']:>12,}  {f['sha256'][:12]}")
    click.echo("hashes:      " + ("all files match the manifest" if not problems else "; ".join(problems)), err=as_json)
    if problems:
        sys.exit(1)


@cli.group()
def cache() -> None:
    """Show and free the shared cache (tokenised pretraining corpora, reused by every run with the same inputs)."""


def _cache_option(fn):
    return click.option("--dir", "folder", default=None, metavar="DIR",
                        help=f"The cache folder (default: ${artifacts.CACHE_ENV}, else runs/{artifacts.CACHE_DIR}: the one of "
                             "artifacts written under runs/).")(fn)


def _cache_root(folder: str | None) -> Path:
    root = artifacts.cache_dir(Path("runs") / "any", folder or "")
    if folder and not Path(folder).is_dir():  # a mistyped --dir looked like an empty cache
        raise UserError(f"cache: --dir {folder} is {'a file' if Path(folder).exists() else 'not a directory'}; "
                        "give the cache folder (the `cache_dir` of your runs, or $" + artifacts.CACHE_ENV + ")")
    return root


@cache.command(name="ls")
@_cache_option
def cache_ls(folder) -> None:
    """List the cache's entries: kind, key, size, what built them and when."""
    root = _cache_root(folder)
    found = cache_store.entries(root)
    if not found:
        click.echo(f"{root}: empty")
        if not folder and not os.environ.get(artifacts.CACHE_ENV):  # a pipeline keeps its cache in its own workdir
            for other in sorted(root.parent.glob(f"*/{artifacts.CACHE_DIR}")):
                with contextlib.suppress(UserError):  # a folder of that name that is not a cache is not listed
                    if listed := cache_store.entries(other):
                        click.echo(f"{other}: {len(listed)} {'entry' if len(listed) == 1 else 'entries'}, "
                                   f"{sum(e.bytes for e in listed) / 1e6:,.1f} MB (nlp-pipe cache ls --dir {other})")
        return
    _table(["kind", "key", "size", "built", "inputs"],
           [(e.kind, e.key if e.complete else f"{e.key} (unfinished)", f"{e.bytes / 1e6:,.1f} MB", e.built_for.get("built_at", "-"),
             ", ".join(e.built_for.get("inputs", [])) or "-") for e in found])
    click.echo(f"\n{root}: {sum(e.bytes for e in found) / 1e6:,.1f} MB in {len(found)} {'entry' if len(found) == 1 else 'entries'}")


@cache.command(name="rm")
@click.argument("keys", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Remove every entry (and the leftovers of killed builds).")
@_cache_option
def cache_rm(keys, everything, folder) -> None:
    """Remove cache entries by key (or a key's first characters); a later run rebuilds what it needs."""
    root = _cache_root(folder)
    gone = cache_store.remove(root, list(keys), everything)
    click.echo(f"removed {len(gone)} {'entry' if len(gone) == 1 else 'entries'}, {sum(e.bytes for e in gone) / 1e6:,.1f} MB, "
               f"from {root}")


@cli.command(name="stages")
def list_stages() -> None:
    """List the stages with their inputs."""
    for name in stages.STAGES:
        module = stages.load(name)
        doc = (module.__doc__ or "").strip().splitlines()[0]
        click.echo(f"{name:16s} {doc}")
        for input_name, spec in module.INPUTS.items():
            click.echo(f"  --{input_name.replace('_', '-'):14s} {spec.help}{'' if spec.required else ' (optional)'}")


@cli.command()
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.option("--text", "texts", multiple=True, help="A text to classify (repeatable).")
@click.option("--file", "file", default=None, help="A text file, one text a line ('-' = stdin); UTF-8 or GB18030/GBK.")
@click.option("--encoding", default="auto", show_default=True, help="Encoding of --file; auto detects UTF-8 and GB18030/GBK.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines with every class probability.")
@click.option("--batch-size", default=64, show_default=True, help="Texts per forward pass.")
@click.option("--int8", is_flag=True, help="Use the int8 model of a distill artifact made with --quantize int8 (CPU).")
@click.option("--compile", "compiled", is_flag=True,
              help="torch.compile a BERT classifier: ~20 s of compiling first, then 1.17x on CPU (docs/performance.md); "
                   "for large inputs only.")
def predict(model_dir: str, texts: tuple[str, ...], file: str | None, encoding: str, as_json: bool, batch_size: int,
            int8: bool, compiled: bool) -> None:
    """Classify texts with a textcnn, baseline, finetune or distill artifact or an export: label and probability per line."""
    from . import predict as prediction

    items = prediction.read_texts(texts, file, encoding)
    clf = prediction.TextClassifier.load(model_dir, int8, compiled)
    for record in prediction.predict(clf, items, batch_size):
        if as_json:
            click.echo(json.dumps(record, ensure_ascii=False))
        else:
            click.echo(f"{record['label']}\t{record['probability']:.4f}\t{record['text']}")


@cli.command()
@click.argument("model_dir", metavar="ARTIFACT_OR_EXPORT", type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; 0.0.0.0 exposes it to the network.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="TCP port.")
@click.option("--api-key", envvar="NLP_PIPE_API_KEY", default=None, help="Require this key on /predict and /metadata "
              "(Authorization: Bearer KEY or X-API-Key: KEY); env NLP_PIPE_API_KEY.")
@click.option("--max-texts", default=64, show_default=True, help="Texts per request.")
@click.option("--max-chars", default=2000, show_default=True, help="Characters per text.")
@click.option("--max-body", default=1 << 20, show_default=True, help="Bytes per request body.")
@click.option("--max-queue", default=1024, show_default=True, help="Texts waiting or being classified, at least --max-texts; more get 503.")
@click.option("--batch-size", default=0, show_default=True,
              help="Texts per model call, the gathered texts sorted by length; 0 = 4 for a BERT, 64 for others.")
@click.option("--gather", default=64, show_default=True, help="Texts gathered from the queue before they are sorted and classified.")
@click.option("--max-wait-ms", default=2.0, show_default=True, help="How long a text waits for others to share its batch.")
@click.option("--workers", default=0, show_default=True,
              help="Model calls at once, each on cores / workers threads; 0 = one per core (throughput), 1 = lowest latency.")
@click.option("--body-timeout", default=10.0, show_default=True, help="Seconds a request body may take to arrive; then 408.")
def serve(model_dir: str, host: str, port: int, api_key: str | None, max_texts: int, max_chars: int, max_body: int,
          max_queue: int, batch_size: int, gather: int, max_wait_ms: float, workers: int, body_timeout: float) -> None:
    """Serve a classifier (an export or a classifier artifact) over HTTP: POST /predict, GET /health, GET /metadata."""
    from . import serving

    limits = serving.Limits(max_texts, max_chars, max_body, max_queue, batch_size, gather, max_wait_ms, workers, body_timeout)
    serving.serve(model_dir, host, port, limits, api_key)


@cli.command(name="word2vec-eval")
@click.argument("vectors_path", metavar="VECTORS", type=click.Path())
@click.option("--analogy", type=click.Path(dir_okay=False), help="Analogy questions: `: section` lines, then `a b c d` (e.g. "
              "vocab/analogy_zh.txt).")
@click.option("--similarity", type=click.Path(dir_okay=False),
              help="Word pairs: `word1 word2 score` a line (e.g. vocab/similarity_zh.txt).")
@click.option("--restrict-vocab", default=300_000, show_default=True,
              help="Only the N most frequent words ask and answer (gensim's default).")
@click.option("--case-sensitive", is_flag=True, help="Compare words as written (gensim upper-cases both sides by default).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result (eval.json's format) as JSON.")
def word2vec_eval(vectors_path: str, analogy: str | None, similarity: str | None, restrict_vocab: int,
                  case_sensitive: bool, as_json: bool) -> None:
    """Evaluate word vectors (a word2vec/import-vectors artifact, or a word2vec text file, plain or .bz2)."""
    from .vectors import evaluation, store

    if not analogy and not similarity:
        raise UserError("word2vec-eval: give --analogy FILE and/or --similarity FILE (shipped: vocab/analogy_zh.txt, "
                        "vocab/similarity_zh.txt)")
    kv = store.load_keyed_vectors(vectors_path)
    result = evaluation.evaluate(kv, analogy, similarity, restrict_vocab=restrict_vocab, case_insensitive=not case_sensitive)
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    click.echo(f"{vectors_path}: {len(kv):,} words x {kv.vector_size} dimensions")
    for header, rows in evaluation.eval_tables(result):
        click.echo()
        _table(header, rows)


def _stage_command(name: str) -> click.Command:
    module = stages.load(name)
    params: list[click.Parameter] = [
        click.Option(["--out"], required=True, type=click.Path(file_okay=False), help="Artifact directory to write."),
        click.Option(["--force"], is_flag=True,
                     help="Rebuild even when the artifact is fresh (and discard checkpoints a run with other settings left)."),
        click.Option(["--config", "config_file"], type=click.Path(dir_okay=False), default=None,
                     help="YAML file of this stage's inputs and options (flags given here override it); an artifact's "
                          "stage_config.yaml reruns that stage"),
    ]
    positional: str = getattr(module, "POSITIONAL", "")  # an input that may also come as the one argument
    if positional:
        params.insert(0, click.Argument(["positional_input"], required=False, metavar=positional.upper()))
    for input_name, spec in module.INPUTS.items():
        flag = f"--{input_name.replace('_', '-')}"
        again = f" (repeatable: {flag} A {flag} B)" if spec.multiple else ""
        params.append(click.Option([flag, input_name], multiple=spec.multiple, metavar="PATH",
                                   help=f"{spec.help}{again}{'' if spec.required else ' [optional]'}"))
    for f in configs.fields(module.Config):
        flag = f"--{f.name.replace('_', '-')}"
        default = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        if f.is_bool:
            params.append(click.Option([f"{flag}/--no-{flag[2:]}", f.name], default=None, help=f"{f.help} [default: {default}]"))
        else:
            metavar = "|".join(f.choices) if f.choices else "LIST" if isinstance(f.default, tuple) else type(f.default).__name__.upper()
            params.append(click.Option([flag, f.name], default=None, metavar=metavar, help=f"{f.help} [default: {default}]"))

    def callback(out: str, force: bool, config_file: str | None, positional_input: str | None = None, **values: Any) -> None:
        if positional_input is not None:
            if values.get(positional) not in (None, ()):
                raise UserError(f"{name}: give the {positional} once, as {positional.upper()} or --{positional.replace('_', '-')}")
            values[positional] = positional_input
        inputs, config = _config_file(name, config_file) if config_file else ({}, {})
        inputs.update({k: v for k, v in values.items() if k in module.INPUTS and v not in (None, ())})
        config.update({k: v for k, v in values.items() if k not in module.INPUTS and v is not None})
        with runner.naming_checkpoints([Path(out)]):
            plan = runner.plan(name, config, inputs, out, where=name)
            if runner.skipped(plan, force):
                click.echo(f"{out} is fresh (same config and inputs); nothing to do. Use --force to rebuild.")
                return
            manifest = runner.execute(plan, force=force)
        if not distributed.is_main():  # under a launch the main rank wrote it and says so, once
            return
        click.echo(f"{name}: wrote {out} in {manifest['wall_time_s']} s")
        process.published(str(out))
        if manifest.get("counts"):
            c = manifest["counts"]
            click.echo(f"rows: {c['rows_in']} in, {c['rows_out']} out, dropped {c.get('dropped') or {}}")

    doc = (module.__doc__ or name).strip()
    return click.Command(name, params=params, callback=callback, help=_keep_examples(doc), short_help=doc.splitlines()[0],
                         context_settings={"max_content_width": 110})


def _config_file(stage: str, path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(inputs, config) of a stage's YAML file: `{stage, inputs, config}` as stage_config.yaml holds them, or one flat
    mapping of input and option names (HF's parse_yaml_file style). Relative paths are taken from the file's folder."""
    module = stages.load(stage)
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"--config {path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"--config {path}: not valid YAML ({pipelines.yaml_problem(exc)})") from None
    if not isinstance(doc, dict):
        raise UserError(f"--config {path}: expected a mapping of option names to values")
    if "inputs" in doc or "config" in doc or "stage" in doc:
        if doc.get("stage", stage) != stage:
            raise UserError(f"--config {path} is the config of stage '{doc.get('stage')}', not '{stage}'; run: "
                            f"nlp-pipe {doc.get('stage')} --config {path} --out DIR")
        inputs, config = dict(doc.get("inputs") or {}), dict(doc.get("config") or {})
    else:
        inputs = {k: v for k, v in doc.items() if str(k).replace("-", "_") in module.INPUTS}
        config = {k: v for k, v in doc.items() if str(k).replace("-", "_") not in module.INPUTS}
    base = Path(path).absolute().parent
    return pipelines.anchor_inputs(stage, inputs, base), pipelines.anchor_config(stage, config, base)


def _keep_examples(doc: str) -> str:
    """Mark indented paragraphs (example commands) with click's \\b so --help keeps their line breaks."""
    paragraphs = doc.split("\n\n")
    return "\n\n".join("\b\n" + p if any(line.startswith("    ") for line in p.splitlines()) else p for p in paragraphs)


def _say(text: str) -> None:
    """A stage line on stderr (not with -q; under a launch, the main rank's)."""
    if not console.quiet() and distributed.is_main():
        click.echo(text, err=True)


def _table(header: list[str], rows: list[tuple]) -> None:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for i, row in enumerate(cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            click.echo("  ".join("-" * w for w in widths))


def _allocation(exc: RuntimeError) -> str:
    words = str(exc).split("you tried to allocate ")
    return f"tried to allocate {words[1].split('.')[0]}" if len(words) > 1 else "an allocation failed"


def main(argv: list[str] | None = None) -> None:
    verbose = "-v" in (argv or sys.argv) or "--verbose" in (argv or sys.argv)
    process.configure()
    try:
        with process.signals_handled():
            _main(argv, verbose)
    except process.Interrupted as exc:
        _interrupted(exc, verbose)
    except Exception:
        interrupt = process.received()
        if interrupt is None:
            raise
        _interrupted(interrupt, verbose)
    if argv is None:  # the command line's process, which ends next (not a call from Python, such as a test's)
        process.ending()


def _last_word(line: str) -> None:
    """The run's last line (an error, an interrupt), on a line of its own even when a progress bar was open."""
    console.end_bars()
    click.echo(line, err=True)


def _interrupted(exc: process.Interrupted, verbose: bool) -> None:
    """One line from the main rank (the others of a launch stop with the same code, silently)."""
    if verbose:
        traceback.print_exc()
    if distributed.is_main():
        _last_word(exc.line())
    sys.exit(exc.exit_code)


def _main(argv: list[str] | None, verbose: bool) -> None:
    try:
        cli.main(args=argv, prog_name="nlp-pipe", standalone_mode=False)
        distributed.close()  # a failed rank needs no goodbye: the launcher stops the others
    except UserError as exc:
        if verbose or process.received():  # e.g. a launched rank told that the interrupted main rank stopped
            raise
        if not isinstance(exc, SaidByMainRank):
            _last_word(f"error: {exc}")
        sys.exit(2)
    except MemoryError as exc:  # a size in the config beyond this machine: the user's to lower, in one line
        if verbose:
            raise
        _last_word(f"error: out of memory{': ' + str(exc).splitlines()[0][:200] if str(exc) else ''}; lower the sizes "
                   "in the config (batch, vocabulary, filters, dimensions) or use a machine with more memory")
        sys.exit(2)
    except RuntimeError as exc:
        if verbose or "can't allocate memory" not in str(exc):  # torch reports failed allocations as RuntimeError
            raise
        _last_word(f"error: out of memory ({_allocation(exc)}); lower the sizes in the config (batch, vocabulary, filters, "
                   "dimensions) or use a machine with more memory")
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:  # one line, like every other error (click's own is a usage block of three)
        command = exc.ctx.command_path if exc.ctx is not None else "nlp-pipe"
        hint = ("; give each path with its own option (--corpus A --corpus B)"
                if "unexpected extra argument" in exc.format_message() else "")
        _last_word(f"error: {exc.format_message().rstrip('.')}{hint}; see {command} --help")
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
