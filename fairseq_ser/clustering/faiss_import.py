"""Importing FAISS so that its BLAS uses the CPU's vector units.

faiss-cpu wheels bundle their own OpenBLAS (0.3.15 in faiss-cpu 1.15.1), which
picks its kernels from the CPU model when it loads. On CPUs newer than it
knows (a virtual Xeon reporting only "Intel(R) Xeon(R) Processor" with
AVX-512) it falls back to its generic Prescott (SSE3) kernels, and the
matrix products that k-means training and assignment spend their time in run
about 4 times slower than with the AVX-512 kernels NumPy's own OpenBLAS picks
on the same machine (tests/benchmarks/bench_kmeans.py measures it). OpenBLAS
reads ``OPENBLAS_CORETYPE`` when it loads, so before FAISS is first imported
it is set from the CPU's instruction set flags, unless it is set already.
"""

import logging
import os
import sys
from typing import Optional

logger = logging.getLogger(__name__)

# (OpenBLAS core type, the CPU flags its single-precision kernels need), best first
CORE_TYPES = (
    ("SkylakeX", {"avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl", "fma"}),
    ("Haswell", {"avx2", "fma"}),
)


def cpu_flags(path: str = "/proc/cpuinfo") -> set:
    """Instruction set flags of the first CPU (empty where /proc/cpuinfo is absent or not x86)."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def openblas_core_type(flags: set) -> Optional[str]:
    """The best OpenBLAS core type whose kernels these CPU flags support, or None."""
    for name, needs in CORE_TYPES:
        if needs <= flags:
            return name
    return None


def import_faiss():
    """``import faiss``, first choosing OpenBLAS kernels from the CPU flags (see the module docstring)."""
    if "faiss" not in sys.modules and "OPENBLAS_CORETYPE" not in os.environ:
        core = openblas_core_type(cpu_flags())
        if core is not None:
            os.environ["OPENBLAS_CORETYPE"] = core
            logger.debug("OPENBLAS_CORETYPE=%s for FAISS's OpenBLAS (from the CPU flags)", core)
    import faiss

    return faiss
