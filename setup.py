"""fairseq-ser: a fairseq plugin for speech emotion recognition with wav2vec 2.0.

The versions the test suite ran on are pinned in constraints.txt; install with
``pip install -c constraints.txt .`` (``make test`` does) to get that
environment. Install torch first (``pip install torch==2.13.0``) so that pip
does not pick a different build.
"""

from setuptools import find_packages, setup

setup(
    name="fairseq-ser",
    version="0.1.0",
    description="wav2vec 2.0 fine-tuning strategies (V-FT, TAPT, P-TAPT) for speech emotion recognition on fairseq",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["fairseq_ser", "fairseq_ser.*"]),
    install_requires=[
        "torch>=2.6",
        # the maintained fork of fairseq main that imports on Python 3.11+
        "fairseq-fixed==0.12.3.1",
        "numpy",
        "soundfile",
        "soxr",
        "faiss-cpu",
        # reads HuggingFace model.safetensors weights (models/hf_weights.py)
        "safetensors",
        "tensorboardX",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        # transformers only checks the HuggingFace import against the original
        # implementation (tests) and is the baseline of the inference benchmark
        "test": ["pytest", "transformers"],
        "bench": ["transformers"],
        # `fairseq-ser export` (ONNX) and the fairseq-free predictor; the predictor
        # itself needs only numpy, soundfile, soxr and onnxruntime
        "onnx": ["onnx", "onnxruntime", "onnxscript"],
    },
    entry_points={"console_scripts": ["fairseq-ser = fairseq_ser.cli.main:main"]},
)
