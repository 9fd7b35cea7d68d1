"""Shared helpers: timing (warm-up + median of repeats) and markdown tables."""

from __future__ import annotations

import _thread
import gc
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = [
    "MemoryGuard",
    "MemoryLimitExceeded",
    "Timer",
    "fmt",
    "gemm_probe",
    "machine_line",
    "markdown_table",
    "median_time",
    "available_memory_gb",
    "physical_memory_gb",
    "rss_gb",
]


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds`` (time.perf_counter)."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def median_time(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> tuple[float, Any]:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs; and its result."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(max(1, repeats)):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def fmt(x: Any, digits: int = 3) -> str:
    """Seconds and ratios with a sensible number of significant digits."""
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    if isinstance(x, int):
        return f"{x:,}"
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[fmt(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    return (
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, {_cpu_name()}, "
        f"Python {platform.python_version()}"
    )


def gemm_probe(n: int = 1024, repeats: int = 5) -> float:
    """float64 GEMM speed in GFLOP/s right now (median of a few n×n products).

    Printed beside the tables: if other work shares the cores, this drops and every absolute
    time in the table is inflated (ratios measured interleaved are much less affected).
    """
    a = torch.randn(n, n, dtype=torch.float64)
    seconds, _ = median_time(lambda: a @ a, repeats=repeats, warmup=1)
    return 2 * n**3 / seconds / 1e9


def rss_gb() -> float:
    """Current resident set size of this process in GB (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9
    except (OSError, ValueError):
        return 0.0


def available_memory_gb() -> float:
    """The system's MemAvailable in GB (Linux; +inf elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 / 1e9
    except (OSError, ValueError):
        pass
    return float("inf")


def physical_memory_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (OSError, ValueError):
        return 0.0


class MemoryGuard:
    """Watch memory; when this process's resident memory passes `limit_gb`, or the system's
    available memory falls below `min_available_gb`, set `tripped` and interrupt.

    A benchmark that would exhaust the machine's memory is stopped (KeyboardInterrupt in the
    main thread, and `check()` raises from callbacks) instead of invoking the OOM killer, which
    might pick another process. Checked every `interval` seconds.
    """

    def __init__(
        self, limit_gb: float, min_available_gb: float = 1.5, interval: float = 0.2
    ) -> None:
        self.limit_gb = limit_gb
        self.min_available_gb = min_available_gb
        self.interval = interval
        self.tripped = False
        self.reason = ""
        self.peak_gb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            now, avail = rss_gb(), available_memory_gb()
            self.peak_gb = max(self.peak_gb, now)
            if self.tripped:
                continue
            if now > self.limit_gb:
                self.reason = f"the process's resident memory passed {self.limit_gb:.1f} GB"
            elif avail < self.min_available_gb:
                self.reason = (
                    f"the machine's available memory fell below {self.min_available_gb:.1f} GB "
                    f"(this process: {now:.1f} GB)"
                )
            else:
                continue
            self.tripped = True
            _thread.interrupt_main()

    def check(self) -> None:
        if self.tripped:
            raise MemoryLimitExceeded(self.reason)

    def __enter__(self) -> MemoryGuard:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class MemoryLimitExceeded(RuntimeError):
    pass
