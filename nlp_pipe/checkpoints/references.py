"""Model inputs given as Hugging Face Hub ids (`org/name`, `org/name@revision`), resolved through the local cache.

    resolved = resolve("hfl/chinese-roberta-wwm-ext@main")   # -> HubModel(repo_id, revision, commit, path)

Resolution is huggingface_hub's `snapshot_download`, so HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE and the
token from the usual places apply exactly as in every Hugging Face tool. Only the files a model
directory needs are fetched (configs, tokenizer files, and the weights in one format: safetensors when
the repo has them, else pytorch_model*.bin; many repos ship both, and from_pretrained reads one). The commit a revision resolves to is
the input's identity: a moved `main` makes the stage rerun, a pinned commit does not. Offline and not
in the cache: one line saying so and the `hf download` command that fixes it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UserError

# config, tokenizer and vocabulary files: what from_pretrained reads besides the weights
MODEL_FILES = ["*.json", "vocab.txt", "*.model", "merges.txt", "*.txt"]
SAFETENSORS, PYTORCH_BIN = "*.safetensors", "pytorch_model*.bin"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}(@[\w./-]{1,128})?")


@dataclass(frozen=True)
class HubModel:
    repo_id: str
    revision: str  # as asked ("main" when none was)
    commit: str  # what it resolved to
    path: Path  # the snapshot directory in the local cache

    @property
    def fingerprint(self) -> str:
        return f"hf:{self.repo_id}@{self.commit}"

    def record(self) -> dict[str, str]:
        return {"id": self.repo_id, "revision": self.revision, "commit": self.commit, "path": str(self.path)}


def looks_like_hub_id(text: str) -> bool:
    return bool(_HUB_ID.fullmatch(text)) and not text.startswith(("./", "../"))


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def resolve(text: str) -> HubModel:
    """The snapshot of `org/name[@revision]` in the local Hugging Face cache (downloaded first when online)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, _, revision = text.partition("@")
    fetch = f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")
    try:
        path = Path(snapshot_download(repo_id, revision=revision or None, local_files_only=offline(),
                                      allow_patterns=[*MODEL_FILES, *weight_files(repo_id, revision or None)]))
    except LocalEntryNotFoundError:
        where = "HF_HUB_OFFLINE is set" if offline() else "the Hub cannot be reached"
        raise UserError(f"{text}: no such directory (check the path); read as a Hub model id, it is not in the local "
                        f"Hugging Face cache and {where} (to use that model, download it first: {fetch})") from None
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise UserError(f"{repo_id}: no such model on the Hub, or it needs a token ({type(exc).__name__}); check the id, "
                        "or log in with `hf auth login`") from None
    except RevisionNotFoundError:
        raise UserError(f"{repo_id} has no revision '{revision}'; give a branch, tag or commit that exists") from None
    except HFValidationError as exc:
        raise UserError(f"{text} is not a valid Hub id ({str(exc).splitlines()[0]})") from None
    except HfHubHTTPError as exc:
        raise UserError(f"{text}: the Hub answered {str(exc).splitlines()[0]}; retry, or use a local directory") from None
    if not (path / "config.json").is_file():
        raise UserError(f"{text}: the cached snapshot {path} has no config.json; is it a model repository? Re-download: {fetch}")
    return HubModel(repo_id, revision or "main", path.name, path)


def weight_files(repo_id: str, revision: str | None) -> list[str]:
    """The weight pattern to fetch: safetensors when the repo has them, else pytorch_model*.bin. Offline, or when
    the listing fails, both: nothing is downloaded then, or snapshot_download reports the failure itself."""
    from huggingface_hub import HfApi

    if offline():
        return [SAFETENSORS, PYTORCH_BIN]
    try:
        files = HfApi().list_repo_files(repo_id, revision=revision)
    except Exception:  # noqa: BLE001 - the listing only saves a download; snapshot_download names what is wrong
        return [SAFETENSORS, PYTORCH_BIN]
    return [SAFETENSORS] if any(f.endswith(".safetensors") for f in files) else [PYTORCH_BIN]
