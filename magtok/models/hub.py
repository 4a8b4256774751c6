"""Hugging Face Hub: download a model folder by repo id, upload one.

    path = hub_snapshot("owner/magtok-small")          # -> local folder with config.json + model.safetensors
    push_to_hub(tok, "owner/my-tokenizer")              # save_pretrained into a temp folder, then upload

Only ``config.json`` and ``model.safetensors`` (and a README, if present) are fetched or sent: no
pickles. Offline (``HF_HUB_OFFLINE=1``, or ``local_files_only=True``) the snapshot must already be in
the Hugging Face cache (``HF_HUB_CACHE`` / ``HF_HOME``); the error says how to fill it.
``huggingface_hub`` is imported only when these functions run.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from magtok.errors import InputError, MissingError, UserError

MODEL_FILES = ["config.json", "model.safetensors", "README.md"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def is_repo_id(name: str) -> bool:
    """Whether ``name`` has the form of a Hub repo id ("owner/name"); says nothing about existence."""
    return bool(_REPO_ID.match(str(name))) and ".." not in str(name)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise UserError("loading from or pushing to the Hugging Face Hub needs huggingface_hub: "
                        "pip install 'huggingface_hub>=0.24'") from None
    return huggingface_hub


def hub_snapshot(repo_id: str, revision: str | None = None, *, cache_dir: str | os.PathLike | None = None,
                 local_files_only: bool | None = None, token: str | bool | None = None) -> Path:
    """The local folder of ``repo_id`` at ``revision`` (default: the main branch), downloaded into the
    Hugging Face cache unless it is there already. ``local_files_only`` defaults to ``HF_HUB_OFFLINE``."""
    if not is_repo_id(repo_id):
        raise InputError(f"{repo_id!r} is not a Hugging Face Hub repo id; use the form owner/name "
                         "(e.g. my-org/magtok-small) or a local folder")
    hub = _hub()
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    offline = _offline() if local_files_only is None else local_files_only
    try:
        path = hub.snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=offline,
                                     allow_patterns=MODEL_FILES, token=token, library_name="magtok")
    except LocalEntryNotFoundError:
        at = f"@{revision}" if revision else ""
        raise MissingError(f"{repo_id}{at} is not in the Hugging Face cache and downloads are off "
                           f"(offline); download it once with network access (unset HF_HUB_OFFLINE), or pass a "
                           f"local model folder") from None
    except RevisionNotFoundError:
        raise MissingError(f"{repo_id} has no revision {revision!r}; use a branch, tag or commit of the repo") \
            from None
    except GatedRepoError:
        raise UserError(f"{repo_id} is gated: accept its terms on huggingface.co and log in "
                        "(`huggingface-cli login` or HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise MissingError(f"{repo_id} does not exist on the Hugging Face Hub (or is private: log in with "
                           "`huggingface-cli login` or set HF_TOKEN)") from None
    path = Path(path)
    if not (path / "config.json").exists() or not (path / "model.safetensors").exists():
        raise MissingError(f"{repo_id} on the Hub is not a magtok model: it needs config.json and model.safetensors "
                           "(written by VideoTokenizer.save_pretrained / push_to_hub)")
    return path


def push_to_hub(model, repo_id: str, *, private: bool | None = None, token: str | bool | None = None,
                commit_message: str = "Upload magtok tokenizer", revision: str | None = None,
                create_pr: bool = False):
    """Upload ``model`` (a VideoTokenizer) as ``config.json`` + ``model.safetensors`` to ``repo_id``,
    creating the repo if needed. Returns the ``CommitInfo``. Needs a token (``huggingface-cli login``)."""
    if not is_repo_id(repo_id):
        raise InputError(f"{repo_id!r} is not a Hugging Face Hub repo id; use the form owner/name")
    if _offline():
        raise UserError("HF_HUB_OFFLINE is set: unset it to push to the Hugging Face Hub")
    hub = _hub()
    api = hub.HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, token=token)
    with tempfile.TemporaryDirectory(prefix="magtok-push-") as tmp:
        model.save_pretrained(tmp)
        readme = Path(tmp) / "README.md"
        readme.write_text(_model_card(model, repo_id))
        return api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message, token=token,
                                 revision=revision, create_pr=create_pr)


def _model_card(model, repo_id: str) -> str:
    cfg = model.config
    return (f"---\nlibrary_name: magtok\ntags:\n- video-tokenizer\n- magvit2\n---\n\n# {repo_id}\n\n"
            f"A magtok video tokenizer (fingerprint `{model.fingerprint()}`): {cfg.quantizer.kind.upper()} "
            f"quantizer, codebook size {model.codebook_size}.\n\n"
            f"```python\nfrom magtok import VideoTokenizer\ntok = VideoTokenizer.from_pretrained(\"{repo_id}\")\n```\n")
