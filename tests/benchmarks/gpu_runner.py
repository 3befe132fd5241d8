"""Running the real commands of bench_gpu.py one by one: timing, memory, their logs, the table.

Measurements, per command: s / update is the median time between two
consecutive ``train_inner`` log lines after the first ``warmup`` updates
(``common.log_interval=1``, ``common.log_format=json``: fairseq writes each
line right after its update, so this is the wall time of one update, data
loading included); peak GPU memory allocated is
``torch.cuda.max_memory_allocated()`` inside the command's process, written
at its exit by a ``sitecustomize`` hook put on its PYTHONPATH; peak GPU
memory in use is nvidia-smi's ``memory.used`` polled every 200 ms during the
command, less its value just before (so it also counts the CUDA context and
the blocks PyTorch's allocator caches); peak RSS is the process's own
(``wait4``). A command that fails, or runs past the time budget, is a row of
the table like the others, with the last lines of its stderr in
``failures/``; the next command runs all the same.
"""

import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[2]
TIMESTAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
SITECUSTOMIZE = '''\
"""bench_gpu.py: at exit, write torch.cuda.max_memory_allocated() of this process to $BENCH_GPU_PEAK_FILE."""
import atexit
import os
import sys


def _write_peak():
    torch = sys.modules.get("torch")
    path = os.environ.get("BENCH_GPU_PEAK_FILE")
    if torch is None or not path or not torch.cuda.is_initialized():
        return
    with open(path, "w") as f:
        f.write(str(torch.cuda.max_memory_allocated()))


atexit.register(_write_peak)
'''


@dataclass
class Row:
    """One line of the table."""

    stage: str
    precision: str = "-"
    updates: Optional[int] = None
    s_per_update: Optional[float] = None
    gpu_allocated_mib: Optional[float] = None
    gpu_in_use_mib: Optional[float] = None
    rss_mib: Optional[float] = None
    final_loss: Optional[float] = None
    training: bool = False
    exit: str = "ok"
    wall_s: Optional[float] = None
    note: str = ""

    @property
    def ok(self):
        return self.exit == "ok"

    @property
    def finite(self):
        if not self.training:
            return "-"
        return "yes" if self.final_loss is not None and math.isfinite(self.final_loss) else "no"


HEADERS = ["stage", "precision", "updates", "s / update", "peak GPU MiB allocated (torch)",
           "peak GPU MiB in use (nvidia-smi)", "peak RSS MiB", "final loss", "finite", "exit", "wall s", "note"]


def _fmt(value, digits):
    return "-" if value is None else f"{value:.{digits}f}"


def table_cells(row: Row) -> List[str]:
    return [row.stage, row.precision, "-" if row.updates is None else str(row.updates),
            _fmt(row.s_per_update, 3), _fmt(row.gpu_allocated_mib, 0), _fmt(row.gpu_in_use_mib, 0),
            _fmt(row.rss_mib, 0), "-" if row.final_loss is None else f"{row.final_loss:.4g}", row.finite,
            row.exit, _fmt(row.wall_s, 1), row.note]


class GpuMemoryPoller:
    """nvidia-smi's ``memory.used`` of GPU 0 (MiB), read every ``interval_ms`` by one nvidia-smi process."""

    def __init__(self, interval_ms=200):
        self.latest = self.peak = None
        self.proc = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0",
             "-lms", str(interval_ms)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        for _ in range(50):  # the first reading, so that a window has a baseline
            if self.latest is not None:
                break
            time.sleep(0.1)

    def _read(self):
        for line in self.proc.stdout:
            try:
                value = float(line.strip())
            except ValueError:
                continue
            self.latest = value
            self.peak = value if self.peak is None else max(self.peak, value)

    @contextmanager
    def window(self):
        """Yields a dict whose ``in_use`` is set, on exit, to the peak above the value at entry."""
        result = {"in_use": None}
        baseline = self.latest
        self.peak = baseline
        try:
            yield result
        finally:
            time.sleep(0.3)  # one more reading after the command
            if baseline is not None and self.peak is not None:
                result["in_use"] = self.peak - baseline

    def close(self):
        self.proc.terminate()


def console(name):
    """A console script of this environment (beside the interpreter), else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name}: console script not found beside {sys.executable} nor on PATH")
    return found


def run_process(argv, stdout_path, stderr_path, env, timeout):
    """Run to completion or ``timeout``: (exit code or None on timeout, wall s, peak RSS bytes).

    ``os.wait4`` gives the peak RSS of exactly this child. On timeout its whole
    process group gets SIGTERM, then SIGKILL after 15 s.
    """
    start = time.perf_counter()
    with open(stdout_path, "w") as out, open(stderr_path, "w") as err:
        proc = subprocess.Popen([str(a) for a in argv], stdout=out, stderr=err, env=env, cwd=REPO,
                                start_new_session=True)
    rc = None
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            rc = os.waitstatus_to_exitcode(status)
            break
        if time.perf_counter() - start > timeout:
            os.killpg(proc.pid, signal.SIGTERM)
            for _ in range(75):
                pid, _, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                time.sleep(0.2)
            else:
                os.killpg(proc.pid, signal.SIGKILL)
                _, _, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.2)
    proc.returncode = -1 if rc is None else rc  # reaped here, not by Popen
    return rc, time.perf_counter() - start, usage.ru_maxrss * 1024


def training_log(text):
    """``(timestamp s or None, record)`` of each ``train_inner`` line of a log written with ``common.log_format=json``.

    Hydra's log lines start ``[YYYY-mm-dd HH:MM:SS,mmm][train_inner][INFO] - {...}``.
    """
    records = []
    for line in text.splitlines():
        at = line.find("train_inner")
        brace = line.find("{", at)
        if at < 0 or brace < 0:
            continue
        try:
            record = json.loads(line[brace:])
        except json.JSONDecodeError:
            continue
        stamp = TIMESTAMP.match(line)
        seconds = None
        if stamp:
            seconds = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        records.append((seconds, record))
    return records


def training_numbers(records, warmup):
    """(updates, s / update, final loss) from ``training_log`` records.

    s / update: the median time between consecutive ``train_inner`` lines of
    the updates after the first ``warmup`` (with ``log_interval=1`` each line
    is written right after its update); 1 / ``ups`` where the lines carry no
    millisecond timestamps.
    """
    if not records:
        return None, None, None
    last = records[-1][1]
    updates = int(float(last.get("num_updates", len(records))))
    loss = float(last["loss"]) if "loss" in last else None
    steps = [(t, int(float(r.get("num_updates", i + 1))), r) for i, (t, r) in enumerate(records)]
    if all(t is not None for t, _, _ in steps):
        per_update = [(t1 - t0) / (n1 - n0) for (t0, n0, _), (t1, n1, _) in zip(steps, steps[1:])
                      if n0 >= warmup and n1 > n0]
    else:
        per_update = [1.0 / float(r["ups"]) for _, n, r in steps if n > warmup and float(r.get("ups", 0)) > 0]
    return updates, (statistics.median(per_update) if per_update else None), loss


class Runner:
    """Runs commands one after the other within a time budget; keeps the rows, logs and the table."""

    def __init__(self, device: str, warmup: int, work: Path, out: Optional[Path], budget_s: Optional[float]):
        self.device, self.warmup, self.work, self.out = device, warmup, work, out
        self.logs = (out or work) / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.rows: List[Row] = []
        self.deadline = None if budget_s is None else time.monotonic() + budget_s
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.poller = None
        if device == "cuda":
            hook = work / "hook"
            hook.mkdir(parents=True, exist_ok=True)
            (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
            self.env["PYTHONPATH"] = os.pathsep.join([str(hook)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
            if shutil.which("nvidia-smi"):
                self.poller = GpuMemoryPoller()
        else:
            self.env.setdefault("OMP_NUM_THREADS", "2")

    def remaining(self):
        return math.inf if self.deadline is None else self.deadline - time.monotonic()

    def add(self, row: Row):
        self.rows.append(row)
        print(f"[{row.wall_s or 0:6.1f} s] {row.stage} ({row.precision}): {row.exit}"
              + (f"; {row.note}" if row.note else ""), flush=True)
        self.write_table()
        return row

    def skip(self, stage, precision, why):
        return self.add(Row(stage, precision, exit=f"skipped: {why}"))

    def call(self, stage, fn, precision="-", min_s=5.0):
        """Run ``fn(row)`` (returning ``(result, note)``) in this process as one row; the result, or None.

        ``fn`` may fill in the row's numbers. An exception marks the row failed,
        with its traceback in failures/.
        """
        if self.remaining() < min_s:
            self.skip(stage, precision, "time budget")
            return None
        row, result = Row(stage, precision), None
        start = time.perf_counter()
        with (self.poller.window() if self.poller else _no_window()) as memory:
            try:
                result, row.note = fn(row)
            except Exception as e:  # noqa: BLE001 - a failed part is a row of the table; the run goes on
                import traceback

                row.exit = "failed"
                row.note = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
                self._failure(row, traceback.format_exc())
        row.wall_s = time.perf_counter() - start
        row.gpu_in_use_mib = memory["in_use"]
        self.add(row)
        return result

    def command(self, stage, precision, argv, training=False, note="", min_s=20.0):
        """Run one real command; its row, logs (logs/<slug>.out/.err) and, on failure, failures/<slug>.txt."""
        if self.remaining() < min_s:
            return self.skip(stage, precision, "time budget")
        slug = "".join(c if c.isalnum() else "_" for c in f"{stage}_{precision}").strip("_")
        out_path, err_path = self.logs / f"{slug}.out", self.logs / f"{slug}.err"
        peak_file = self.work / f"{slug}.peak"
        peak_file.unlink(missing_ok=True)
        env = dict(self.env, BENCH_GPU_PEAK_FILE=str(peak_file))
        row = Row(stage, precision, training=training, note=note)
        with (self.poller.window() if self.poller else _no_window()) as memory:
            rc, row.wall_s, rss = run_process(argv, out_path, err_path, env, min(self.remaining(), 3600))
        row.rss_mib = rss / 2**20
        row.gpu_in_use_mib = memory["in_use"]
        if peak_file.is_file():
            row.gpu_allocated_mib = int(peak_file.read_text()) / 2**20
        text = out_path.read_text(errors="replace") + err_path.read_text(errors="replace")
        if training:
            row.updates, row.s_per_update, row.final_loss = training_numbers(training_log(text), self.warmup)
            overflows = text.count("gradient overflow detected")
            if overflows:
                row.note = (row.note + "; " if row.note else "") + f"{overflows} fp16 overflow(s) skipped"
        if rc != 0:
            row.exit = "timeout" if rc is None else f"failed ({rc})"
            tail = [line for line in err_path.read_text(errors="replace").splitlines() if line.strip()][-60:]
            if tail:
                row.note = (row.note + "; " if row.note else "") + tail[-1].strip()[:160]
            self._failure(row, f"$ {' '.join(map(str, argv))}\n\n--- last lines of stderr ---\n" + "\n".join(tail))
        return self.add(row)

    def _failure(self, row, text):
        folder = (self.out or self.work) / "failures"
        folder.mkdir(parents=True, exist_ok=True)
        slug = "".join(c if c.isalnum() else "_" for c in f"{row.stage}_{row.precision}").strip("_")
        (folder / f"{slug}.txt").write_text(text + "\n")

    def markdown(self, title):
        lines = [f"### {title}", "", "| " + " | ".join(HEADERS) + " |", "|" + "|".join(" --- " for _ in HEADERS) + "|"]
        lines += ["| " + " | ".join(table_cells(r)) + " |" for r in self.rows]
        return "\n".join(lines) + "\n"

    def write_table(self, title="GPU: every stage as users run it", meta=None):
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        table = {"meta": meta or {}, "headers": HEADERS,
                 "rows": [dict(asdict(r), finite=r.finite) for r in self.rows]}
        for name, text in (("gpu_table.md", self.markdown(title)), ("gpu_table.json", json.dumps(table, indent=1))):
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.out / name)

    def close(self):
        if self.poller:
            self.poller.close()


@contextmanager
def _no_window():
    yield {"in_use": None}
