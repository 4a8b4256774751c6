"""The `magtok` entry point: only magtok's user-error type (and, transitionally, a ValueError/OSError
raised by magtok's own code) becomes a one-line exit 2; anything else keeps its traceback. Config values
of the wrong shape get a clear line. `magtok --help` never imports torch."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from magtok.cli import main as cli_main
from magtok.cli.main import COMMANDS, build_parser, main
from magtok.cli.train import load_train_config
from magtok.errors import ConfigError, UserError

REPO = Path(__file__).resolve().parents[2]


def _recipe(tmp_path, **data):
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump({"model": "tiny", "output_dir": str(tmp_path / "run"), **data}))
    return str(p)


@pytest.mark.parametrize("data,overrides,message", [
    ({"data": 5}, [], "config key 'data' must be a section"),
    ({"optim": [1, 2]}, [], "config key 'optim' must be a section"),
    ({}, ["optim.betas=5"], "optim.betas must be two numbers in [0, 1)"),
    ({}, ["optim.betas=[0.9,2]"], "optim.betas must be two numbers in [0, 1)"),
    ({}, ["data.size=[16]"], "data.size must be an integer or [height, width]"),
    ({}, ["steps=0"], "steps must be an integer >= 1"),
    ({}, ["optim.lr=-1"], "optim.lr must be a positive number"),
    ({}, ["mixed_precision=fp8"], "mixed_precision 'fp8'"),
    ({"model_overrides": 3}, [], "model_overrides"),
])
def test_config_values_of_the_wrong_shape_are_one_clear_line(tmp_path, capsys, data, overrides, message):
    with pytest.raises(ConfigError) as e:
        load_train_config(_recipe(tmp_path, **data), overrides)
    assert message in str(e.value)
    assert main(["train", "--config", _recipe(tmp_path, **data), *overrides]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_square_size_is_a_safe_default(tmp_path):
    assert load_train_config(_recipe(tmp_path), ["data.size=16"]).data.size == (16, 16)


def test_broken_yaml_and_non_mapping_files(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [tiny\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "is not valid YAML" in capsys.readouterr().err
    bad.write_text("- 1\n- 2\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "must hold a mapping" in capsys.readouterr().err


def test_an_unavailable_tracker_is_a_clear_error(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    if __import__("importlib").util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    assert main(["train", "--config", _recipe(tmp_path), "--log-with", "wandb"]) == 2
    assert "pip install wandb" in capsys.readouterr().err
    assert main(["train", "--config", _recipe(tmp_path), "--log-with", "nope"]) == 2
    assert "unknown tracker" in capsys.readouterr().err


def _fail_with(monkeypatch, exc):
    import magtok.cli.train as train

    def run(args):
        raise exc

    monkeypatch.setattr(train, "run", run)


def test_only_user_errors_become_exit_2(tmp_path, monkeypatch, capsys):
    _fail_with(monkeypatch, UserError("do this instead"))
    assert main(["train"]) == 2
    assert capsys.readouterr().err.strip() == "magtok train: error: do this instead"
    # a RuntimeError (a bug, or out of memory) keeps its traceback
    _fail_with(monkeypatch, RuntimeError("CUDA out of memory"))
    with pytest.raises(RuntimeError, match="out of memory"):
        main(["train"])
    # so does a ValueError that magtok did not raise itself (here: raised in this test file)
    _fail_with(monkeypatch, ValueError("inside a dependency"))
    with pytest.raises(ValueError):
        main(["train"])
    # and a MemoryError
    _fail_with(monkeypatch, MemoryError())
    with pytest.raises(MemoryError):
        main(["train"])


def test_a_value_error_raised_by_magtok_code_is_still_a_user_error(tmp_path, capsys):
    # transitional: library modules that still raise ValueError for bad input
    assert main(["train", "--config", _recipe(tmp_path, data={"train_dir": ""})]) == 2
    assert "train_dir is empty" in capsys.readouterr().err


def test_real_bug_in_a_subprocess_shows_the_traceback(tmp_path):
    script = ("import sys, magtok.cli.train as t\n"
              "def run(a): raise RuntimeError('a bug')\n"
              "t.run = run\nfrom magtok.cli.main import main\nsys.exit(main(['train']))\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 1 and "Traceback" in res.stderr and "RuntimeError: a bug" in res.stderr


def test_help_does_not_import_torch():
    code = ("import sys\nfrom magtok.cli.main import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n")
    for argv in (["--help"], [], ["train", "--help"]):
        res = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120,
                             cwd=REPO)
        assert res.stdout.strip().splitlines()[-1] == "NO-TORCH", (argv, res.stdout[-500:], res.stderr[-500:])
        if argv != ["train", "--help"]:
            assert "tokenize-dataset" in res.stdout and "train" in res.stdout


def test_the_command_table_matches_the_modules():
    parser = build_parser(None)  # every module registered
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    registered = {c.dest: c.help for c in sub._choices_actions}
    assert registered == {name: help_ for name, (_, help_) in COMMANDS.items()}
    for name, (module, _) in COMMANDS.items():
        assert name in build_parser(name)._actions[-1].choices


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    from magtok import __version__

    assert capsys.readouterr().out.strip() == f"magtok {__version__}"
