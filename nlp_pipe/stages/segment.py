"""Stage `segment`: raw text files -> jieba words.

    nlp-pipe segment --corpus reviews.tsv --out runs/seg [--userdict words.txt] [--engine auto]

Writes `dataset/` (a `datasets` dataset with text, words and label when present,
`datasets.load_from_disk`) and `corpus.txt` (space-separated words, one kept row a line,
aligned with the dataset). The words are jieba's; the engine (`text.engines`) and its version
go to segmenter.json and the manifest. Large inputs are cut by as many processes as there are
cores other processes leave free (this one included). txt and jsonl files (UTF-8 or GB18030) are split
into runs of whole lines, one a process, and each process reads, cuts and writes its own run (its
own data file and part of corpus.txt, joined at the end); other formats are read by this process
and cut in chunks by its helpers (this one cuts too whenever they are busy).
Under `accelerate launch` / torchrun (any number of processes and machines) every process reads the
rows, cuts every R-th chunk of them into its part (core.shards) and the main one merges the parts
in input order: the artifact is byte-identical to a one-process run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import multiprocessing
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..core import console, distributed, process, shards
from ..core.config import option
from ..core.contract import Counts, Input, Result
from ..core.errors import UserError
from ..core.files import CORPUS_TXT, DATASET_DIR, SEGMENTER_JSON
from ..core.manifest import hashed, sha256_file
from ..text.corpus import BytesRead, ReadOptions, Row, Span, SpanCounts, SpanRead, read_rows, split_lines
from ..text.engines import ENGINES, proven
from ..text.segmenter import COLUMNS, LoadProbe, Segmenter, SegmenterSpec, cut_parallel
from ..text.userdict import read_userdict, userdict_file

NAME = "segment"
VERSION = 3  # 3: user dictionaries read as jieba reads them (lowercase tags, \n lines, ASCII strip, repeats kept),
# and a deleted word (frequency 0) force-split by its own segmenter only, never by others in the process
SHARDED = True  # the rows are cut across the processes of a launch
OUTPUTS = (CORPUS_TXT, DATASET_DIR, SEGMENTER_JSON)
_PARALLEL_MIN_BYTES = 1 << 20  # below this, starting workers costs more than it saves
_CHUNK_CHARS = 50_000  # about 0.15 s of jieba: small enough to even out the workers' last chunks
_AGREEMENT_ROWS = 2000  # rows re-cut by jieba to measure an inexact engine's agreement

INPUTS = {
    "corpus": Input("text files: txt (one text a line), jsonl, csv or tsv", kind="file", multiple=True),
    "userdict": Input("jieba user dictionaries: files (`word [freq]` a line) or vocab artifacts",
                      kind="any", multiple=True, required=False, stages=("vocab", "phrases", "expand")),
}

log = logging.getLogger(__name__)
# The dataset's columns: their Arrow types and their `datasets` features (as `Features.to_dict()` writes them)
_STRING = {"dtype": "string", "_type": "Value"}
_COLUMNS = {"text": (pa.string(), _STRING), "words": (pa.list_(pa.string()), {"feature": _STRING, "_type": "List"}),
            "label": (pa.string(), _STRING)}
_BATCH_ROWS = 1000  # rows per record batch, as datasets' ArrowWriter writes them (config.DEFAULT_MAX_BATCH_SIZE)


@dataclass(frozen=True)
class Config(ReadOptions):
    hmm: bool = option(True, "let jieba's HMM find words missing from its dictionary")
    mode: Literal["accurate", "search"] = option("accurate", "jieba accurate mode, or search mode (long words also cut into their parts)")
    userdict_freq: Literal["file", "multiply", "force"] = option(
        "force", "user-dictionary frequency policy: the file's own counts, counts x userdict_multiplier, or each word's count "
            "raised as jieba's suggest_freq does, so that the word itself is kept whole (a longer dictionary word around it, as "
            "长江大桥 around 江大桥, can still win: use multiply for that)")
    userdict_multiplier: float = option(1000.0, "multiplier for userdict_freq=multiply", min=0.0)
    label_per_file: tuple[str, ...] = option((), "one label per corpus file, in order (for one-file-per-class corpora such as "
                                             "pos.txt/neg.txt)")
    engine: Literal["auto", "jieba", "compiled", "rjieba", "rjieba-native"] = option(
        "auto", "segmentation engine: auto = the fastest installed engine proven to give jieba's exact words (compiled, "
                "else rjieba, else jieba); rjieba-native differs from jieba with the HMM on (its agreement goes to the report)")
    workers: int = option(0, "processes that cut (this one included); 0 = one per core not busy with other processes, "
                                 "for inputs over 1 MB", min=0, neutral=True)  # the lines are the same however many cut them
    chunk_rows: int = option(500, "rows sent to a worker at a time", min=1, neutral=True)


def run(config: Config, inputs: dict[str, list[Path]], out: Path) -> Result:
    files = inputs["corpus"]
    if config.label_per_file and len(config.label_per_file) != len(files):
        raise UserError(f"segment: label_per_file has {len(config.label_per_file)} labels for {len(files)} corpus files")
    spec, dict_info = _segmenter_spec(config, inputs["userdict"])
    if distributed.is_main():
        spec.save(out)
    probe = LoadProbe()  # measures what other processes use while the dictionary loads
    segmenter = Segmenter(spec)
    big = sum(f.stat().st_size for f in files) >= _PARALLEL_MIN_BYTES
    workers = config.workers or (max(1, probe.free_cores() // distributed.local_world_size()) if big else 1)
    log.info("segmenting with %s %s in %d process(es)", spec.engine, spec.engine_version or "", workers)
    counts = Counts()
    runs = split_lines(files, config, workers) if workers > 1 and distributed.world_size() == 1 and process.can_fork() else None
    if runs and len(runs) > 1:
        cut = _cut_runs(config, files, segmenter, runs, counts, out, exact=dict_info["engine_exact"])
    else:
        chunks = _segmented_chunks(config, files, segmenter, workers, counts)
        if distributed.world_size() > 1:
            chunks = _sharded(chunks, out)
            if not distributed.is_main():
                for _ in chunks:  # cuts this rank's chunks into its part
                    pass
                return Result(counts, {"workers": workers})
        cut = _write_chunks(chunks, out, exact=dict_info["engine_exact"])
    if counts.rows_out == 0:
        raise UserError(f"segment: no text left in {', '.join(map(str, files))} (dropped: {dict(counts.dropped)})")
    stats = cut.stats.result()
    if cut.sample:
        dict_info["engine_agreement"] = _agreement(spec, cut.sample)
    metrics = {
        "words": stats["words"], "chars": stats["chars"], "distinct_words": stats["distinct_words"],
        "words_per_text": round(stats["words"] / counts.rows_out, 2), "workers": workers,
        "labels": stats["labels"],
    }
    written = {CORPUS_TXT: hashed(out / CORPUS_TXT, cut.corpus_sha256)}
    written.update({data.path.relative_to(out).as_posix(): hashed(data.path, data.sha256) for data in cut.data})
    return Result(counts, metrics, _report(stats, dict_info), {"segmenter": dict_info}, hashed=written)


@dataclass
class _Written:
    """What a way of cutting wrote and counted: corpus.txt's digest, the dataset's data files, the statistics, and
    the first rows' (text, line) when the engine is not jieba's exact one (for its agreement)."""

    corpus_sha256: str
    data: list[_DatasetFile]
    stats: _Stats
    sample: list[tuple[str, str]]


def _write_chunks(chunks: Iterator[tuple[pa.Array, _Cut]], out: Path, exact: bool) -> _Written:
    """Write the chunks cut (in input order) into corpus.txt and one data file."""
    (out / DATASET_DIR).mkdir()
    corpus_sha = hashlib.sha256()  # hashed as written, not read back for the manifest
    dataset, running, sample = _write(chunks, out / CORPUS_TXT, out / DATASET_DIR / _data_file(0, 1), exact, corpus_sha)
    return _Written(corpus_sha.hexdigest(), _dataset_info(out / DATASET_DIR, [dataset]), running, sample)


def _write(chunks: Iterator[tuple[pa.Array, _Cut]], corpus_txt: Path, data_file: Path, exact: bool,
           digest: Any) -> tuple[_DatasetFile, _Stats, list[tuple[str, str]]]:
    """Write (labels, cut) chunks into `corpus_txt` (hashed into `digest`, a hashlib object, when given) and one data
    file; returns it, the statistics and the agreement sample (`_take_sample`)."""
    # Rows go to Arrow a chunk at a time as whole columns, built (with the chunk's word counts) by
    # the process that cut the chunk (`_columns`): building them row by row through
    # Dataset.from_generator took a third of the main process's time, and building them here made
    # this process, which also reads, hands out and writes every chunk, the one the others waited for.
    running = _Stats()
    sample: list[tuple[str, str]] = []
    with open(corpus_txt, "wb") as txt, _DatasetFile(data_file) as dataset:
        for labels, cut in chunks:
            _take_sample(sample, cut, exact)
            if digest is not None:
                digest.update(cut.corpus_txt)
            txt.write(cut.corpus_txt)
            table = cut.table.append_column("label", labels)
            running.add(cut, table.column("label"))
            dataset.write(table)
    return dataset, running, sample


def _take_sample(sample: list[tuple[str, str]], cut: _Cut, exact: bool) -> None:
    if not exact and len(sample) < _AGREEMENT_ROWS:
        sample += zip(cut.table.column("text").to_pylist()[:_AGREEMENT_ROWS - len(sample)], cut.lines())


@dataclass
class _Run:
    """What one process wrote and counted for its run of lines (`_cut_run`)."""

    reads: list[SpanRead]
    corpus_txt: Path
    corpus_sha: Any  # the first run's hashlib digest of corpus.txt so far (this process's); None in the others
    data: _DatasetFile
    stats: _Stats
    sample: list[tuple[str, str]]


def _cut_runs(config: Config, files: list[Path], segmenter: Segmenter, runs: list[list[tuple[int, Span]]],
              counts: Counts, out: Path, exact: bool) -> _Written:
    """Cut each run of lines in a process of its own (this one cuts the first), each reading its own bytes and writing
    its own part of corpus.txt and its own data file; then join them. With one process reading every row and
    writing every chunk, and every chunk's columns crossing a pipe, two processes did 1.1x one (issue 30); here
    they share nothing until the end. The rows, corpus.txt, statistics and counts are those of one process."""
    (out / DATASET_DIR).mkdir()
    shared = multiprocessing.get_context("fork").Array("q", len(runs), lock=False)  # bytes each process has read
    progress = console.bytes_progress(sum(path.stat().st_size for path in files), "segment")
    mine = BytesRead()

    def show() -> None:
        console.advance_to(progress, mine.n + sum(shared[1:]))

    def cut_run(k: int) -> _Run:
        read = mine if k == 0 else _SharedBytes(shared, k)
        return _cut_run(config, files, segmenter, runs[k], out, k, read, show if k == 0 else lambda: None, exact)

    done = process.forked(cut_run, range(len(runs)), while_waiting=show)
    console.advance_to(progress, progress.total)
    progress.close()
    merged = SpanCounts(files, config, counts)
    for part in done:  # in input order, raising the error one process would have met first
        for read in part.reads:
            merged.add(read)
    running, corpus_sha = _Stats(), done[0].corpus_sha
    sample: list[tuple[str, str]] = []
    with open(out / CORPUS_TXT, "ab") as corpus_txt:  # this process's run is in it: the others' parts follow
        for part in done:
            running.absorb(part.stats)
            sample += part.sample[:_AGREEMENT_ROWS - len(sample)]
            if part.corpus_txt.name == CORPUS_TXT:
                continue
            with open(part.corpus_txt, "rb") as fh:
                while block := fh.read(1 << 20):
                    corpus_sha.update(block)
                    corpus_txt.write(block)
            part.corpus_txt.unlink()
    return _Written(corpus_sha.hexdigest(), _dataset_info(out / DATASET_DIR, [part.data for part in done]), running, sample)


class _SharedBytes(BytesRead):
    """A helper's bytes read, where the process showing the progress bar sees them."""

    def __init__(self, shared: Any, k: int) -> None:
        super().__init__()
        self.shared, self.k = shared, k

    def add(self, n: int) -> None:
        self.shared[self.k] += n


def _cut_run(config: Config, files: list[Path], segmenter: Segmenter, run: list[tuple[int, Span]], out: Path, k: int,
             read: BytesRead, on_chunk: Callable[[], None], exact: bool) -> _Run:
    reads: list[SpanRead] = []

    def rows() -> Iterator[Row]:
        try:
            for i, span in run:
                reads.append(part := SpanRead(i, span))
                yield from read_rows(files[i], config, part.counts, config.label_per_file[i] if config.label_per_file else None,
                                     read=read, span=span, checkpoints=part.checkpoints)
        except UserError as exc:  # reading stops here; the runs before this one may hold the error to report first
            reads[-1].error = exc

    def chunks() -> Iterator[tuple[pa.Array, _Cut]]:
        for chunk in _chunks(rows(), config.chunk_rows):
            texts = [row.text for row in chunk]
            yield pa.array([row.label for row in chunk], pa.string()), _columns(texts, segmenter.cut_columns(texts))
            on_chunk()

    # the first run is corpus.txt's beginning, hashed as it is written; the others' parts are appended to it
    corpus_txt, digest = (out / CORPUS_TXT, hashlib.sha256()) if k == 0 else (out / f"{CORPUS_TXT}.{k}", None)
    dataset, running, sample = _write(chunks(), corpus_txt, out / DATASET_DIR / f"run-{k}.arrow", exact, digest)
    running.merge()
    return _Run(reads, corpus_txt, digest, dataset, running, sample)


def _agreement(spec: SegmenterSpec, sample: list[tuple[str, str]]) -> dict:
    """Share of `sample` rows an inexact engine cut exactly as jieba does (same dictionaries and modes)."""
    jieba_lines = Segmenter(replace(spec, engine="jieba")).cut_lines([text for text, _ in sample])
    same = sum(a == b for (_, a), b in zip(sample, jieba_lines))
    pct = round(100.0 * same / len(sample), 3)
    log.warning("engine %s cut %.3f%% of the first %d rows as jieba does", spec.engine, pct, len(sample))
    return {"rows": len(sample), "identical_rows": same, "identical_pct": pct}


def _sharded(chunks: Iterator[tuple[pa.Array, _Cut]], out: Path) -> Iterator[tuple[pa.Array, _Cut]]:
    """This rank's chunks into its part; then, on the main rank, every rank's chunks in input order, their
    `_Cut`s rebuilt from the parts' columns in Arrow (no Python lists: the main rank merges what every rank cut,
    and building its columns from lists again took it 0.2 s per 10 MB, the cutting rate of a rank or two)."""
    with shards.PartWriter(out, NAME) as part:
        for labels, cut in chunks:
            part.write(cut.table.append_column("label", labels))
    sizes = distributed.gather(part.batches)
    if distributed.is_main():
        for batch in shards.merged(out, NAME, sizes):
            lines = pc.binary_join(batch.column("words"), " ")
            whole = pa.ListArray.from_arrays(pa.array([0, len(lines)], pa.int32()), lines)  # the chunk as one list
            text = pc.binary_join(whole, "\n")[0].as_buffer().to_pybytes() + b"\n"
            yield batch.column("label"), _cut(text, batch.column("text"), batch.column("words"))


def _segmented_chunks(config, files, segmenter, workers, counts) -> Iterator[tuple[pa.Array, _Cut]]:
    """(labels, the texts' `_Cut`) for each chunk of rows, in input order; under a launch, only the
    chunks this rank owns (every rank reads every row, so the counts and drops are everyone's)."""
    read = BytesRead()
    rows = itertools.chain.from_iterable(
        read_rows(path, config, counts, config.label_per_file[i] if config.label_per_file else None, read=read)
        for i, path in enumerate(files)
    )
    progress = console.bytes_progress(sum(path.stat().st_size for path in files), "segment")
    buffered: deque[tuple[list, int]] = deque()  # chunks sent to the workers, waiting for their words; bytes read then

    def texts() -> Iterator[list[str]]:
        for i, chunk in enumerate(_chunks(rows, config.chunk_rows)):
            if shards.owns(i):
                buffered.append((chunk, read.n))
                yield [row.text for row in chunk]

    # Each text is cut into one line of space-joined words; jieba never emits a word that contains
    # whitespace (whitespace-only tokens are dropped), so corpus.txt lines are exactly that and the
    # words column is each line split on " " (`Segmenter.cut_columns`, `_columns`).
    for cut in cut_parallel(segmenter, texts(), workers, join=COLUMNS, then=_columns):
        chunk, upto = buffered.popleft()
        yield pa.array([row.label for row in chunk], pa.string()), cut
        console.advance_to(progress, upto)  # as chunks are cut, by the bytes read for them
    console.advance_to(progress, progress.total)  # the rest: rows after the last chunk, compressed files
    progress.close()


@dataclass(frozen=True)
class _Cut:
    """A chunk's words as the writer takes them: corpus.txt's lines, the dataset's text and words
    columns, and what the statistics need. Arrow columns pickle as their buffers, so handing
    them from a worker to the writer costs about what handing over the joined lines did."""

    corpus_txt: bytes  # the chunk's lines, each ending in \n, as corpus.txt holds them (UTF-8)
    table: pa.Table  # text, words
    counts: pa.Table  # word, n: the chunk's distinct words and how often each occurs
    words: int
    chars: int

    def lines(self) -> list[str]:
        return self.corpus_txt.decode("utf-8").split("\n")[:-1]


def _columns(texts: list[str], cut: tuple[bytes, pa.ListArray]) -> _Cut:
    """`texts` and their `Segmenter.cut_columns` as a `_Cut` (in the process that cut them: see cut_parallel)."""
    corpus_txt, words = cut
    return _cut(corpus_txt, pa.array(texts, pa.string()), words)


def _cut(corpus_txt: bytes, text: pa.Array, words: pa.Array) -> _Cut:
    flat = pc.list_flatten(words)
    counted = pc.value_counts(flat)
    return _Cut(corpus_txt, pa.table({"text": text, "words": words}),
                pa.table({"word": counted.field("values"), "n": counted.field("counts")}), len(flat),
                pc.sum(pc.utf8_length(text)).as_py() or 0)


def _chunks(rows: Iterator, max_rows: int) -> Iterator[list]:
    """Chunks of at most `max_rows` rows and about _CHUNK_CHARS characters: with very long rows
    (whole documents) a row count alone would make chunks too big to keep the workers evenly busy."""
    chunk, chars = [], 0
    for row in rows:
        chunk.append(row)
        chars += len(row.text)
        if len(chunk) >= max_rows or chars >= _CHUNK_CHARS:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


class _DatasetFile:
    """One data file of the dataset, written as it is cut, straight into the dataset's folder in the layout
    `datasets.load_from_disk` reads (`_dataset_info` then writes state.json and dataset_info.json as
    `Dataset.save_to_disk` does): writing a cache file and then `save_to_disk` copied every byte once more and
    mapped the whole dataset (private memory and RSS grew with the corpus). The label column is there when any row
    has a label, as before: the first chunk decides, and the rare corpus whose labelled file comes after an
    unlabelled one has the rows already written copied once into a file with an all-null label column.

    The files are written with pyarrow, byte for byte what datasets' ArrowWriter and save_to_disk write
    (an Arrow stream of 1000-row batches, the features in the schema's `huggingface` metadata; the test
    `test_dataset_files_are_what_datasets_writes` compares them with datasets' own): importing `datasets` costs
    0.26 s even after pyarrow has imported pandas, and a fresh `nlp-pipe segment --workers 1` on 10 MB took
    2.23 s without it against 2.69 s with it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.labels: bool | None = None  # whether the file has a label column; None until the first chunk
        self.sha256 = ""  # the data file's, once written
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._sink: pa.NativeFile | None = None
        self._schema = pa.schema([])

    def __enter__(self) -> _DatasetFile:
        return self

    def _open(self, labels: bool) -> pa.ipc.RecordBatchStreamWriter:
        self.labels = labels
        metadata = {"huggingface": json.dumps({"info": {"features": _features(labels)}})}
        self._schema = pa.schema([(name, _COLUMNS[name][0]) for name in _features(labels)], metadata=metadata)
        self._sink = pa.OSFile(str(self.path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, self._schema)
        return self._writer

    def write(self, table: pa.Table) -> None:
        labelled = table.column("label").null_count < table.num_rows
        if self._writer is None:
            self._open(labelled)
        elif labelled and not self.labels:
            self.add_label_column()
        self._write(table if self.labels else table.drop_columns("label"))

    def _write(self, table: pa.Table) -> None:
        if self._writer is None:
            raise RuntimeError("dataset file written before it was opened")
        self._writer.write_table(table.combine_chunks().cast(self._schema), max_chunksize=_BATCH_ROWS)

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._sink is not None:
            self._sink.close()
        self._writer = self._sink = None

    def add_label_column(self) -> None:
        """Rewrite the rows written so far with an all-null label column, and go on with one."""
        self._close()
        unlabelled = self.path.with_suffix(".unlabelled")
        self.path.rename(unlabelled)
        self._open(labels=True)
        with pa.OSFile(str(unlabelled)) as source:  # read a batch at a time, not mapped: memory stays flat
            for batch in pa.ipc.open_stream(source):
                self._write(pa.Table.from_batches([batch]).append_column("label", pa.nulls(batch.num_rows, pa.string())))
        unlabelled.unlink()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._writer is None:
            return
        if kind is not None:
            with suppress(Exception):  # a full disk fails again here: the stage's own error is the one to report
                self._close()
            return
        self._close()
        self.sha256 = sha256_file(self.path)


def _features(labels: bool) -> dict[str, Any]:
    return {name: feature for name, (_, feature) in _COLUMNS.items() if labels or name != "label"}


def _data_file(index: int, count: int) -> str:
    return f"data-{index:05d}-of-{count:05d}.arrow"


def _dataset_info(folder: Path, parts: list[_DatasetFile]) -> list[_DatasetFile]:
    """The data files that hold rows, named as save_to_disk names its shards and all with a label column when any
    has one, listed in state.json beside dataset_info.json; returns them."""
    data = [part for part in parts if part.labels is not None]
    if not data:  # no row kept: the stage stops with its own line
        return []
    labels = any(part.labels for part in data)
    for index, part in enumerate(data):
        if labels and not part.labels:  # a run of unlabelled files beside a run of labelled ones
            with part:
                part.add_label_column()
        name = folder / _data_file(index, len(data))
        if part.path != name:
            part.path = part.path.rename(name)
    # datasets derives a fingerprint from the files' paths (a random staging dir): the rows' own digest instead
    # makes state.json, like every other file, the same for the same rows
    digest = data[0].sha256 if len(data) == 1 else hashlib.sha256("".join(p.sha256 for p in data).encode()).hexdigest()
    state: dict[str, Any] = {"_data_files": [{"filename": part.path.name} for part in data], "_fingerprint": digest[:16],
                             "_format_columns": None, "_format_kwargs": {}, "_format_type": None,
                             "_output_all_columns": False, "_split": "train"}
    with open(folder / "state.json", "w", encoding="utf-8") as fh:
        json.dump(state, fh, indent=2, sort_keys=True)
    info = {"citation": "", "description": "", "features": _features(labels), "homepage": "", "license": ""}
    with open(folder / "dataset_info.json", "w", encoding="utf-8") as fh:  # save_to_disk's keys, sorted
        json.dump(info, fh, indent=2)
    return data


class _Stats:
    """Corpus statistics gathered chunk by chunk as the rows are written, in C++ (pyarrow), not word by word
    in Python, and without mapping and scanning the whole dataset again afterwards (3.4 GB RSS at 1 GB of
    text). Word counts are merged whenever the unmerged ones pass _MERGE_ROWS, so memory follows the
    vocabulary, not the corpus. Ties rank as Counter.most_common ranks them, in first-seen order: each chunk's
    value_counts lists its words in first-seen order, the chunks (and other processes' runs, `absorb`) are merged in
    input order, and a dictionary encoding keeps first-seen order where pyarrow's group_by did not (the order it gave
    changed with how the rows were split between processes); a stable sort then ranks the counts."""

    _MERGE_ROWS = 2_000_000

    def __init__(self) -> None:
        self.words = self.chars = self._unmerged_rows = 0
        self._vocab: pa.Table | None = None  # word, n: in first-seen order
        self._unmerged: list[pa.Table] = []
        self._labels: Counter[str] = Counter()

    def add(self, cut: _Cut, label: pa.ChunkedArray) -> None:
        self.words += cut.words
        self.chars += cut.chars
        self._unmerged.append(cut.counts)
        self._unmerged_rows += cut.counts.num_rows
        if self._unmerged_rows > self._MERGE_ROWS:
            self.merge()
        labels = pc.value_counts(pc.drop_null(label))
        self._labels.update(dict(zip(labels.field("values").to_pylist(), labels.field("counts").to_pylist())))

    def absorb(self, later: _Stats) -> None:
        """Add the statistics of rows that come after these (cut by another process)."""
        self.words += later.words
        self.chars += later.chars
        later.merge()
        if later._vocab is not None:  # its words were first seen after all of these
            self._unmerged.append(later._vocab)
            self._unmerged_rows += later._vocab.num_rows
        self._labels.update(later._labels)

    def merge(self) -> None:
        parts = ([self._vocab] if self._vocab is not None else []) + self._unmerged
        if parts:
            table = pa.concat_tables(parts)
            # the dictionary lists the words in first-seen order; numpy sums each one's counts (group_by with a
            # first-place column for the order took 46 against 37 ms on 10 MB)
            encoded = pc.dictionary_encode(table.column("word").combine_chunks())
            summed = np.bincount(encoded.indices.to_numpy(), weights=table.column("n").to_numpy(), minlength=len(encoded.dictionary))
            self._vocab = pa.table({"word": encoded.dictionary, "n": pa.array(summed.astype(np.int64))})
        self._unmerged, self._unmerged_rows = [], 0

    def result(self) -> dict:
        self.merge()
        vocab = self._vocab if self._vocab is not None else pa.table({"word": pa.array([], pa.string()), "n": pa.array([], pa.int64())})
        top = pc.take(vocab, np.argsort(-vocab.column("n").to_numpy(), kind="stable")[:30])
        return {"words": self.words, "chars": self.chars, "distinct_words": vocab.num_rows,
                "top": list(zip(top.column("word").to_pylist(), top.column("n").to_pylist())),
                "labels": dict(sorted(self._labels.items()))}


def _segmenter_spec(config: Config, userdicts: list[Path]) -> tuple[SegmenterSpec, dict]:
    entries: list[tuple[str, int | None]] = []  # every line in order, repeats too: jieba adds (and totals) each
    sources = []
    for path in userdicts:
        file = userdict_file(path, NAME)
        words = read_userdict(file)
        entries += words
        sources.append({"path": str(file), "words": len(words)})
    deletions = [word for word, freq in entries if freq == 0]
    if deletions and config.userdict_freq == "force":
        log.warning("%d user-dictionary word(s) have frequency 0 (%s...), which deletes a word in jieba; "
                    "--userdict-freq force keeps them whole instead: pass --userdict-freq file to delete them",
                    len(deletions), deletions[0])
    spec = SegmenterSpec(hmm=config.hmm, mode=config.mode, userdict=tuple(entries),
                         policy=config.userdict_freq, multiplier=config.userdict_multiplier,
                         engine=config.engine).with_engine()
    info: dict[str, Any] = {"engine": spec.engine, "engine_version": spec.engine_version, "engine_exact": proven(spec.engine),
            "dictionary": "jieba default dict.txt", "hmm": config.hmm, "mode": config.mode,
            "userdict": sources, "userdict_words": len({word for word, _ in entries}), "userdict_freq": config.userdict_freq}
    if config.userdict_freq == "multiply":
        info["userdict_multiplier"] = config.userdict_multiplier
    return spec, info


def _report(stats: dict, dict_info: dict) -> str:
    top = ", ".join(f"{w} ({n})" for w, n in stats["top"])
    name, version = dict_info["engine"], dict_info["engine_version"]
    engine = f"{name} ({ENGINES[name].package} {version})" if version else name  # compiled's version is numba's
    exactness = "jieba's exact words" if dict_info["engine_exact"] else "NOT jieba's exact words"
    lines = [
        "## Segmentation",
        f"jieba {dict_info['mode']} mode, HMM {'on' if dict_info['hmm'] else 'off'}; "
        f"user dictionary: {dict_info['userdict_words']} words (policy: {dict_info['userdict_freq']}).",
        f"Engine: {engine} ({exactness}).",
    ]
    if "engine_agreement" in dict_info:
        a = dict_info["engine_agreement"]
        lines.append(f"Agreement with jieba: {a['identical_pct']}% of the first {a['rows']} rows cut identically.")
    lines += ["", f"Most frequent words: {top}"]
    if stats["labels"]:
        lines += ["", "| label | rows |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in stats["labels"].items()]
    return "\n".join(lines)
