"""Benchmark harness: run one measurement in a fresh Python process, safely.

    from _measure import measure, markdown_table, machine_info

    r = measure("bench_tokenizer:make_encode", dict(size=128, frames=17), factory=True,
                repeats=5, warmup=1, mem_limit_gb=20, timeout_s=600)
    r["median_s"], r["peak_delta_mib"], r["status"], r.get("error")

What is measured
----------------
``fn_spec`` names a module-level function the child can import: ``"module:function"`` (the
repository root and ``benchmarks/`` are on the child's ``sys.path``), ``"path/to/file.py:function"``,
or the function object itself (a function of a script run as ``__main__`` is found through the
script's file). It is called with ``**kwargs`` (JSON-serialisable).

* ``factory=False`` (default): each repeat times ``fn(**kwargs)``.
* ``factory=True``: ``fn(**kwargs)`` is called once (setup: build the model, the input; timed
  separately as ``setup_s``) and must return a zero-argument callable, which is what the
  repeats time (e.g. one forward pass).

``warmup`` untimed calls run first. The last call's return value is reported as ``result``
when it is JSON-serialisable (handy for sizes, token counts, losses).

Memory: the child's peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, a high-water mark)
is read right after the imports (torch and the spec's module: ``rss_baseline_mib``), after the
setup (``rss_after_setup_mib``) and at the end (``peak_rss_mib``); ``peak_delta_mib`` =
peak - baseline is what the measured code itself needed at most (setup included).

Safety: the child sets ``RLIMIT_AS`` to ``mem_limit_gb`` before importing anything, so a runaway
allocation (e.g. the peer's LFQ at 2^18 codes, which builds tokens x 2^18 tensors) fails with a
catchable error inside the child (torch raises ``RuntimeError: DefaultCPUAllocator: can't
allocate memory``) instead of driving the machine out of memory. The child runs in its own
session and is killed (with its process group) after ``timeout_s``. Nothing raises in the
parent: failures come back as ``status`` = ``"error"`` (with ``error_type``, ``error``,
``oom``), ``"timeout"`` or ``"crashed"`` (the child died without reporting, e.g. a signal).

Dependency-free: standard library (+ torch in the child). Self-test: ``python benchmarks/_measure.py``.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent

__all__ = ["measure", "markdown_table", "machine_info", "format_time", "format_mib", "resolve_spec"]

_OOM_MARKERS = (
    "can't allocate memory",
    "cannot allocate memory",
    "not enough memory",
    "out of memory",
    "std::bad_alloc",
    "memoryerror",
)

# --------------------------------------------------------------------------- the child

_CHILD = r"""
import json, os, resource, sys, time, traceback
cfg = json.loads(sys.argv[1])

def maxrss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux

res = {"status": "error", "times_s": [], "pid": os.getpid()}
t_start = time.perf_counter()
phase = "rlimit"

def write():
    res["child_wall_s"] = time.perf_counter() - t_start
    res["phase"] = phase
    res["peak_rss_mib"] = maxrss_mib()
    tmp = cfg["out"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f, default=repr)
    os.replace(tmp, cfg["out"])

try:
    limit = cfg.get("mem_limit_bytes")
    if limit:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    res["rlimit_as_bytes"] = resource.getrlimit(resource.RLIMIT_AS)[0]
    phase = "import"
    sys.path[:0] = [p for p in cfg["sys_path"] if p not in sys.path]
    import importlib, importlib.util
    import torch
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    res["torch_threads"] = torch.get_num_threads()
    if cfg.get("seed") is not None:
        torch.manual_seed(int(cfg["seed"]))
    target, func = cfg["target"], cfg["func"]
    if target.endswith(".py"):
        spec = importlib.util.spec_from_file_location("_measure_target", target)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["_measure_target"] = mod
        spec.loader.exec_module(mod)
    else:
        mod = importlib.import_module(target)
    fn = mod
    for part in func.split("."):
        fn = getattr(fn, part)
    res["rss_baseline_mib"] = maxrss_mib()
    kwargs = cfg.get("kwargs") or {}
    if cfg["factory"]:
        phase = "setup"
        t0 = time.perf_counter()
        call = fn(**kwargs)
        res["setup_s"] = time.perf_counter() - t0
        if not callable(call):
            raise TypeError(f"factory {func} returned {type(call).__name__}, not a callable")
    else:
        call = lambda: fn(**kwargs)
    res["rss_after_setup_mib"] = maxrss_mib()
    out = None
    phase = "warmup"
    for _ in range(int(cfg["warmup"])):
        out = call()
    phase = "repeats"
    for _ in range(int(cfg["repeats"])):
        t0 = time.perf_counter()
        out = call()
        res["times_s"].append(time.perf_counter() - t0)
    try:
        json.dumps(out)
        res["result"] = out
    except (TypeError, ValueError):
        res["result"] = None if out is None else repr(out)[:500]
    phase = "done"
    res["status"] = "ok"
except BaseException as e:  # MemoryError, RuntimeError (allocator), KeyboardInterrupt, SystemExit...
    res["error_type"] = type(e).__name__
    res["error"] = str(e)[:2000]
    res["traceback"] = traceback.format_exc()[-4000:]
    try:
        write()
    finally:
        os._exit(0)
write()
sys.stdout.flush(); sys.stderr.flush()
os._exit(0)
"""


def resolve_spec(fn_spec: str | Callable) -> tuple[str, str]:
    """``(target, function)`` for the child: ``target`` is a module name or a ``.py`` path."""
    if callable(fn_spec):
        mod_name = getattr(fn_spec, "__module__", None)
        qualname = getattr(fn_spec, "__qualname__", getattr(fn_spec, "__name__", None))
        if not mod_name or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
            raise ValueError(f"{fn_spec!r} is not a module-level function the child can import")
        if mod_name == "__main__":
            path = getattr(sys.modules["__main__"], "__file__", None) or inspect.getsourcefile(fn_spec)
            if not path:
                raise ValueError(f"cannot locate the file of __main__ to import {qualname} in the child")
            return str(Path(path).resolve()), qualname
        return mod_name, qualname
    if not isinstance(fn_spec, str) or ":" not in fn_spec:
        raise ValueError(f"fn_spec must be 'module:function', 'file.py:function' or a function, got {fn_spec!r}")
    target, func = fn_spec.rsplit(":", 1)
    if target.endswith(".py"):
        target = str(Path(target).resolve())
    return target, func


def _is_oom(error_type: str | None, message: str | None) -> bool:
    text = f"{error_type or ''} {message or ''}".lower()
    return error_type == "MemoryError" or any(m in text for m in _OOM_MARKERS)


def _tail(text: str | bytes | None, n: int = 2000) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text[-n:]


def measure(
    fn_spec: str | Callable,
    kwargs: dict | None = None,
    *,
    repeats: int = 5,
    warmup: int = 1,
    factory: bool = False,
    mem_limit_gb: float | None = 20,
    timeout_s: float = 600,
    threads: int | None = None,
    seed: int | None = 0,
    extra_sys_path: Iterable[str | os.PathLike] = (),
    env: dict | None = None,
    echo: bool = False,
) -> dict[str, Any]:
    """Run ``fn_spec`` in a fresh Python process; never raises for a failing measurement.

    Returns a dict: ``status`` ("ok" | "error" | "timeout" | "crashed") and ``ok``;
    ``times_s``, ``median_s``, ``min_s``, ``max_s``, ``mean_s`` (seconds; None without a
    timing); ``setup_s`` (factory mode); ``rss_baseline_mib``, ``rss_after_setup_mib``,
    ``peak_rss_mib``, ``peak_delta_mib`` (peak - baseline); ``result`` (the last return value);
    on failure ``error_type``, ``error``, ``oom`` (an allocation failure), ``phase`` (where it
    failed: import, setup, warmup, repeats) and ``traceback`` / ``stderr_tail``; plus the
    settings (``spec``, ``kwargs``, ``repeats``, ``warmup``, ``mem_limit_gb``, ``timeout_s``,
    ``threads``) and ``wall_s`` (the whole child, start-up included).

    ``threads`` sets ``torch.set_num_threads`` in the child (default: torch's own choice).
    ``echo=True`` lets the child's stdout/stderr through instead of capturing them.
    """
    target, func = resolve_spec(fn_spec)
    kwargs = dict(kwargs or {})
    json.dumps(kwargs)  # fail early (in the caller) on non-serialisable kwargs
    sys_path = [str(REPO_ROOT), str(BENCH_DIR), *map(str, extra_sys_path)]
    if target.endswith(".py"):
        sys_path.append(str(Path(target).parent))

    base: dict[str, Any] = {
        "spec": f"{target}:{func}",
        "kwargs": kwargs,
        "repeats": repeats,
        "warmup": warmup,
        "factory": factory,
        "mem_limit_gb": mem_limit_gb,
        "timeout_s": timeout_s,
        "threads": threads,
    }
    with tempfile.TemporaryDirectory(prefix="magtok-measure-") as tmp:
        out_path = os.path.join(tmp, "result.json")
        cfg = {
            "out": out_path,
            "target": target,
            "func": func,
            "kwargs": kwargs,
            "factory": factory,
            "repeats": repeats,
            "warmup": warmup,
            "threads": threads,
            "seed": seed,
            "sys_path": sys_path,
            "mem_limit_bytes": None if not mem_limit_gb else int(mem_limit_gb * 1024**3),
        }
        child_env = dict(os.environ)
        child_env["PYTHONPATH"] = os.pathsep.join(
            [*sys_path, *([child_env["PYTHONPATH"]] if child_env.get("PYTHONPATH") else [])]
        )
        child_env.setdefault("PYTHONWARNINGS", "ignore")
        if env:
            child_env.update({k: str(v) for k, v in env.items()})
        pipe = None if echo else subprocess.PIPE
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps(cfg)],
            stdout=pipe,
            stderr=pipe,
            cwd=str(REPO_ROOT),
            env=child_env,
            start_new_session=True,  # own process group: a timeout kills everything it started
        )
        timed_out = False
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            stdout, stderr = proc.communicate()
        wall = time.perf_counter() - t0

        res: dict[str, Any] = {}
        if os.path.exists(out_path):
            with open(out_path) as f:
                res = json.load(f)
    out = {**base, **res}
    out["wall_s"] = wall
    out["returncode"] = proc.returncode
    if timed_out:
        out["status"] = "timeout"
        out["error_type"] = "Timeout"
        out["error"] = f"killed after {timeout_s:g} s (phase: {res.get('phase', 'unknown')})"
    elif not res:
        out["status"] = "crashed"
        rc = proc.returncode
        why = f"signal {signal.Signals(-rc).name}" if rc is not None and rc < 0 else f"exit code {rc}"
        out["error_type"] = "ChildCrashed"
        out["error"] = f"the child died without reporting ({why}); stderr: {_tail(stderr, 500).strip()}"
    out["ok"] = out.get("status") == "ok"
    out["oom"] = (not out["ok"]) and _is_oom(out.get("error_type"), out.get("error"))
    if not out["ok"] and not echo:
        out["stderr_tail"] = _tail(stderr)
    times = out.get("times_s") or []
    out["median_s"] = statistics.median(times) if times else None
    out["min_s"] = min(times) if times else None
    out["max_s"] = max(times) if times else None
    out["mean_s"] = statistics.fmean(times) if times else None
    if out.get("peak_rss_mib") is not None and out.get("rss_baseline_mib") is not None:
        out["peak_delta_mib"] = out["peak_rss_mib"] - out["rss_baseline_mib"]
    else:
        out["peak_delta_mib"] = None
    return out


# --------------------------------------------------------------------------- reporting


def format_time(seconds: float | None) -> str:
    """``0.0123`` -> ``"12.3 ms"``."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    if seconds >= 100:
        return f"{seconds:.0f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def format_mib(mib: float | None) -> str:
    """``1536`` -> ``"1.50 GiB"``, ``12.3`` -> ``"12 MiB"``."""
    if mib is None:
        return "-"
    if abs(mib) >= 1024:
        return f"{mib / 1024:.2f} GiB"
    return f"{mib:.0f} MiB"


def _cell(value: Any, fmt: Any) -> str:
    if callable(fmt):
        text = fmt(value)
    elif value is None:
        text = ""
    elif fmt:
        text = format(value, fmt)
    elif isinstance(value, float):
        text = f"{value:.4g}"
    else:
        text = str(value)
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[dict], columns: Sequence[str | tuple] | None = None) -> str:
    """A GitHub markdown table.

    ``rows``: dicts. ``columns``: keys, or ``(key, header)``, or ``(key, header, fmt)`` where
    ``fmt`` is a format spec (``".3f"``) or a function of the value (``format_time``); default:
    the keys of the first row. Missing values are blank; floats default to 4 significant digits.
    """
    if columns is None:
        columns = list(rows[0].keys()) if rows else []
    cols = []
    for c in columns:
        if isinstance(c, str):
            cols.append((c, c, None))
        else:
            key, header, fmt = (tuple(c) + (None, None))[:3]
            cols.append((key, header if header is not None else key, fmt))
    header = "| " + " | ".join(_cell(h, None) for _, h, _ in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    lines = [header, sep]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(k), f) for k, _, f in cols) + " |")
    return "\n".join(lines)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, torch / python versions, date: for the benchmark report header."""
    cpuinfo = _read("/proc/cpuinfo")
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.lower().startswith("model name")),
        platform.processor() or platform.machine(),
    )
    mem_kib = next(
        (int(line.split()[1]) for line in _read("/proc/meminfo").splitlines() if line.startswith("MemTotal:")),
        None,
    )
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "cpu": model,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_gib": round(mem_kib / 1024**2, 1) if mem_kib else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.is_available()
    except Exception as e:  # pragma: no cover - torch is always there in this project
        info["torch"] = f"unavailable ({type(e).__name__})"
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


def machine_info_markdown(info: dict | None = None) -> str:
    info = info or machine_info()
    return (
        f"{info['cpu']}, {info['usable_cores']} of {info['cores']} cores usable, {info['ram_gib']} GiB RAM; "
        f"torch {info.get('torch')} ({info.get('torch_threads')} threads), python {info['python']}; "
        f"{info['date']}" + (f", commit {info['git_commit']}" if info.get("git_commit") else "")
    )


# --------------------------------------------------------------------------- self-test targets


def _selftest_matmul(n: int = 256):
    """Factory: a matmul of two n x n matrices."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    return lambda: float((a @ b).sum())


def _selftest_alloc(gib: float = 1.0, touch: bool = True):
    """Allocate (and touch) ``gib`` GiB; returns the number of bytes."""
    import torch

    x = torch.empty(int(gib * 1024**3), dtype=torch.uint8)
    if touch:
        x.fill_(1)
    return x.numel()


def _selftest_sleep(seconds: float = 10.0):
    time.sleep(seconds)


def _selftest_raise(message: str = "boom"):
    raise ValueError(message)


if __name__ == "__main__":
    print(machine_info_markdown())
    checks = [
        ("matmul 256 (factory)", measure(_selftest_matmul, dict(n=256), factory=True, repeats=5, warmup=1)),
        ("touch 0.5 GiB", measure("_measure:_selftest_alloc", dict(gib=0.5), repeats=2, warmup=0)),
        (
            "torch.empty(30 GiB), limit 8 GiB",
            measure("_measure:_selftest_alloc", dict(gib=30, touch=False), repeats=1, warmup=0, mem_limit_gb=8),
        ),
        ("sleep 30 s, timeout 5 s", measure("_measure:_selftest_sleep", dict(seconds=30), repeats=1, timeout_s=5)),
        ("raise ValueError", measure("_measure:_selftest_raise", repeats=1)),
    ]
    rows = [{"check": name, **r} for name, r in checks]
    print(
        markdown_table(
            rows,
            [
                "check",
                "status",
                ("median_s", "median", format_time),
                ("min_s", "min", format_time),
                ("max_s", "max", format_time),
                ("rss_baseline_mib", "baseline RSS", format_mib),
                ("peak_rss_mib", "peak RSS", format_mib),
                ("peak_delta_mib", "peak delta", format_mib),
                ("error_type", "error"),
                ("oom", "OOM"),
            ],
        )
    )
    ok = [r for _, r in checks]
    assert ok[0]["ok"] and len(ok[0]["times_s"]) == 5 and ok[0]["setup_s"] is not None
    assert ok[1]["ok"] and ok[1]["peak_delta_mib"] > 400, ok[1]
    assert ok[2]["status"] == "error" and ok[2]["oom"], ok[2]
    assert ok[3]["status"] == "timeout", ok[3]
    assert ok[4]["status"] == "error" and ok[4]["error_type"] == "ValueError" and ok[4]["error"] == "boom"
    print("\nself-test ok;", "30 GiB under RLIMIT_AS:", ok[2]["error_type"], "-", ok[2]["error"][:120])
