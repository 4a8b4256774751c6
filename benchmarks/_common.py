"""Shared helpers of the magtok benchmarks (bench_lfq, bench_presets, bench_peer, run_all).

Every measurement runs in a fresh child process through :func:`_measure.measure`. Inside the child,
each benchmark factory calls :func:`child_setup` first: 2 torch threads and
``torch.set_flush_denormal(True)`` (denormal floats make CPU convolutions up to ~50x slower, and
with random initialisations both magtok and the peer hit them now and then, which would turn a
timing into a lottery). The factory then wraps the timed callable with :func:`tracked`, which
measures the memory the callable itself needs:

* before the first timed call the kernel's high-water mark of the process (``VmHWM``) is reset to
  the current resident size (``echo 5 > /proc/self/clear_refs``) and that size is kept as the base;
* every call returns ``{"work_mib": VmHWM - base, ...}``, so the reported ``work_mib`` is the peak
  resident memory above what the model, optimizer state and inputs already held (activations,
  gradients, temporaries), over the warmup and all repeats.

``peak_rss_mib`` in the JSON results is the child's whole peak (setup included); the harness's
``peak_delta_mib`` is dropped (None) because the reset also resets the ``ru_maxrss`` it reads.
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import os
import re
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
BENCHMARKS_MD = REPO_ROOT / "BENCHMARKS.md"
THREADS = 2

if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from _measure import format_mib, format_time, machine_info, machine_info_markdown, measure  # noqa: E402

# --------------------------------------------------------------------------- in the child


def child_setup(seed: int = 0) -> None:
    """Run first in every benchmark child: threads, flush denormals, quiet warnings, seed."""
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(THREADS)
    torch.set_flush_denormal(True)
    torch.manual_seed(seed)


def _proc_status_mib() -> dict[str, float]:
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) / 1024.0
    except OSError:
        pass
    return out


def reset_peak() -> float:
    """Reset the process high-water mark to the current RSS; returns the current RSS (MiB)."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return _proc_status_mib().get("VmRSS", float("nan"))


def _cpu_s() -> float:
    """User + system CPU seconds of this process (all threads)."""
    t = os.times()
    return t.user + t.system


def tracked(call: Callable[[], Any]) -> Callable[[], dict]:
    """Wrap the timed callable so that it returns the peak memory above the state before it.

    The reset also resets ``ru_maxrss``, which :func:`_measure.measure` reads; so the setup's own
    high-water mark is kept here (``setup_hwm_mib``) and :func:`run` reports ``peak_rss_mib``
    as the maximum of both phases.
    """
    setup_hwm = _proc_status_mib().get("VmHWM", float("nan"))
    base = reset_peak()
    cpu_times: list[float] = []

    def run() -> dict:
        c0 = _cpu_s()
        extra = call()
        cpu_times.append(_cpu_s() - c0)
        st = _proc_status_mib()
        hwm = st.get("VmHWM", float("nan"))
        res = {"work_mib": hwm - base, "base_mib": base, "setup_hwm_mib": setup_hwm,
               "peak_hwm_mib": max(setup_hwm, hwm), "cpu_times_s": list(cpu_times)}
        if isinstance(extra, dict):
            res.update(extra)
        return res

    return run


# --------------------------------------------------------------------------- in the parent


def mem_available_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return float("inf")


def run(spec: str, kwargs: dict, *, repeats: int, warmup: int = 1, mem_limit_gb: float = 12,
        timeout_s: float = 600, need_free_gb: float | None = None, label: str = "") -> dict:
    """:func:`measure` in factory mode with 2 threads, plus ``work_mib`` and a short ``error``.

    ``need_free_gb``: skip (status 'skipped') when the machine has less memory available, so a
    measurement that really touches many GiB never pushes the shared machine into swapping/OOM.
    """
    if need_free_gb is not None:
        avail = mem_available_gib()
        if avail < need_free_gb:
            r = {"status": "skipped", "ok": False, "oom": False, "error_type": "Skipped",
                 "error": f"skipped: {avail:.1f} GiB free, needs {need_free_gb:g}", "kwargs": kwargs,
                 "spec": spec, "median_s": None, "times_s": []}
            _log(label, r)
            return r
    r = measure(spec, kwargs, factory=True, repeats=repeats, warmup=warmup, mem_limit_gb=mem_limit_gb,
                timeout_s=timeout_s, threads=THREADS)
    res = r.get("result") if isinstance(r.get("result"), dict) else {}
    r["work_mib"] = res.get("work_mib")
    cpu = res.get("cpu_times_s") or []
    n = len(r.get("times_s") or [])
    r["cpu_median_s"] = statistics.median(cpu[-n:]) if n and len(cpu) >= n else None
    if res.get("peak_hwm_mib") is not None:
        # tracked() reset the high-water mark that ru_maxrss reads: the child's peak is the larger of the
        # setup's and the runs' peaks; the harness's peak_delta_mib no longer means anything (and its
        # ru_maxrss baseline can include the parent's pre-exec peak), so it is dropped
        r["peak_rss_mib"] = res["peak_hwm_mib"]
        r["peak_delta_mib"] = None
    r.pop("traceback", None) if r.get("ok") else None
    _log(label, r)
    return r


def _log(label: str, r: dict) -> None:
    if r.get("ok"):
        times = ", ".join(format_time(t) for t in r.get("times_s", []))
        print(f"  {label}: {format_time(r['median_s'])} (runs: {times}); work {format_mib(r.get('work_mib'))}, "
              f"child peak RSS {format_mib(r.get('peak_rss_mib'))}; child {r.get('wall_s', 0):.0f} s", flush=True)
    else:
        print(f"  {label}: {r.get('status')} - {short_error(r)}", flush=True)


def short_error(r: dict, n: int = 90) -> str:
    """A one-line error for a table cell: 'OOM (...)', 'timeout after 300 s', 'ValueError: ...'."""
    if r.get("ok"):
        return ""
    status = r.get("status")
    if status == "skipped":
        return r.get("error", "skipped")
    if status == "timeout":
        return f"timeout after {r.get('timeout_s', 0):g} s"
    msg = (r.get("error") or "").strip().splitlines()
    first = msg[0] if msg else ""
    if r.get("oom"):
        m = re.search(r"allocate (\d+) bytes", first)
        size = f"{int(m.group(1)) / 1024**3:.1f} GiB alloc failed" if m else first[:60]
        return f"OOM at {r.get('mem_limit_gb'):g} GiB limit ({size})"
    text = f"{r.get('error_type', 'error')}: {first}"
    return text if len(text) <= n else text[: n - 3] + "..."


def cell_time(r: dict) -> str:
    return format_time(r.get("median_s")) if r.get("ok") else short_error(r)


def cell_mem(r: dict, key: str = "work_mib") -> str:
    return format_mib(r.get(key)) if r.get("ok") else "-"


def ratio(a: float | None, b: float | None) -> str:
    """``a / b`` as '1.23x', or '-'."""
    if a is None or b is None or b <= 0:
        return "-"
    return f"{a / b:.2f}x"


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _dist_version(folder: Path, name: str) -> str | None:
    for d in folder.glob(f"{name}-*.dist-info"):
        m = re.match(rf"{name}-(.+)\.dist-info", d.name)
        if m:
            return m.group(1)
    return None


def versions() -> dict[str, str | None]:
    """torch, magtok, magvit2-pytorch and vector-quantize-pytorch versions (the peer is not imported)."""
    import importlib.metadata as md

    out: dict[str, str | None] = {}
    try:
        import torch

        out["torch"] = torch.__version__
    except Exception:
        out["torch"] = None
    try:
        out["magtok"] = md.version("magtok")
    except Exception:
        try:
            import magtok

            out["magtok"] = getattr(magtok, "__version__", None)
        except Exception:
            out["magtok"] = None
    try:
        from magtok.testing.peer import peer_dir

        peer = peer_dir()
    except Exception:
        peer = REPO_ROOT / ".peer"
    out["magvit2-pytorch"] = _dist_version(peer, "magvit2_pytorch")
    out["vector-quantize-pytorch"] = _dist_version(peer, "vector_quantize_pytorch")
    return out


def versions_markdown(v: dict | None = None) -> str:
    v = v or versions()
    return ", ".join(f"{k} {val}" for k, val in v.items() if val)


def load_average() -> str:
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "?"


def header_lines(command: str, started: _dt.datetime, wall_s: float, info: dict | None = None,
                 load_start: str | None = None, load_end: str | None = None) -> str:
    info = info or machine_info()
    load = (f"; load average (1/5/15 min) at start {load_start}, at end {load_end or load_average()}"
            if load_start else "")
    return (
        f"Command: `{command}` ({wall_s / 60:.1f} min wall clock, started {started:%Y-%m-%d %H:%M} UTC{load})  \n"
        f"Machine: {machine_info_markdown(info)}  \n"
        f"Versions: {versions_markdown()}  \n"
        f"Every child process: `torch.set_num_threads({THREADS})`, `torch.set_flush_denormal(True)`."
    )


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def save_json(name: str, data: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=repr))
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- BENCHMARKS.md

SECTIONS = (
    "Machine",
    "LFQ entropy loss",
    "Presets",
    "Side by side with magvit2-pytorch",
    "Training (issue 3)",
    "Streaming (issue 4)",
)

_INTRO = """# magtok benchmarks

Measured on CPU. Each number comes from a fresh child process (`benchmarks/_measure.py`) with
`torch.set_num_threads(2)` and `torch.set_flush_denormal(True)` (denormal floats make CPU convolutions
up to ~50x slower and random initialisations hit them in both implementations; flushing them makes the
timings reproducible and does not change the results beyond ~1e-38). Times are medians over the
repeats after warmup. "work memory" is the peak resident memory of the measured call above what the
process held before it (model weights and inputs excluded; for training steps the gradients and the
AdamW state are included): the kernel's high-water mark (`VmHWM`) is reset before the first call.
The machine is shared with other jobs (test suites of parallel work ran during these measurements;
each section states the load average), so expect +-20% timing noise or more; ratios between runs
done back to back, in alternating order, are more reliable than absolute times.

Regenerate: `make bench` (all sections below that have a script, `benchmarks/run_all.py`) or one
script at a time (see `benchmarks/README.md`). Raw results: `benchmarks/results/*.json`.
"""


def _placeholder(title: str) -> str:
    return f"## {title}\n\nTo be measured.\n"


def _split_sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    parts = re.split(r"(?m)^(?=## )", text)
    intro = parts[0]
    sections = []
    for p in parts[1:]:
        title = p.splitlines()[0][3:].strip()
        sections.append((title, p))
    return intro, sections


def write_section(title: str, body: str, path: Path = BENCHMARKS_MD) -> Path:
    """Replace (or add) the ``## title`` section of BENCHMARKS.md; other sections are kept as they are."""
    text = path.read_text() if path.exists() else _INTRO + "\n" + "\n".join(_placeholder(t) for t in SECTIONS)
    intro, sections = _split_sections(text)
    new = f"## {title}\n\n{body.strip()}\n\n"
    titles = [t for t, _ in sections]
    if title in titles:
        sections[titles.index(title)] = (title, new)
    else:
        # keep the canonical order for known titles, append unknown ones at the end
        if title in SECTIONS:
            after = [t for t in SECTIONS[SECTIONS.index(title) + 1:] if t in titles]
            idx = titles.index(after[0]) if after else len(sections)
        else:
            idx = len(sections)
        sections.insert(idx, (title, new))
    out = intro.rstrip() + "\n\n" + "".join(s if s.endswith("\n\n") else s.rstrip() + "\n\n" for _, s in sections)
    path.write_text(out.rstrip() + "\n")
    return path


def write_machine_section(info: dict | None = None) -> None:
    info = info or machine_info()
    body = (
        f"- CPU: {info['cpu']}, {info['usable_cores']} of {info['cores']} cores usable, "
        f"{info['ram_gib']} GiB RAM, no GPU used\n"
        f"- Python {info['python']}, {versions_markdown()}\n"
        f"- Platform: {info['platform']}\n"
        f"- Threads: {THREADS} per benchmark process (`torch.set_num_threads({THREADS})`), denormals flushed "
        f"(`torch.set_flush_denormal(True)`) in every process, for magtok and the peer alike\n"
        f"- Updated: {info['date']}" + (f", commit {info['git_commit']}" if info.get("git_commit") else "")
    )
    write_section("Machine", body)
