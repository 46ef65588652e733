"""Small helpers shared by the benchmark scripts (not a test module; pytest never collects it).

Everything here is standard library + torch: machine description, peak resident memory, a
plain-text table printer and JSON output.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
GOLDEN = DATA / "golden"
TINY_UNET = GOLDEN / "models" / "unet"
TINY_VAE = GOLDEN / "models" / "vae"


def _status_kib(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB.

    ``VmHWM`` from ``/proc/self/status``: the high-water mark of this process's own address space.
    (``ru_maxrss`` is not used on Linux: a child started by ``subprocess`` inherits the parent's
    high-water mark there, which hides the child's own peak when the parent is bigger.)
    """
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024.0


def current_rss_mib() -> float:
    """Current resident set size from ``/proc/self/status`` (VmRSS)."""
    kib = _status_kib("VmRSS")
    return float("nan") if kib is None else kib / 1024.0


def machine_info() -> dict[str, Any]:
    """CPU model, logical CPUs, memory, library versions, UTC date."""
    info: dict[str, Any] = {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    info["nproc"] = os.cpu_count()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["mem_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    info["python"] = platform.python_version()
    for mod in ("torch", "ray", "diffusers", "numpy"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional
            info[mod] = None
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except Exception:  # noqa: BLE001
        pass
    return info


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times; returns (median, all times) in s."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> str:
    """Print (and return) a GitHub-markdown table; floats get 3 significant decimals."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            if v != v:
                return "n/a"
            if abs(v) >= 100:
                return f"{v:.1f}"
            if abs(v) >= 1:
                return f"{v:.2f}"
            return f"{v:.3f}"
        return str(v)

    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(str(h)), *(len(c[i]) for c in cells)) if cells else len(str(h)) for i, h in enumerate(headers)]
    lines = []
    if title:
        lines.append(f"\n{title}")
    lines.append("| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for c in cells:
        lines.append("| " + " | ".join(v.ljust(w) for v, w in zip(c, widths)) + " |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def write_json(path: str | None, payload: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2, default=str))
        print(f"\nwrote {path}")


def run_child(args: Sequence[str], env: dict | None = None, timeout: float | None = None) -> dict:
    """Run ``python <args>`` in a fresh process; its last stdout line must be a JSON object.

    Used to get an independent peak RSS per measurement (see :func:`peak_rss_mib`).
    """
    e = dict(os.environ)
    e.update(env or {})
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=e, timeout=timeout,
                          cwd=str(ROOT))
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"child {args} printed no JSON:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


# --------------------------------------------------------------------------- other load on the machine
# This machine is shared (other processes may run tests at the same time). On 2 cores a single busy
# foreign process can slow a 2-thread torch call many times over (OpenMP threads wait on each other),
# so every benchmark records how busy the CPUs were with *other* work while it measured.
_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def system_busy_seconds() -> float:
    """CPU-seconds spent busy by all CPUs since boot (``/proc/stat``; 0.0 if unavailable)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        v = [int(x) for x in fields]
        # user nice system idle iowait irq softirq steal (guest is already inside user)
        return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / _HZ
    except (OSError, ValueError, IndexError):
        return 0.0


def self_cpu_seconds(children: bool = False) -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class CpuMeter:
    """Wall time, our CPU time and the CPU used by *other* processes over a ``with`` block.

    ``foreign_cores`` = (system busy CPU-seconds - ours) / wall: ~0 on a quiet machine, 1.0 means
    another process kept one core busy the whole time. With ``children=True`` the CPU of waited-for
    child processes counts as ours.
    """

    def __init__(self, children: bool = False):
        self.children = children

    def _ours(self) -> float:
        return self_cpu_seconds() + (self_cpu_seconds(True) if self.children else 0.0)

    def __enter__(self):
        self.c0 = self._ours()
        self.s0 = system_busy_seconds()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        busy = system_busy_seconds() - self.s0
        self.ours = self._ours() - self.c0
        self.foreign_cores = max(0.0, busy - self.ours) / max(self.wall, 1e-9)
        return False


def foreign_load(seconds: float = 1.0) -> float:
    """Cores kept busy by other processes during a ``seconds`` idle sample."""
    with CpuMeter() as m:
        time.sleep(seconds)
    return m.foreign_cores


def wait_quiet(max_cores: float = 0.25, timeout: float | None = None, quiet: bool = False) -> float:
    """Wait (up to ``timeout`` s, default ``$BENCH_MAX_WAIT`` or 600) until other processes use less
    than ``max_cores``; returns the last measured foreign load. Prints a note while waiting."""
    if timeout is None:
        timeout = float(os.environ.get("BENCH_MAX_WAIT", "600"))
    t0 = time.perf_counter()
    load = foreign_load()
    while load > max_cores and time.perf_counter() - t0 < timeout:
        if not quiet:
            print(f"[waiting: other processes keep {load:.2f} cores busy]", file=sys.stderr, flush=True)
        time.sleep(5)
        load = foreign_load()
    return load


def tree_cpu_seconds(root_pid: int | None = None) -> float:
    """CPU-seconds (user+sys, including reaped children) of ``root_pid`` and all its live descendants.

    Used for the Ray job, whose GCS, raylet and workers descend from the driver process.
    """
    root_pid = root_pid or os.getpid()
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            text = (d / "stat").read_text()
        except OSError:
            continue
        rest = text[text.rfind(")") + 2:].split()
        # fields after "pid (comm) ": state ppid ... utime(12) stime(13) cutime(14) cstime(15)
        pid = int(d.name)
        parent[pid] = int(rest[1])
        cpu[pid] = sum(int(x) for x in rest[11:15]) / _HZ
    total, todo = 0.0, [root_pid]
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    seen = set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += cpu.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


class TreeCpuMeter(CpuMeter):
    """:class:`CpuMeter` counting this process and all its descendants as "ours"."""

    def _ours(self) -> float:
        return tree_cpu_seconds()
