"""Importing HuggingFace ``transformers`` for the tests and benchmarks that compare against it.

transformers imports torchaudio whenever it is installed, and the torchaudio
that fairseq pulls in does not load beside torch 2.13; marking it absent in
``sys.modules`` makes transformers treat it as not installed.
"""

import sys


def import_transformers():
    """The ``transformers`` module, or None when it is not installed (install the ``test`` extra)."""
    sys.modules.setdefault("torchaudio", None)
    try:
        import transformers
    except ImportError:
        return None
    return transformers


MISSING_REASON = "transformers is not installed (pip install -c constraints.txt '.[test]')"
