"""`xlpo push`: upload a run's saved adapter or model, with its model card, to the Hugging Face Hub.

The token is read from the environment only (HF_TOKEN unless told otherwise) and handed to
huggingface_hub; it is never written to a file, a log or an error message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import httpx2  # huggingface_hub's HTTP client: its errors are those of a refused or failed request
from huggingface_hub import HfApi
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from xlpo.errors import UserError
from xlpo.fileio import read_json
from xlpo.model_card import is_xlpo_card, write_card
from xlpo.train.run import TrainRun


@dataclass
class Pushed:
    folder: Path
    repo_id: str
    url: str
    card_written: bool  # the folder had no xlpo card yet (a run from before cards): one was written first


def saved_folder(run_dir: str | Path) -> Path:
    """The adapter/ or model/ of a training run, or `run_dir` itself when it is such a folder."""
    run_dir = Path(run_dir)
    run = TrainRun(run_dir)
    for folder in (run.adapter, run.model, run_dir):
        if (folder / "adapter_config.json").is_file() or (folder / "config.json").is_file():
            if any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")):
                return folder
    raise UserError(f"{run_dir}: no saved adapter or model (expected {run_dir}/adapter or {run_dir}/model "
                    "from `xlpo train`, or a folder holding adapter_config.json or config.json with weights)")


def ensure_card(folder: Path) -> bool:
    """Write the card of a folder saved before xlpo wrote cards, from its run's files; True if written."""
    run = TrainRun(folder.parent)
    if is_xlpo_card(folder) or not (run.config_file.is_file() and run.summary_file.is_file()):
        return False
    versions = read_json(run.versions_file) if run.versions_file.is_file() else {}
    write_card(folder, run.saved_config(), run.summary(), versions)
    return True


def push(run_dir: str | Path, repo_id: str, private: bool = False, token_env: str = "HF_TOKEN",
         api: HfApi | None = None) -> Pushed:
    """Create `repo_id` (if needed; private when asked) and upload the run's adapter or model folder."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise UserError(f"repo id '{repo_id}': {str(exc).splitlines()[0]}") from None
    folder = saved_folder(run_dir)
    token = os.environ.get(token_env)
    if not token:
        raise UserError(f"no Hugging Face token: set {token_env} in the environment to a token with write access "
                        "(https://huggingface.co/settings/tokens)")
    written = ensure_card(folder)
    api = api or HfApi()
    try:
        repo = api.create_repo(repo_id, token=token, private=private, repo_type="model", exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), token=token, repo_type="model",
                                   commit_message=f"Upload {folder.name} trained with xlpo")
    except (httpx2.HTTPError, OSError) as exc:  # refused (HfHubHTTPError), or no connection
        raise UserError(f"push to {repo_id}: {_reason(exc, token)}") from None
    url = getattr(repo, "url", None) or f"https://huggingface.co/{repo_id}"
    return Pushed(folder, repo_id, str(getattr(commit, "commit_url", None) or url), written)


def _reason(exc: Exception, token: str) -> str:
    """The error's first line, never the token (some messages echo request headers)."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    hint = {401: " (the token was refused: check it)", 403: " (the token may not write to this namespace)"}.get(status, "")
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].replace(token, "***")
    return first + hint
