"""Run every benchmark in turn (``make bench``) and repeat their summary lines at the end.

Each benchmark runs in its own process, so one's memory does not count against
the next. ``--only NAME...`` runs a subset; extra arguments after ``--`` go to
every benchmark (for example ``-- --quick``).
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import machine_description  # noqa: E402

# in the order they run; each is HERE/bench_<name>.py
BENCHMARKS = ["kmeans", "pseudo_label_memory", "batching", "inference", "gpu", "base_size", "masking"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="arguments passed to every benchmark (after --)")
    args = parser.parse_args(argv)
    passed = [a for a in args.rest if a != "--"]
    print(f"machine: {machine_description()}", flush=True)
    summaries, failed, start = [], [], time.time()
    for name in args.only or BENCHMARKS:
        script = HERE / f"bench_{name}.py"
        print(f"\n## {name} ({script.name})", flush=True)
        t0 = time.time()
        proc = subprocess.Popen([sys.executable, str(script), *passed], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            print(line, end="", flush=True)
            if line.startswith("SUMMARY"):
                summaries.append(line.rstrip())
        if proc.wait() != 0:
            failed.append(name)
        print(f"({name}: {time.time() - t0:.0f} s)", flush=True)
    print(f"\n## summary ({(time.time() - start) / 60:.1f} min)\n")
    for line in summaries:
        print(line)
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
