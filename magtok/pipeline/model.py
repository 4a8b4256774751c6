"""The one model resolver: a model folder or a bundled name -> a loaded, frozen tokenizer.

    model = load_model("runs/demo/model")        # a folder written by save_pretrained / `magtok train`
    model = load_model("magtok-small")           # a bundled name (magtok.models.pretrained)
    model = find_model(header, "clip.tokens")    # the model a token file was made with

Order for a name that is not an existing folder: ``magtok.models.pretrained.resolve_pretrained``
(when that module exists), else it is taken as a path (and reported missing).
Finding the model of a token file (no model given):
    1. the model folder recorded in the file, if it still exists and holds the same tokenizer;
    2. every model folder found in the folders listed in ``$MAGTOK_MODEL_PATH`` (``os.pathsep``
       separated; each entry may be a model folder, or hold model folders up to two levels down);
    3. otherwise ``ModelNotFoundError`` naming the tokenizer id and how to pass a model.
A model is "the same tokenizer" when its fingerprint (config and weights) matches the file's.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from magtok.errors import InputError

__all__ = ["Model", "ModelError", "ModelNotFoundError", "DeviceError", "SkippedModelWarning", "MODEL_PATH_ENV",
           "resolve_model", "load_model", "find_model", "pick_device"]

MODEL_PATH_ENV = "MAGTOK_MODEL_PATH"


class ModelError(InputError):
    """A model argument that names no usable model (message says what to pass instead)."""


class ModelNotFoundError(ModelError):
    pass


class DeviceError(InputError):
    """A device that this machine does not have (message names the fix)."""


class SkippedModelWarning(UserWarning):
    """A folder on ``$MAGTOK_MODEL_PATH`` (or the one a token file records) that cannot be read or
    loaded; the search skips it and goes on."""


@dataclass
class Model:
    """A loaded tokenizer in eval mode, with its identities.

    ``id`` is ``tok.fingerprint()`` (config + weights, what ``magtok info MODEL`` prints);
    ``file_id`` the 8-byte fingerprint written into token files and shards."""

    tok: "torch.nn.Module"
    path: Path
    id: str
    file_id: str

    @property
    def config(self) -> dict:
        return self.tok.config.to_dict()


def _file_fingerprint(tokenizer_id: str, config: dict) -> str:
    from magtok.data import tokenizer_fingerprint
    return tokenizer_fingerprint(tokenizer_id, config)


def resolve_model(name_or_path) -> Path:
    """A model folder for a folder path or a bundled model name (no loading)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    try:
        from magtok.models.pretrained import resolve_pretrained
    except ImportError:
        resolve_pretrained = None
    if resolve_pretrained is not None:
        try:
            return Path(resolve_pretrained(str(name_or_path)))
        except (KeyError, ValueError, FileNotFoundError):
            pass            # not a bundled name either: report the path below
    if not path.exists():
        raise ModelNotFoundError(f"model folder {path} does not exist (pass a folder written by "
                                 f"`magtok train` / save_pretrained, or a bundled model name)")
    raise ModelError(f"{path} is not a magtok model folder (it needs config.json and model.safetensors, "
                     f"as written by VideoTokenizer.save_pretrained or `magtok train`)")


def pick_device(device: str | None = "auto") -> str:
    """``auto``: cuda when available (the GPU of LOCAL_RANK under torchrun), else cpu. An explicit
    device this machine does not have (``cuda`` without CUDA, ``cuda:3`` with 2 GPUs, a misspelt
    name) raises DeviceError naming the fix."""
    d = device or "auto"
    if d == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        local = os.environ.get("LOCAL_RANK")
        return f"cuda:{int(local) % torch.cuda.device_count()}" if local and local.isdigit() else "cuda"
    try:
        dev = torch.device(d)
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(f"device={d} is not a device; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this PyTorch is a CPU-only build" if torch.version.cuda is None
                   else "no CUDA GPU is visible (check the driver and CUDA_VISIBLE_DEVICES)")
            raise DeviceError(f"device={d}: CUDA is not available on this machine ({why}); use device=cpu "
                              f"(or auto), or install a CUDA build of PyTorch")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise DeviceError(f"device={d}: this machine has {n} CUDA device{'s' if n != 1 else ''} "
                              f"(cuda:0 .. cuda:{n - 1})")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError(f"device={d}: MPS (Apple GPU) is not available on this machine; use device=cpu")
    return d


def load_model(name_or_path, device: str = "cpu") -> Model:
    """Load a model folder or bundled name in eval mode. Raises ModelError with a one-line message."""
    from magtok.models.tokenizer import CONFIG_NAME, VideoTokenizer
    if isinstance(name_or_path, Model):
        return name_or_path
    map_location = pick_device(device)           # DeviceError first: the device, not the model, is wrong
    path = resolve_model(name_or_path)
    if not (path / CONFIG_NAME).exists():
        raise ModelError(f"{path} is not a magtok model folder (it needs config.json and model.safetensors, "
                         f"as written by VideoTokenizer.save_pretrained or `magtok train`)")
    try:
        tok = VideoTokenizer.from_pretrained(path, map_location=map_location)
    except (FileNotFoundError, ValueError) as e:
        raise ModelError(str(e)) from None
    except Exception as e:  # safetensors / state-dict errors: a damaged or foreign model folder
        raise ModelError(f"cannot load the model in {path}: {type(e).__name__}: {e}") from None
    if tok.needs_cond:
        raise ModelError(f"the model in {path} is conditioned (dim_cond={tok.config.dim_cond}); "
                         f"the pipeline does not pass conditions: call the tokenizer from Python")
    tok.eval()
    fp = tok.fingerprint()
    return Model(tok, path.resolve(), fp, _file_fingerprint(fp, tok.config.to_dict()))


def _declared_file_id(model_dir: Path) -> str | None:
    """The token-file fingerprint a model folder declares in its config.json (cheap pre-check)."""
    try:
        return _declared(model_dir)
    except Exception:
        return None


def _declared(model_dir: Path) -> str | None:
    """Like ``_declared_file_id``, but a config.json that cannot be read, is not JSON or is a damaged
    magtok config raises (with the reason); a config.json of something else gives None."""
    try:
        text = (model_dir / "config.json").read_text()
    except UnicodeDecodeError:
        raise ValueError("config.json is not text") from None
    except OSError as e:
        raise ValueError(f"config.json cannot be read ({e.strerror or e})") from None
    try:
        meta = json.loads(text)
    except ValueError as e:
        raise ValueError(f"config.json is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or ("fingerprint" not in meta and "config" not in meta):
        return None                                  # some other program's config.json: not a magtok model
    try:
        return _file_fingerprint(meta["fingerprint"], meta["config"])
    except Exception as e:
        raise ValueError(f"config.json is not a valid magtok model config ({type(e).__name__}: {e})") from None


def _skip(folder: Path, reason: str, skipped: list[str]) -> None:
    skipped.append(f"{folder} ({reason})")
    warnings.warn(f"skipped the model folder {folder}: {reason}", SkippedModelWarning, stacklevel=3)


def _try_candidate(d: Path, fp: str, device: str, skipped: list[str]) -> Model | None:
    """The model in folder ``d`` if it is the tokenizer ``fp``; a broken folder is skipped with a warning."""
    try:
        if _declared(d) != fp:
            return None
    except ValueError as e:
        _skip(d, str(e), skipped)
        return None
    try:
        m = load_model(d, device)
    except DeviceError:
        raise                                        # the device, not the folder, is wrong
    except (ModelError, OSError) as e:
        _skip(d, str(e), skipped)
        return None
    return m if m.file_id == fp else None


def _model_candidates(env: str) -> list[Path]:
    out: list[Path] = []
    for entry in env.split(os.pathsep):
        if not entry:
            continue
        level = [Path(entry).expanduser()]
        for _ in range(3):       # the entry itself, its children, its grandchildren
            nxt = []
            for d in level:
                try:             # a folder that cannot be listed or entered is passed over
                    if (d / "config.json").is_file():
                        out.append(d)
                    elif d.is_dir():
                        nxt += sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
                except OSError:
                    pass
            level = nxt
    return out


def token_file_ids(header: dict) -> tuple[str, str]:
    """(tokenizer id to show, token-file fingerprint) of a token file header."""
    fp = header["tokenizer_fingerprint"]
    shown = (header.get("extra") or {}).get("tokenizer") or header.get("tokenizer_id") or f"file fingerprint {fp}"
    return shown, fp


def find_model(header: dict, token_path, model=None, device: str = "cpu") -> Model:
    """The model for a token file: ``model`` (checked), the recorded folder, or $MAGTOK_MODEL_PATH."""
    shown, fp = token_file_ids(header)
    if model is not None:
        m = load_model(model, device)
        if m.file_id != fp:
            raise ModelError(f"{token_path} was made by tokenizer {shown}, but model={model} is "
                             f"tokenizer {m.id}: pass the model folder the tokens were made with")
        return m
    tried, skipped = [], []
    pick_device(device)                              # a device error is about the device, not a model
    recorded = (header.get("extra") or {}).get("model")
    if recorded:
        d = Path(recorded)
        if (d / "config.json").is_file():
            m = _try_candidate(d, fp, device, skipped)
            if m is not None:
                return m
        if not skipped:
            tried.append(f"the recorded model folder {recorded} "
                         + ("holds another tokenizer" if d.exists() else "no longer exists"))
    env = os.environ.get(MODEL_PATH_ENV, "")
    for d in _model_candidates(env):
        m = _try_candidate(d, fp, device, skipped)
        if m is not None:
            return m
    tried.append(f"${MODEL_PATH_ENV} ({env!r}) has no model with this tokenizer" if env
                 else f"${MODEL_PATH_ENV} is not set")
    if skipped:
        tried.append(f"skipped {len(skipped)} unusable folder{'s' if len(skipped) != 1 else ''}: "
                     + ", ".join(skipped))
    raise ModelNotFoundError(f"cannot find the model for {token_path}: it was made by tokenizer {shown}; "
                             f"{'; '.join(tried)}. Pass model=DIR, or list a folder holding the model folder "
                             f"in ${MODEL_PATH_ENV}")
