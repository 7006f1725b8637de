"""Rows of a corpus stage split across the ranks of a launch, and their parts merged back in input order.

    for i, chunk in enumerate(chunks):            # every rank reads the same chunks (same counts, drops)
        if shards.owns(i): ... part.write(batch)  # chunk i is cut by rank i % R
    with shards.PartWriter(out, "segment") as part: ...
    sizes = distributed.gather(part.batches)       # then, on the main rank:
    for batch in shards.merged(out, "segment", sizes): ...   # chunk 0, 1, 2 ... whoever cut it

    for line in shards.lines(files): ...          # this rank's byte range of the files' lines (vocab counts)

Parts are Arrow IPC streams, one record batch per chunk, in the staging directory the main rank made
(`.parts/NAME-RANK.arrow`, on the filesystem every machine of the launch shares) and are removed once
merged; a killed rank leaves them only inside that staging directory, which the next run removes.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from . import distributed
from .files import PARTS_DIR


def owns(chunk: int) -> bool:
    """Whether this rank processes chunk number `chunk` (round robin: rank = chunk % ranks)."""
    return chunk % distributed.world_size() == distributed.rank()


def part_path(out: Path, name: str, rank: int) -> Path:
    return out / PARTS_DIR / f"{name}-{rank:05d}.arrow"


class PartWriter:
    """This rank's chunks, one Arrow record batch each, written in the order it processes them."""

    def __init__(self, out: Path, name: str) -> None:
        self.path = part_path(out, name, distributed.rank())
        self.batches = 0
        self._writer: Any = None

    def __enter__(self) -> PartWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self

    def write(self, table: Any) -> None:
        import pyarrow as pa

        batch = table.combine_chunks().to_batches()[0] if isinstance(table, pa.Table) else table
        if self._writer is None:
            self._sink = pa.OSFile(str(self.path), "wb")
            self._writer = pa.ipc.new_stream(self._sink, batch.schema)
        self._writer.write_batch(batch)
        self.batches += 1

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()


def merged(out: Path, name: str, batches_per_rank: list[int]) -> Iterator[Any]:
    """The record batches of all ranks' parts in chunk order (chunk i from rank i % ranks), then the parts removed."""
    import pyarrow as pa

    ranks = len(batches_per_rank)
    sources = [pa.memory_map(str(part_path(out, name, r))) if batches_per_rank[r] else None for r in range(ranks)]
    readers = [pa.ipc.open_stream(s) if s is not None else None for s in sources]
    try:
        for chunk in range(sum(batches_per_rank)):
            reader = readers[chunk % ranks]
            if reader is None:
                raise RuntimeError(f"{name}: part of rank {chunk % ranks} is missing chunk {chunk}")
            yield reader.read_next_batch()
    finally:
        for source in sources:
            if source is not None:
                source.close()
        shutil.rmtree(out / PARTS_DIR, ignore_errors=True)


def byte_range(total: int, ranks: int | None = None, index: int | None = None) -> tuple[int, int]:
    part = distributed.shard(total, ranks, index)
    return part.start, part.stop


def lines(files: list[Path], ranks: int | None = None, index: int | None = None) -> Iterator[str]:
    """The lines (decoded, with their newline) whose first byte falls into this rank's share of the files'
    bytes taken end to end: every line goes to exactly one rank, and rank order is input order."""
    sizes = [f.stat().st_size for f in files]
    lo, hi = byte_range(sum(sizes), ranks, index)
    base = 0
    for path, size in zip(files, sizes):
        start, stop = max(lo - base, 0), min(hi - base, size)
        base += size
        if start >= stop:
            continue
        with open(path, "rb") as fh:
            if start:
                fh.seek(start - 1)
                fh.readline()  # the rest of the line that began before this range: the previous rank's
            while fh.tell() < stop:
                line = fh.readline()
                if not line:
                    break
                yield line.decode("utf-8")
