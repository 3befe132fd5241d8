"""What the corpus readers share about a corpus's folder tree: finding it, and listing its wav files.

Real copies of a corpus hold more than speech: README and licence files,
label tables, video, macOS's ``.DS_Store`` and ``._name.wav`` shadow files
(AppleDouble metadata, not audio, though named like it). Readers look only at
the non-hidden ``.wav`` files of the folders their corpus puts speech in.
"""

import os
from typing import List

from ...errors import DataError


def corpus_dir(path: str, corpus: str) -> str:
    """``path`` made absolute; :class:`DataError` if it is not a folder."""
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise DataError(f"{path}: {corpus} folder not found")
    return path


def wav_names(folder: str) -> List[str]:
    """The ``.wav`` files (any case) directly in ``folder``, sorted; hidden files are passed over."""
    return sorted(name for name in os.listdir(folder)
                  if name.lower().endswith(".wav") and not name.startswith(".")
                  and os.path.isfile(os.path.join(folder, name)))


def subfolders(folder: str) -> List[str]:
    """The non-hidden folder names directly in ``folder``, sorted."""
    return sorted(name for name in os.listdir(folder)
                  if not name.startswith(".") and os.path.isdir(os.path.join(folder, name)))
