"""What every benchmark shares: the machine description, timing, peak memory and the printed report.

Each benchmark prints a table, then ends with one line starting ``SUMMARY`` that
holds its ratios against the baseline it ran side by side; ``run_all.py``
collects those lines.
"""

import os
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EMODB = REPO.parent / "shared" / "corpora" / "emodb"


def machine_description():
    """One line: CPU model, cores this process may use, memory, Python and torch versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kb = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {len(os.sched_getaffinity(0))} cores{mem}, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}")


@contextmanager
def timer(results, key):
    """Store the wall seconds of the ``with`` block in ``results[key]``."""
    start = time.perf_counter()
    yield
    results[key] = time.perf_counter() - start


def run_measured(argv, env=None, cwd=None):
    """Run a command to completion; returns (wall seconds, peak RSS in bytes of it and its children, output).

    ``os.wait4`` gives the resource usage of exactly this child, so measurements
    of successive commands do not mix. A failing command raises with its output.
    """
    start = time.perf_counter()
    proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env, cwd=cwd, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {proc.returncode}:\n{output[-4000:]}")
    return seconds, usage.ru_maxrss * 1024, output


def peak_rss_self():
    """Peak resident memory of this process so far, in bytes (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def print_table(title, headers, rows):
    """A Markdown table, so the output can be pasted into the README as it is."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join(" --- " for _ in headers) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    sys.stdout.flush()


def print_summary(name, ratios):
    """The closing line: ``SUMMARY name: key=value ...`` (ratios > 1 favour this project where so stated)."""
    parts = " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in ratios.items())
    print(f"SUMMARY {name}: {parts}", flush=True)


def gib(nbytes):
    return f"{nbytes / 2**30:.2f} GiB"
