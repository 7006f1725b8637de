"""README's multi-machine commands, simulated: two torchrun "machines" on this host, one process each, as

    torchrun --nnodes 2 --node_rank 0|1 --nproc_per_node 1 --master_addr 127.0.0.1 --master_port PORT -m nlp_pipe STAGE ...

(the same command on each machine but its rank; here both share the filesystem, as the README requires).
The sharded corpus stage must be byte-identical to one process (~30 s on 2 busy cores, in make test);
pretraining must give one process's losses within test_ddp's tolerance (~50 s: marked slow, `make test-all`).
"""

from __future__ import annotations

import os
import signal
import subprocess

import numpy as np
import pytest
from test_ddp import ENV, PRETRAIN, PRETRAIN_ATOL, _free_port, bert_no_dropout, cli_args, manifest, train_losses  # noqa: F401
from test_sharded import assert_segment_launch_matches_one_process

from conftest import FIXTURES, VENV_BIN, build


def two_machines(*args: object, timeout: float = 300) -> None:
    """`nlp-pipe ARGS` as two single-process torchrun node groups meeting at 127.0.0.1."""
    port = str(_free_port())
    nodes = [subprocess.Popen([str(VENV_BIN / "torchrun"), "--nnodes", "2", "--node_rank", str(rank), "--nproc_per_node", "1",
                               "--master_addr", "127.0.0.1", "--master_port", port, "-m", "nlp_pipe", *map(str, args)],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
             for rank in (0, 1)]
    try:
        outputs = [node.communicate(timeout=timeout) for node in nodes]
    finally:
        for node in nodes:  # a hung node: its torchrun and its rank, which may sit in a collective no signal ends
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait()
    for rank, (node, (_, err)) in enumerate(zip(nodes, outputs)):
        assert node.returncode == 0, f"machine {rank}:\n{err[-3000:]}"


def test_segment_on_two_machines_is_byte_identical_to_one_process(tmp_path):
    assert_segment_launch_matches_one_process(tmp_path, two_machines)


@pytest.mark.slow  # ~50 s on 2 busy cores (two torch start-ups, a rendezvous, a 1-process run); docs/reliability.md
def test_pretrain_on_two_machines_matches_one_process(tmp_path, bert_no_dropout):  # noqa: F811
    config = {**PRETRAIN, "model_config": str(bert_no_dropout / "config.json")}
    inputs = {"corpus": [FIXTURES / "news.txt", FIXTURES / "reviews.tsv"], "tokenizer": bert_no_dropout}
    one, two = tmp_path / "one", tmp_path / "two"
    build("pretrain", one, inputs, batch_size=8, **config)
    flags = [a for name, paths in inputs.items() for p in (paths if isinstance(paths, list) else [paths]) for a in (f"--{name}", p)]
    two_machines("pretrain", *flags, "--out", two, *cli_args({**config, "batch_size": 4}))
    assert manifest(one)["processes"] == 1 and manifest(two)["processes"] == 2
    a, b = train_losses(one / "metrics.jsonl", "mlm_loss"), train_losses(two / "metrics.jsonl", "mlm_loss")
    assert len(a) == len(b) > 3
    np.testing.assert_allclose(b, a, atol=PRETRAIN_ATOL, rtol=0)
