"""Hugging Face Hub ids in from_pretrained (offline, from a local cache) and push_to_hub (faked API)."""

from pathlib import Path

import pytest
import torch

from magtok import VideoTokenizer
from magtok.errors import InputError, MissingError
from magtok.models.hub import hub_snapshot, is_repo_id

SHA = "0123456789abcdef0123456789abcdef01234567"


def _fake_cache(cache: Path, repo_id: str, model: VideoTokenizer) -> Path:
    """The layout huggingface_hub's cache uses: models--owner--name/{refs/main, snapshots/<sha>/...}."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / SHA
    model.save_pretrained(snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SHA)
    return snap


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_from_pretrained_takes_a_hub_repo_id_offline(offline_cache, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no local folder called owner/tiny-tok
    torch.manual_seed(0)
    tok = VideoTokenizer("tiny")
    snap = _fake_cache(offline_cache, "owner/tiny-tok", tok)
    assert hub_snapshot("owner/tiny-tok") == snap
    loaded = VideoTokenizer.from_pretrained("owner/tiny-tok")
    assert loaded.fingerprint() == tok.fingerprint()
    assert not loaded.training  # from_pretrained returns eval mode


def test_hub_errors_are_clear(offline_cache):
    with pytest.raises(MissingError, match="not in the Hugging Face cache.*HF_HUB_OFFLINE"):
        hub_snapshot("owner/absent")
    with pytest.raises(InputError, match="owner/name"):
        hub_snapshot("not a repo id")
    assert is_repo_id("my-org/magtok-small") and not is_repo_id("../x") and not is_repo_id("a/b/c")


def test_from_pretrained_of_a_folder_is_in_eval_mode(tmp_path):
    VideoTokenizer("tiny").save_pretrained(tmp_path / "m")
    assert not VideoTokenizer.from_pretrained(tmp_path / "m").training


def test_push_to_hub_uploads_config_weights_and_card(monkeypatch):
    import huggingface_hub

    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False, token=None):
            calls["create"] = (repo_id, private, exist_ok)

        def upload_folder(self, repo_id, folder_path, **kw):
            calls["files"] = sorted(p.name for p in Path(folder_path).iterdir())
            calls["card"] = (Path(folder_path) / "README.md").read_text()
            return "commit"

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    tok = VideoTokenizer("tiny")
    assert tok.push_to_hub("owner/tok", private=True, token="t") == "commit"
    assert calls["create"] == ("owner/tok", True, True) and calls["token"] == "t"
    assert calls["files"] == ["README.md", "config.json", "model.safetensors"]
    assert "from_pretrained(\"owner/tok\")" in calls["card"] and tok.fingerprint() in calls["card"]
