"""Inputs that could hurt: YAML is read with a safe loader, and the package unpickles no file a user names.

Pipeline files, --var and --set values go through yaml.safe_load: a `!!python/...` tag is a one-line
error (exit 2) and never runs. The source scan lists every call in nlp_pipe/ that can execute code
from a file (pickle, torch.load without weights_only=True, np.load with allow_pickle=True, gensim
`.load`, accelerate `load_state`, yaml.load, eval/exec, trust_remote_code=True); each one found must be
in REVIEWED with the reason it is safe, so a new one fails the test until someone has looked at it.
"""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest

from conftest import FIXTURES, run_cli

PACKAGE = Path(__file__).resolve().parents[2] / "nlp_pipe"

# (file, call) -> why it is acceptable. Keep the reasons honest: these are reported, not fixed, risks.
REVIEWED = {
    ("vectors/store.py", "KeyedVectors.load"): "vectors.kv (a pickle) of a word2vec/import-vectors artifact, loaded only "
                                         "when its sha256 matches the manifest; and the reload right after writing it",
    ("training/loop.py", "torch.load"): "best.pt that training itself wrote into its checkpoint, loaded with weights_only=True",
    ("training/trainer.py", "acc.load_state"): "accelerate unpickles custom_checkpoint_*.pkl (weights_only=False) from "
                                       "NAME.checkpoints/step_*/, written by the same stage; trust = the output dir's",
}

PICKLING_OWNERS = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve", "KeyedVectors", "Word2Vec",
                   "FastText", "Doc2Vec", "Phrases", "FrozenPhrases", "LdaModel", "SaveLoad"}


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return "?"


def keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<expr>"
    return None


def risky(call: ast.Call) -> str | None:
    """Why this call may run code from a file, or None."""
    name = dotted(call.func)
    owner, _, attr = name.rpartition(".")
    last_owner = owner.rpartition(".")[2]
    if name in ("eval", "exec"):
        return "eval/exec"
    if attr in ("load", "loads", "open") and last_owner in PICKLING_OWNERS:
        return "pickle"
    if attr == "load" and last_owner == "torch" and keyword(call, "weights_only") is not True:
        return "torch.load without weights_only=True"
    if attr == "load" and last_owner in ("np", "numpy") and keyword(call, "allow_pickle") not in (None, False):
        return "np.load with allow_pickle"
    loader = [dotted(kw.value) for kw in call.keywords if kw.arg == "Loader"] + [dotted(a) for a in call.args[1:2]]
    if attr in ("unsafe_load", "full_load", "unsafe_load_all", "full_load_all") or (
            last_owner == "yaml" and attr in ("load", "load_all") and not any("Safe" in name for name in loader)):
        return "yaml without SafeLoader"
    if attr == "load_state":
        return "accelerate load_state (custom objects are unpickled)"
    if attr == "read_pickle":
        return "pandas read_pickle"
    if keyword(call, "trust_remote_code") not in (None, False):
        return "trust_remote_code"
    return None


def scan() -> list[tuple[str, str, int, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and (why := risky(node)):
                found.append((path.relative_to(PACKAGE).as_posix(), dotted(node.func), node.lineno, why))
    return found


def test_no_unreviewed_code_loading_from_files():
    found = scan()
    new = [f"nlp_pipe/{file}:{line}: {call} ({why})" for file, call, line, why in found if (file, call) not in REVIEWED]
    assert new == [], "calls that can run code from a file; make them safe or add them to REVIEWED with a reason:\n" + "\n".join(new)


def test_the_scan_finds_what_it_looks_for():
    """The detector is not blind: each pattern in a snippet is reported, and the safe forms are not."""
    unsafe = ["pickle.load(fh)", "torch.load(p)", "torch.load(p, weights_only=False)", "np.load(p, allow_pickle=True)",
              "KeyedVectors.load(p)", "gensim.models.Word2Vec.load(p)", "yaml.load(text)", "yaml.unsafe_load(text)",
              "yaml.load(text, Loader=yaml.Loader)", "acc.load_state(d)", "eval(s)",
              "AutoModel.from_pretrained(p, trust_remote_code=True)"]
    safe = ["torch.load(p, weights_only=True)", "np.load(p)", "yaml.safe_load(text)", "json.load(fh)",
            "AutoModel.from_pretrained(p)", "yaml.load(text, Loader=yaml.SafeLoader)", "yaml.load(text, yaml.CSafeLoader)",
            "load_file(p)"]
    for source in unsafe:
        assert risky(ast.parse(source).body[0].value), source
    for source in safe:
        assert risky(ast.parse(source).body[0].value) is None, source


def test_torch_load_defaults_to_weights_only(tmp_path):
    """What makes the REVIEWED torch.load safe: a pickled object that is not plain tensors/containers is refused."""
    torch = pytest.importorskip("torch")
    path, marker = tmp_path / "evil.pt", tmp_path / "ran"
    torch.save({"weights": torch.zeros(2), "payload": Payload(marker)}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, map_location="cpu")
    assert not marker.exists()


class Payload:
    """Unpickling it runs code: touches `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


PAYLOADS = [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/apply:subprocess.check_call [['touch', '{marker}']]",
    "!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
    "!!python/name:os.system",
]


@pytest.mark.parametrize("where", ["stages", "var", "config", "input"])
@pytest.mark.parametrize("payload", PAYLOADS, ids=["apply", "apply-list", "new", "name"])
def test_python_tags_in_a_pipeline_are_rejected_and_never_run(tmp_path, payload, where):
    marker = tmp_path / "ran"
    tagged = payload.format(marker=marker)
    body = {
        "stages": f"stages: {tagged}\n",
        "var": f"vars:\n  corpus: {tagged}\nstages:\n  - stage: segment\n    inputs: {{corpus: '${{vars.corpus}}'}}\n",
        "config": f"stages:\n  - stage: segment\n    inputs: {{corpus: {FIXTURES / 'bom.txt'}}}\n    config:\n      mode: {tagged}\n",
        "input": f"stages:\n  - stage: segment\n    inputs:\n      corpus: {tagged}\n",
    }[where]
    path = tmp_path / "pipe.yaml"
    path.write_text(f"workdir: {tmp_path / 'runs'}\n" + body, encoding="utf-8")
    for command in ("status", "run"):
        result = run_cli(command, path)
        assert result.code == 2 and len(result.err_lines) == 1 and "Traceback" not in result.err, result
        assert "not valid YAML" in result.err_lines[0] and "python/" in result.err_lines[0]
    assert not marker.exists() and not (tmp_path / "runs").exists()


def test_python_tags_on_the_command_line_stay_text(tmp_path):
    """--var and --set values are parsed with yaml.safe_load; a tag that it refuses is kept as a plain string."""
    marker = tmp_path / "ran"
    path = tmp_path / "pipe.yaml"
    path.write_text(f"workdir: {tmp_path / 'runs'}\nvars: {{corpus: x.txt}}\nstages:\n"
                    f"  - stage: segment\n    inputs: {{corpus: '${{vars.corpus}}'}}\n", encoding="utf-8")
    tagged = f"!!python/object/apply:os.system ['touch {marker}']"
    result = run_cli("run", path, "--var", f"corpus={tagged}")
    assert result.code == 2 and "which does not exist" in result.err_lines[0]
    result = run_cli("run", path, "--set", f"segment.mode={tagged}")
    assert result.code == 2 and "is not one of: accurate, search" in result.err_lines[0]
    assert not marker.exists()
