"""Gather into .gpu_bundle/ what the lent GPU machine lacks to run bench_gpu.py; run it where pip reaches PyPI.

The GPU machine (Python 3.12, torch 2.11 + CUDA 13, no network) has torch,
numpy, Cython, setuptools, wheel, sacrebleu, scikit-learn, matplotlib, tqdm
and PyYAML, but no fairseq and none of the packages below. This script
downloads, for CPython 3.12 on manylinux x86_64:

- the fairseq-fixed 0.12.3.1 sdist (gpu_run.sh builds it there, against that
  machine's torch: its C++ extensions must match it);
- wheels of fairseq's and this project's dependencies that the machine lacks
  (hydra-core, omegaconf, antlr4-python3-runtime, bitarray, cffi, pycparser,
  soundfile, soxr, tensorboardX), at the versions constraints.txt pins;
  antlr4-python3-runtime is only an sdist on PyPI, so its (pure Python) wheel
  is built here;
- FAISS with CUDA: faiss-gpu-cu12 1.14.1.post1 (48 MB). The CUDA 13 build
  (faiss-gpu-cu13-cuvs, 81 MB) also needs cuVS, RAFT and RMM, and the other
  CUDA 12 builds are 106 to 135 MB: none fits the 64 MiB that may travel.
  faiss-gpu-cu12 needs CUDA 12's runtime and cuBLAS; the runtime's
  libcudart.so.12 (0.7 MB) is taken out of nvidia-cuda-runtime-cu12 into
  cu12/, and cuBLAS 12 (hundreds of MB) is replaced there by a small library
  that gpu_run.sh compiles: it forwards the eight cuBLAS functions FAISS calls
  to the machine's own cuBLAS 13.

This project itself is not packaged: the working tree travels with the call.
It then checks each wheel's tags for CPython 3.12 (``pip install --dry-run``),
that every Requires-Dist is in the bundle or on the machine, and the size of
what travels (the working tree plus .gpu_bundle/) against the 64 MiB limit.

    .venv/bin/python tests/benchmarks/gpu_bundle.py

The one device call, from this machine's session (the device tool, not a
shell command):

    run(command="bash tests/benchmarks/gpu_run.sh $OUT", carry=[".gpu_bundle"], timeout_s=600)

It installs the bundle into /tmp/site, builds fairseq, then runs bench_gpu.py
with the time that is left (gpu_run.sh keeps the whole command under 590 s)
and returns gpu_table.md, gpu_table.json, gpu_run.log and bench_logs.tar.gz.
"""

import argparse
import email.parser
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / ".gpu_bundle"
LIMIT = 64 * 2**20  # what may travel with one device call: working tree + carried folders

# wheel platform tags pip should accept for the GPU machine (glibc >= 2.28 there: Ubuntu-based image)
PLATFORMS = ["manylinux2014_x86_64"] + [f"manylinux_2_{n}_x86_64" for n in range(17, 40)]
TARGET = ["--python-version", "3.12", "--implementation", "cp", "--abi", "cp312",
          *[a for p in PLATFORMS for a in ("--platform", p)]]

FROM_CONSTRAINTS = ["hydra-core", "omegaconf", "bitarray", "cffi", "pycparser", "soundfile", "soxr",
                    "tensorboardX"]
BUILT_HERE = ["antlr4-python3-runtime"]   # sdist only on PyPI; pure Python
EXTRA_WHEELS = {"faiss-gpu-cu12": "1.14.1.post1"}
SDISTS = {"fairseq-fixed": "0.12.3.1"}
# (distribution, version, file inside its wheel) -> .gpu_bundle/cu12/<file name>
LIBRARIES = [("nvidia-cuda-runtime-cu12", "12.9.79", "nvidia/cuda_runtime/lib/libcudart.so.12")]
# requirements met otherwise: libcudart.so.12 in cu12/, cuBLAS 12 by gpu_run.sh's forwarding library,
# this project's faiss-cpu by faiss-gpu-cu12 (the same ``faiss`` module), fairseq-fixed by its sdist
SUBSTITUTED = {"nvidia-cuda-runtime-cu12", "nvidia-cublas-cu12", "faiss-cpu"}

# The image's Python packages (/work/.library/device/KINDS.md, nvidia-h200, as read on 2026-11-17)
DEVICE_PACKAGES = set("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax
llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec
patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools
shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server
tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric
torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3
uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())


def canonical(name):
    return name.lower().replace("_", "-").replace(".", "-")


def pins():
    """``{canonical name: version}`` of constraints.txt."""
    out = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[canonical(name)] = version.strip()
    return out


def pip(*args):
    cmd = [sys.executable, "-m", "pip", *args]
    print("$ " + " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True)


def gather(bundle):
    bundle.mkdir(exist_ok=True)
    versions = pins()
    wheels = {name: versions[canonical(name)] for name in FROM_CONSTRAINTS} | EXTRA_WHEELS
    pip("download", "--quiet", "--no-deps", "--only-binary=:all:", *TARGET, "-d", str(bundle),
        *(f"{n}=={v}" for n, v in wheels.items()))
    for name in BUILT_HERE:
        pip("wheel", "--quiet", "--no-deps", "-w", str(bundle), f"{name}=={versions[canonical(name)]}")
    # fairseq's setup.py imports torch and Cython to tell its metadata: this environment's, not an isolated one
    pip("download", "--quiet", "--no-deps", "--no-binary=:all:", "--no-build-isolation", "-d", str(bundle),
        *(f"{n}=={v}" for n, v in SDISTS.items()))
    libs = bundle / "cu12"
    libs.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, version, member in LIBRARIES:
            target = libs / Path(member).name
            if target.is_file():
                continue
            pip("download", "--quiet", "--no-deps", "--only-binary=:all:", *TARGET, "-d", tmp, f"{name}=={version}")
            (wheel,) = Path(tmp).glob(f"{name.replace('-', '_')}-{version}-*.whl")
            with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    expected = {canonical(n) for n in wheels} | {canonical(n) for n in BUILT_HERE} | {canonical(n) for n in SDISTS}
    for path in bundle.iterdir():
        if path.is_file() and dist_name(path) not in expected:
            print(f"removing {path.name}: not part of the bundle (an older version?)")
            path.unlink()


def dist_name(path):
    if path.name.endswith(".whl"):
        return canonical(path.name.split("-")[0])
    if path.name.endswith(".tar.gz"):
        return canonical(path.name[:-len(".tar.gz")].rsplit("-", 1)[0])
    return None


def metadata(path):
    """The core metadata (METADATA of a wheel, PKG-INFO of an sdist) as an email.message.Message."""
    if path.name.endswith(".whl"):
        with zipfile.ZipFile(path) as z:
            (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
            text = z.read(name).decode()
    else:
        with tarfile.open(path) as t:
            member = min((m for m in t.getmembers() if m.name.endswith("/PKG-INFO")), key=lambda m: len(m.name))
            text = t.extractfile(member).read().decode()
    return email.parser.Parser().parsestr(text, headersonly=True)


def project_requirements():
    """This project's ``install_requires``, read from setup.py without running it."""
    import ast

    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            return [ast.literal_eval(e) for e in node.value.elts]
    raise ValueError(f"{REPO / 'setup.py'}: no install_requires")


def check(bundle):
    """Problems found: wheel tags for CPython 3.12, unmet requirements, duplicates."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    problems = []
    files = sorted(p for p in bundle.iterdir() if p.suffix == ".whl" or p.name.endswith(".tar.gz"))
    names = [dist_name(p) for p in files]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{dup}: more than one version in {bundle}")
    wheels = [p for p in files if p.suffix == ".whl"]
    with tempfile.TemporaryDirectory() as tmp:
        # what gpu_run.sh installs, resolved for the GPU machine's interpreter from the bundle alone
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-index",
                               "--no-deps", "--only-binary=:all:", *TARGET, "--target", tmp,
                               "--find-links", str(bundle), *(f"{dist_name(p)}" for p in wheels)],
                              capture_output=True, text=True)
    if proc.returncode != 0:
        problems.append("pip cannot install the wheels for CPython 3.12 manylinux x86_64:\n" + proc.stderr[-2000:])
    env = dict(default_environment(), python_version="3.12", python_full_version="3.12.3",
               implementation_name="cpython", sys_platform="linux", platform_machine="x86_64", extra="")
    available = set(names) | {canonical(n) for n in DEVICE_PACKAGES} | SUBSTITUTED
    needs = [(path.name, line) for path in files for line in metadata(path).get_all("Requires-Dist") or []]
    needs += [("this project (setup.py)", line) for line in project_requirements()]
    for who, line in needs:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        if canonical(req.name) not in available:
            problems.append(f"{who}: requires {req}, neither in the bundle nor on the GPU machine")
    return problems


def travelling_size(bundle):
    """Bytes that travel with a call: tracked + untracked-not-ignored files of the tree, and the bundle."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.split(b"\0")
    tree = sum((REPO / f.decode()).stat().st_size for f in listed if f and (REPO / f.decode()).is_file())
    carried = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    return tree, carried


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=BUNDLE, help="folder to gather into (default: %(default)s)")
    parser.add_argument("--check-only", action="store_true", help="check an existing bundle, download nothing")
    args = parser.parse_args(argv)
    if not args.check_only:
        gather(args.bundle)
    print(f"\n{args.bundle}:")
    for path in sorted(p for p in args.bundle.rglob("*") if p.is_file()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        print(f"  {path.stat().st_size / 2**20:7.2f} MiB  {path.relative_to(args.bundle)}  sha256 {digest}…")
    tree, carried = travelling_size(args.bundle)
    total = tree + carried
    print(f"travels: working tree {tree / 2**20:.1f} MiB + bundle {carried / 2**20:.1f} MiB = "
          f"{total / 2**20:.1f} MiB of {LIMIT / 2**20:.0f} MiB")
    problems = check(args.bundle)
    if total > LIMIT:
        problems.append(f"{total / 2**20:.1f} MiB would travel: over the {LIMIT / 2**20:.0f} MiB limit")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    if not problems:
        print("ok: every wheel installs on CPython 3.12 manylinux x86_64; every requirement is in the bundle, "
              "on the GPU machine, or replaced (cuBLAS 12, CUDA 12 runtime)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
