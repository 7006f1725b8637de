"""`nlp-pipe serve` through real HTTP on 127.0.0.1: the server runs in a child process started by the test on a free
port (nlp_pipe.serving.local_server), every loop is bounded, and the server is always stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from conftest import build, run_cli
from nlp_pipe.serving import local_server

ROOT = Path(__file__).resolve().parent.parent
KEY = "s3cret-key"
UNSEEN = ["物流很快，包装也结实，下次还来", "客服态度恶劣，再也不买了", "ＡＢＣ牌子的耳机音质一般般", "还行吧", "差"]
AUTH = {"Authorization": f"Bearer {KEY}"}
# small limits, and a 100 ms batching window so that a burst of requests fills the queue
LIMITS = ("--max-texts", "8", "--max-chars", "50", "--max-body", "4096", "--max-queue", "8", "--max-wait-ms", "100", "--workers", "2")


@pytest.fixture(scope="module")
def export(seg_reviews, tmp_path_factory) -> Path:
    """A char TextCNN (with its n-gram bag) exported fp32 + int8: built in ~4 s."""
    work = tmp_path_factory.mktemp("serve")
    build("textcnn", work / "textcnn", {"train": seg_reviews}, input="chars", epochs=1, filters=4, batch_size=16, baseline=False)
    build("export", work / "export", {"model": work / "textcnn"}, quantize="int8")
    return work / "export"


# the server's interpreter refuses torch and transformers: serving an export must not need them
NO_TORCH = """import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError(f"{name} is forbidden on the serving path")
sys.meta_path.insert(0, _Block())
"""


@pytest.fixture(scope="module")
def server(export, tmp_path_factory):
    site = tmp_path_factory.mktemp("no_torch")
    (site / "sitecustomize.py").write_text(NO_TORCH, encoding="utf-8")
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with local_server(export, "--api-key", KEY, *LIMITS, env=env) as running:
        yield running


def test_served_records_are_predict_json_records(server, export, tmp_path):
    file = tmp_path / "texts.txt"
    file.write_text("\n".join(UNSEEN) + "\n", encoding="utf-8")
    cli = run_cli("predict", export, "--file", file, "--json")
    assert cli.code == 0, cli.err
    response = httpx.post(server.url + "/predict", json={"texts": UNSEEN}, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [json.loads(line) for line in cli.out.splitlines()]


def test_concurrent_requests_on_two_model_workers_get_their_own_records(server, export):
    """32 requests at once, each of its own texts, answered by two model calls running side by side: every
    response holds exactly the records of its own texts (no batch's rows handed to another request)."""
    texts = [f"{UNSEEN[i % len(UNSEEN)]}{'好' * (i % 7)}" for i in range(32)]
    from nlp_pipe.classifiers.loaded import TextClassifier

    expected = TextClassifier.load(export).predict(texts)[:, 1]

    def post(i):
        return httpx.post(server.url + "/predict", json={"texts": [texts[i]]}, headers=AUTH, timeout=30)

    served: list[float] = []
    for _ in range(3):  # bounded: the queue of 8 texts may refuse part of a burst
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(post, range(32)))
        if all(r.status_code == 200 for r in responses):
            served = [r.json()["predictions"][0]["probabilities"]["pos"] for r in responses]
            break
    # int8 quantises activations per batch, so a text's probability moves a little with its batch mates
    assert len(served) == 32 and max(abs(a - b) for a, b in zip(served, expected)) < 5e-3, (served, expected)


def test_metadata_states_model_labels_versions_hashes_and_limits(server):
    meta = httpx.get(server.url + "/metadata", headers=AUTH, timeout=10).json()
    assert meta["labels"] == ["neg", "pos"] and meta["model"]["kind"] == "textcnn" and meta["model"]["file"] == "model_int8.onnx"
    assert meta["limits"] == {"max_texts": 8, "max_chars": 50, "max_body": 4096, "max_queue": 8, "batch_size": 64, "gather": 64,
                              "max_wait_ms": 100.0, "workers": 2, "body_timeout_s": 10.0}
    assert len(meta["hashes"]["model_int8.onnx"]) == 64 and meta["versions"]["onnxruntime"]
    assert str(Path.cwd()) not in json.dumps(meta, ensure_ascii=False)  # no server path leaks


@pytest.mark.parametrize("content,status,reason", [
    (b'{"texts": ["ok"', 400, "malformed JSON"),
    (b"\xff\xfe not utf-8", 400, "malformed JSON"),
    (b'["a list"]', 422, "JSON object"),
    (b'{"text": ["no texts field"]}', 422, 'missing field "texts"'),
    (b'{"texts": "one string"}', 422, "list of strings"),
    (b'{"texts": []}', 422, "empty"),
    (b'{"texts": ["fine", "  "]}', 422, "texts[1] is empty"),
    (b'{"texts": ["fine", 7]}', 422, "texts[1] is not a string"),
    (b'{"texts": ["fine", null]}', 422, "texts[1] is not a string"),
    (json.dumps({"texts": ["a"] * 9}).encode(), 413, "too many texts"),
    (json.dumps({"texts": ["长" * 51]}).encode(), 413, "over the limit of 50"),
    (json.dumps({"texts": ["a" * 40] * 8, "pad": "x" * 5000}).encode(), 413, "body over the limit"),
    (b'{"texts": ["ok"], "model": "/etc/passwd"}', 422, 'unknown field "model"'),
    (b"[" * 2000 + b"]" * 2000, 400, "nested too deeply"),
    (b'{"texts": ["ok", "\\ud800"]}', 422, "texts[1] is not valid Unicode"),
])
def test_bad_requests_get_a_4xx_with_a_one_line_reason(server, content, status, reason):
    response = httpx.post(server.url + "/predict", content=content, headers=AUTH, timeout=10)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert reason in error and "\n" not in error and "Traceback" not in response.text


def test_a_body_streamed_over_the_limit_without_length_is_refused(server):
    def chunks():
        for _ in range(10):
            yield b"x" * 1000

    response = httpx.post(server.url + "/predict", content=chunks(), headers=AUTH, timeout=10)  # chunked: no Content-Length
    assert response.status_code == 413 and "body over the limit" in response.json()["error"]


def test_unknown_routes_and_methods_answer_json_4xx(server):
    assert httpx.get(server.url + "/predict", headers=AUTH, timeout=10).status_code == 405
    response = httpx.get(server.url + "/models/../../etc/passwd", headers=AUTH, timeout=10)
    assert response.status_code == 404 and "error" in response.json()


def test_the_api_key_is_required_on_predict_and_metadata(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEY[:-1]}):
        response = httpx.post(server.url + "/predict", json={"texts": ["好"]}, headers=headers, timeout=10)
        assert response.status_code == 401 and response.json() == {"error": "missing or wrong API key"}
        assert httpx.get(server.url + "/metadata", headers=headers, timeout=10).status_code == 401
    assert httpx.post(server.url + "/predict", json={"texts": ["好"]}, headers={"X-API-Key": KEY}, timeout=10).status_code == 200
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200  # for load balancers: no key


def test_overload_gets_503_and_the_server_keeps_serving(server):
    """24 simultaneous requests of 4 texts against a queue of 8 texts and a 100 ms batching window: two fit, the
    rest are refused at once; every answer is 200 or 503, and afterwards the server answers normally."""
    def post(_):
        return httpx.post(server.url + "/predict", json={"texts": UNSEEN[:4]}, headers=AUTH, timeout=30)

    statuses: list[int] = []
    for _ in range(3):  # bounded: a burst that happens to arrive spread out is retried
        with ThreadPoolExecutor(24) as pool:
            responses = list(pool.map(post, range(24)))
        statuses = [r.status_code for r in responses]
        if 503 in statuses:
            break
    assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses, statuses
    refused = next(r for r in responses if r.status_code == 503)
    assert "overloaded" in refused.json()["error"] and refused.headers["retry-after"] == "1"
    after = httpx.post(server.url + "/predict", json={"texts": UNSEEN[:4]}, headers=AUTH, timeout=30)
    assert after.status_code == 200 and len(after.json()["predictions"]) == 4
    assert httpx.get(server.url + "/health", timeout=10).json()["queued_texts"] == 0


def test_a_body_that_never_arrives_gets_408_and_sigterm_does_not_wait_for_it(export):
    """A client that sends its headers and part of the body, then nothing: it held its connection for good, and a
    SIGTERM waited uvicorn's 30 s for it and printed a cancellation traceback."""
    with local_server(export, "--body-timeout", "1") as running:
        host, port = running.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as stalled:
            stalled.sendall(b'POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
                            b'Content-Length: 50\r\n\r\n{"texts"')
            t0 = time.monotonic()
            answer = stalled.recv(4096).decode("latin-1")
            assert answer.startswith("HTTP/1.1 408") and time.monotonic() - t0 < 5, answer
        with socket.create_connection((host, int(port)), timeout=10) as stalled:  # in flight when SIGTERM comes
            stalled.sendall(b'POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{"te')
            time.sleep(0.2)
            running.process.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            code = running.process.wait(15)
            assert stalled.recv(4096).decode("latin-1").startswith("HTTP/1.1 408")
        assert code == 143 and time.monotonic() - t0 < 5 and "Traceback" not in running.log(), running.log()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_answers_the_requests_in_flight_then_exits_with_one_line(export, signum):
    with local_server(export, "--max-wait-ms", "1500") as running:
        results: list[httpx.Response] = []
        client = threading.Thread(target=lambda: results.append(
            httpx.post(running.url + "/predict", json={"texts": UNSEEN}, timeout=30)))
        client.start()
        time.sleep(0.5)  # the request is in the server's queue, waiting out its 1.5 s batching window
        t0 = time.monotonic()
        running.process.send_signal(signum)
        code = running.process.wait(15)
        client.join(30)
        assert results and results[0].status_code == 200 and len(results[0].json()["predictions"]) == len(UNSEEN)
        # the CLI's codes for an interrupt (README "Errors"): 143 for SIGTERM, 130 for Ctrl-C
        assert code == 128 + signum and time.monotonic() - t0 < 15, running.log()
        assert running.log().splitlines()[-1] == f"stopped ({signum.name}) after finishing the requests in flight"


@pytest.fixture
def never_serving(monkeypatch):
    """uvicorn fails the test instead of serving: a start-up that should have been refused ends, not hangs."""
    import uvicorn

    def serving(*args, **kwargs):
        raise AssertionError("the server started")

    monkeypatch.setattr(uvicorn.Server, "run", serving)
    monkeypatch.delenv("NLP_PIPE_API_KEY", raising=False)
    return monkeypatch


@pytest.mark.parametrize("options,env,reason", [
    (["--api-key", ""], {}, "error: serve: the API key is empty"),  # e.g. --api-key "$UNSET": not a server without a key
    ([], {"NLP_PIPE_API_KEY": ""}, "error: serve: the API key is empty"),
    (["--max-queue", "4"], {}, "error: serve: --max-queue 4 is below --max-texts 64"),  # 64 texts would always get 503
    (["--max-body", "10"], {}, "error: serve: --max-body 10 is below the smallest request"),  # nothing could be answered
    (["--host", "203.0.113.7"], {}, "error: serve: cannot listen on --host 203.0.113.7"),  # TEST-NET: no machine's address
])
def test_serve_refuses_a_start_it_cannot_serve_with_one_line(export, never_serving, options, env, reason):
    for name, value in env.items():
        never_serving.setenv(name, value)
    result = run_cli("serve", export, "--port", "0", *options)
    assert result.code == 2 and len(result.err_lines) == 1 and result.err_lines[0].startswith(reason), result


def test_serve_refuses_a_port_in_use_before_saying_it_serves(export, never_serving):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", export, "--port", port)
    assert result.code == 2 and result.err_lines == [f"error: serve: 127.0.0.1:{port} is in use by another process; "
                                                     "stop it or pick another --port"], result


def test_serve_refuses_a_directory_that_is_not_a_classifier(seg_reviews):
    result = run_cli("serve", seg_reviews, "--port", "0")
    assert result.code == 2 and len(result.err_lines) == 1, result
