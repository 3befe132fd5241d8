#!/usr/bin/env bash
# Run bench_gpu.py on the lent GPU machine (no network, no fairseq): install what .gpu_bundle/ carries
# (tests/benchmarks/gpu_bundle.py gathers it; its docstring gives the device call), then run the
# benchmark with the time that is left and leave its table in OUT_DIR.
#
#   bash tests/benchmarks/gpu_run.sh OUT_DIR [bench_gpu.py options]
#
# OUT_DIR receives gpu_run.log (everything this script printed), gpu_table.md, gpu_table.json and
# bench_logs.tar.gz (every command's stdout/stderr, the failures). Installs into $GPU_SITE (default
# /tmp/site), builds and runs in $GPU_WORK (default /tmp/bench_gpu). Needs python3 with torch (CUDA),
# numpy, Cython, setuptools and wheel, and a C/C++ compiler. The whole script ends within
# $GPU_RUN_LIMIT seconds (default 590: the device tool allows 600 s per command).
set -u -o pipefail

OUT=${1:?usage: gpu_run.sh OUT_DIR [bench_gpu.py options]}
shift
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BUNDLE=$REPO/.gpu_bundle
SITE=${GPU_SITE:-/tmp/site}
WORK=${GPU_WORK:-/tmp/bench_gpu}
LIMIT=${GPU_RUN_LIMIT:-590}
PY=${PYTHON:-python3}
START=$(date +%s)
mkdir -p "$OUT" "$SITE" "$WORK"
OUT=$(cd "$OUT" && pwd)
export PYTHONUNBUFFERED=1

step() { echo "[gpu_run +$(($(date +%s) - START)) s] $*"; }

# faiss-gpu-cu12 links CUDA 12's cuBLAS (libcublas.so.12, symbols versioned libcublas.so.12); that
# library is hundreds of MB. This one defines the eight functions FAISS calls, under that version,
# and forwards each to the machine's cuBLAS 13, whose C API keeps these signatures.
write_cublas12() {
    cat >"$WORK/cublas12.c" <<'EOF'
#include <dlfcn.h>
#include <stdio.h>

typedef int status_t;
typedef void *handle_t;

static void *real(const char *name) {
    static void *lib;
    if (!lib)  /* the cuBLAS 13 torch has loaded, else the file found at build time */
        lib = dlopen("libcublas.so.13", RTLD_NOW | RTLD_NOLOAD);
    if (!lib)
        lib = dlopen(CUBLAS13_PATH, RTLD_NOW | RTLD_GLOBAL);
    if (!lib) {
        fprintf(stderr, "libcublas.so.12 (forwarding to cuBLAS 13): %s\n", dlerror());
        return NULL;
    }
    void *f = dlsym(lib, name);
    if (!f)
        fprintf(stderr, "libcublas.so.12 (forwarding to cuBLAS 13): no %s in %s\n", name, CUBLAS13_PATH);
    return f;
}

/* 1 = CUBLAS_STATUS_NOT_INITIALIZED when cuBLAS 13 or the function is missing */
#define FORWARD(name, params, args)                                          \
    status_t name params {                                                   \
        static status_t (*f) params;                                         \
        if (!f && !(f = (status_t (*) params) real(#name)))                  \
            return 1;                                                        \
        return f args;                                                       \
    }

FORWARD(cublasCreate_v2, (handle_t *h), (h))
FORWARD(cublasDestroy_v2, (handle_t h), (h))
FORWARD(cublasSetStream_v2, (handle_t h, void *stream), (h, stream))
FORWARD(cublasGetMathMode, (handle_t h, int *mode), (h, mode))
FORWARD(cublasSetMathMode, (handle_t h, int mode), (h, mode))
FORWARD(cublasSgemmEx,
        (handle_t h, int ta, int tb, int m, int n, int k, const float *alpha, const void *A, int at, int lda,
         const void *B, int bt, int ldb, const float *beta, void *C, int ct, int ldc),
        (h, ta, tb, m, n, k, alpha, A, at, lda, B, bt, ldb, beta, C, ct, ldc))
FORWARD(cublasGemmEx,
        (handle_t h, int ta, int tb, int m, int n, int k, const void *alpha, const void *A, int at, int lda,
         const void *B, int bt, int ldb, const void *beta, void *C, int ct, int ldc, int compute, int algo),
        (h, ta, tb, m, n, k, alpha, A, at, lda, B, bt, ldb, beta, C, ct, ldc, compute, algo))
FORWARD(cublasGemmStridedBatchedEx,
        (handle_t h, int ta, int tb, int m, int n, int k, const void *alpha, const void *A, int at, int lda,
         long long sa, const void *B, int bt, int ldb, long long sb, const void *beta, void *C, int ct,
         int ldc, long long sc, int batch, int compute, int algo),
        (h, ta, tb, m, n, k, alpha, A, at, lda, sa, B, bt, ldb, sb, beta, C, ct, ldc, sc, batch, compute, algo))
EOF
    echo 'libcublas.so.12 { global: cublas*; local: *; };' >"$WORK/cublas12.map"
}

find_cublas13() {
    "$PY" - <<'EOF'
import glob, os, sys
found = [f for p in sys.path if p and os.path.isdir(os.path.join(p, "nvidia"))
         for f in glob.glob(os.path.join(p, "nvidia", "**", "libcublas.so.13*"), recursive=True)]
for pattern in ("/usr/local/cuda*/lib64/libcublas.so.13*", "/usr/local/cuda*/targets/*/lib/libcublas.so.13*"):
    found += glob.glob(pattern)
print(min(found, key=len) if found else "")
EOF
}

main() {
    step "python3: $("$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, \
        "CUDA", torch.version.cuda, "GPU:", torch.cuda.is_available())')"
    nvidia-smi -L || true

    step "installing $(ls "$BUNDLE"/*.whl | wc -l) wheels into $SITE"
    "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$BUNDLE"/*.whl || { step "FAILED: wheel install"; return 1; }

    step "building fairseq-fixed from its sdist ($(nproc) extensions at a time, no CUDA extensions)"
    printf '[build_ext]\nparallel = %s\n' "$(nproc)" >"$WORK/build_ext.cfg"
    env -u CUDA_HOME DIST_EXTRA_CONFIG="$WORK/build_ext.cfg" "$PY" -m pip install --quiet --no-index --no-deps \
        --no-build-isolation --no-compile --no-cache-dir --upgrade --target "$SITE" "$BUNDLE"/fairseq_fixed-*.tar.gz \
        || { step "FAILED: fairseq-fixed build"; return 1; }

    step "installing this project from the working tree"
    "$PY" -m pip install --quiet --no-index --no-deps --no-build-isolation --no-compile --upgrade --target "$SITE" \
        "$REPO" || { step "FAILED: project install"; return 1; }

    local libs=$SITE/faiss_gpu_cu12.libs
    if [ -d "$libs" ]; then
        local cublas13
        cublas13=$(find_cublas13)
        step "CUDA 12 runtime and cuBLAS 12 (forwarding to ${cublas13:-no cuBLAS 13 found}) for faiss-gpu-cu12"
        write_cublas12
        cp "$BUNDLE/cu12/libcudart.so.12" "$libs/"
        "${CC:-cc}" -shared -fPIC -O2 -o "$libs/libcublas.so.12" "$WORK/cublas12.c" -DCUBLAS13_PATH="\"$cublas13\"" \
            -Wl,-soname,libcublas.so.12 -Wl,--version-script="$WORK/cublas12.map" -ldl
        # FAISS needs libcublasLt.so.12 to be there but calls nothing in it
        "${CC:-cc}" -shared -fPIC -o "$libs/libcublasLt.so.12" -x c /dev/null -Wl,-soname,libcublasLt.so.12
    fi

    step "checking the installation (fairseq, the plugin, FAISS on the GPU)"
    PYTHONPATH="$SITE" "$PY" - <<'EOF' || step "the check failed: the benchmark's rows will show what does not work"
import numpy as np
import fairseq, fairseq_ser  # noqa: F401
print("fairseq", fairseq.__version__)
import faiss
gpus = faiss.get_num_gpus()
print("faiss", faiss.__version__, "sees", gpus, "GPU(s)")
if gpus:
    x = np.random.default_rng(0).standard_normal((50000, 64), dtype=np.float32)
    km = faiss.Kmeans(64, 256, niter=5, seed=1, gpu=True)
    km.train(x)
    print("FAISS GPU k-means ok: objective", km.obj[-1])
EOF

    local remain=$((LIMIT - ($(date +%s) - START) - 30))
    step "bench_gpu.py, $remain s left"
    cd "$REPO" || return 1
    PATH="$SITE/bin:$PATH" PYTHONPATH="$SITE" timeout -k 10 "$remain" "$PY" tests/benchmarks/bench_gpu.py \
        --device cuda --out "$WORK/result" --work "$WORK/run" --time-budget $((remain - 25)) "$@"
    local rc=$?
    cp "$WORK/result/gpu_table.md" "$WORK/result/gpu_table.json" "$OUT/" 2>/dev/null
    tar -czf "$OUT/bench_logs.tar.gz" -C "$WORK/result" . 2>/dev/null
    step "done: bench_gpu.py exited $rc"
    return $rc
}

main "$@" 2>&1 | tee -a "$OUT/gpu_run.log"
exit "${PIPESTATUS[0]}"
