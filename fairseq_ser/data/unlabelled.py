"""Unlabelled audio: the extra audio a user names, and the manifests the label-free stages train on.

TAPT, P-TAPT's pseudo-labels and P-TAPT's pretraining need no labels, so they
may learn from more audio than V-FT: every training utterance of the fold
(labelled or not: a labelled subset's fold lists its full training audio in
``unlabelled.tsv``) plus any extra audio. Two rules hold whatever is added:

- test audio is never used, and valid audio is used only as the fold's
  validation split, so nothing of the fold's valid or test splits may enter
  the training manifest. A file is one of them when its real path is, or when
  its content is: the same number of samples and the same sha1 of the file's
  bytes (a copy under another name; only files whose length equals some
  valid or test utterance's are hashed, so this stays cheap);
- a file listed twice (the same real path) is used once.

:func:`prepare_unlabelled` inspects and converts extra audio exactly like
``fairseq-ser prepare`` (16 kHz mono 16-bit WAV, too short or silent files
excluded and listed in ``excluded.tsv``); :func:`write_adaptation_dir` writes
the folder the label-free stages point at.
"""

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import DataError
from .audio import AUDIO_EXTENSIONS
from .audio_cache import AudioCheck
from .manifest import (DEFAULT_LABEL_EXT, dict_path, label_path, manifest_path, read_manifest, unlabelled_path,
                       write_manifest)
from .prepare import EXCLUDED_FILE, Utterance, folder_in_place, inspect_all, write_excluded

# manifests whose paths are all absolute take "/" as their root line
ABSOLUTE_ROOT = os.sep


# --- extra audio ----------------------------------------------------------------

def list_audio_sources(sources: Sequence[str], skip: Sequence[str] = ()) -> List[str]:
    """Absolute paths of the audio of ``sources``: folders (searched recursively), .tsv manifests, files.

    Hidden files and folders are passed over, and so are the folders of ``skip``
    (an output or cache folder that lies inside a source).
    """
    suffixes = tuple("." + e for e in AUDIO_EXTENSIONS)
    skip = {os.path.abspath(s) for s in skip}
    found = []
    for source in sources:
        source = os.path.abspath(source)
        if os.path.isdir(source):
            for folder, dirs, files in os.walk(source):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and os.path.join(folder, d) not in skip)
                found += [os.path.join(folder, n) for n in sorted(files)
                          if not n.startswith(".") and n.lower().endswith(suffixes)]
        elif os.path.isfile(source) and source.lower().endswith(".tsv"):
            manifest = read_manifest(source)
            found += [os.path.abspath(manifest.audio_path(i)) for i in range(len(manifest))]
        elif os.path.isfile(source) and source.lower().endswith(suffixes):
            found.append(source)
        elif os.path.exists(source):
            raise DataError(f"{source}: not a folder, a .tsv manifest or an audio file "
                            f"({', '.join(AUDIO_EXTENSIONS)})")
        else:
            raise DataError(f"{source}: unlabelled audio not found (a folder of audio files or a .tsv manifest)")
    return found


def prepare_unlabelled(sources: Sequence[str], out_dir: str, cache_dir: Optional[str] = None,
                       check: AudioCheck = AudioCheck(), jobs: Optional[int] = None,
                       progress: bool = True) -> str:
    """Inspect and convert the audio of ``sources``; write ``out_dir/unlabelled.tsv`` and ``excluded.tsv``.

    Returns the manifest's path. Its root line is ``/`` and its paths are
    absolute (the sources may lie anywhere), one line per distinct file.
    """
    if not sources:
        raise DataError("no unlabelled audio named (folders of audio files or .tsv manifests)")
    out_dir = os.path.abspath(out_dir)
    cache_dir = os.path.abspath(cache_dir or os.path.join(out_dir, "audio_cache"))
    paths = list(dict.fromkeys(os.path.realpath(p) for p in list_audio_sources(sources, skip=[out_dir, cache_dir])))
    if not paths:
        raise DataError(f"{', '.join(sources)}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found")
    kept, excluded = inspect_all([Utterance(p, "") for p in paths], cache_dir, check, jobs, progress)
    os.makedirs(out_dir, exist_ok=True)
    write_excluded(os.path.join(out_dir, EXCLUDED_FILE), excluded)
    if not kept:
        raise DataError(f"{', '.join(sources)}: every one of the {len(paths)} audio files was excluded "
                        f"(reasons in {os.path.join(out_dir, EXCLUDED_FILE)})")
    path = unlabelled_path(out_dir)
    write_manifest(path, ABSOLUTE_ROOT, [(u.audio, u.num_samples) for u in kept])
    return path


# --- what the label-free stages train on ----------------------------------------

@dataclass
class AdaptationAudio:
    """The rows of an adaptation manifest and where they came from."""

    rows: List[Tuple[str, int]] = field(default_factory=list)   # (absolute path, num_samples)
    labelled: int = 0            # from the fold's train.tsv
    unlabelled: int = 0          # from its unlabelled.tsv, not already listed
    extra: int = 0               # from the extra manifests, not already listed
    duplicates: int = 0          # listed again (same real path): used once
    dropped_path: int = 0        # a valid or test file itself
    dropped_content: int = 0     # a copy of a valid or test file under another path

    @property
    def dropped(self) -> int:
        return self.dropped_path + self.dropped_content

    def describe(self) -> str:
        return (f"{len(self.rows)} files: {self.labelled} labelled training, {self.unlabelled} unlabelled "
                f"training, {self.extra} extra; left out: {self.dropped} valid/test "
                f"({self.dropped_path} by path, {self.dropped_content} by content), {self.duplicates} duplicates")


class _HeldOut:
    """The fold's valid and test audio: real paths, and content hashes computed per length on demand."""

    def __init__(self, fold_dir: str):
        self.paths = set()
        self.by_length: Dict[int, List[str]] = {}
        for split in ("valid", "test"):
            manifest = read_manifest(manifest_path(fold_dir, split))
            for i, (_, n) in enumerate(manifest.entries):
                real = os.path.realpath(manifest.audio_path(i))
                self.paths.add(real)
                self.by_length.setdefault(n, []).append(real)
        self.hashes: Dict[int, set] = {}

    def why(self, real: str, num_samples: int) -> Optional[str]:
        """"path" or "content" when the file is a valid or test utterance, else None."""
        if real in self.paths:
            return "path"
        if num_samples not in self.by_length:
            return None
        if num_samples not in self.hashes:
            self.hashes[num_samples] = {file_sha1(p) for p in self.by_length[num_samples]}
        return "content" if file_sha1(real) in self.hashes[num_samples] else None


def file_sha1(path: str) -> str:
    digest = hashlib.sha1()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as e:
        raise DataError(f"{path}: cannot read the audio file ({e.strerror or e})")
    return digest.hexdigest()


def filter_audio(fold_dir: str, manifests: Sequence[Tuple[str, str]]) -> AdaptationAudio:
    """The rows of ``manifests`` (``(kind, path)``, kind one of labelled / unlabelled / extra), in order,
    each real path once, none of them one of ``fold_dir``'s valid or test files."""
    held = _HeldOut(fold_dir)
    out, seen = AdaptationAudio(), set()
    for kind, path in manifests:
        manifest = read_manifest(path)
        for i, (_, n) in enumerate(manifest.entries):
            audio = os.path.abspath(manifest.audio_path(i))
            real = os.path.realpath(audio)
            if real in seen:
                out.duplicates += 1
                continue
            why = held.why(real, n)
            if why is not None:
                setattr(out, f"dropped_{why}", getattr(out, f"dropped_{why}") + 1)
                continue
            seen.add(real)
            out.rows.append((audio, n))
            setattr(out, kind, getattr(out, kind) + 1)
    return out


def adaptation_rows(fold_dir: str, extra: Sequence[str] = ()) -> AdaptationAudio:
    """The audio the label-free stages of ``fold_dir`` train on: its train.tsv, its unlabelled.tsv when
    present and the ``extra`` manifests, each file once, none of the fold's valid or test utterances."""
    manifests = [("labelled", manifest_path(fold_dir, "train"))]
    if os.path.isfile(unlabelled_path(fold_dir)):
        manifests.append(("unlabelled", unlabelled_path(fold_dir)))
    manifests += [("extra", m) for m in extra]
    return filter_audio(fold_dir, manifests)


def write_adaptation_dir(fold_dir: str, out_dir: str, extra: Sequence[str] = (),
                         ext: str = DEFAULT_LABEL_EXT) -> AdaptationAudio:
    """Write ``out_dir``: ``train.tsv`` = :func:`adaptation_rows`, and the fold's ``valid.tsv``
    (with ``valid.{ext}`` and ``dict.{ext}.txt`` when present) copied; atomically.

    A folder that already holds exactly these files is left as it is.
    """
    audio = adaptation_rows(fold_dir, extra)
    copied = [p for p in (manifest_path(fold_dir, "valid"), label_path(fold_dir, "valid", ext),
                          dict_path(fold_dir, ext))
              if os.path.isfile(p)]
    if _holds(out_dir, audio.rows, copied):
        return audio
    with folder_in_place(out_dir) as tmp:
        write_manifest(manifest_path(tmp, "train"), ABSOLUTE_ROOT, audio.rows)
        for path in copied:
            shutil.copyfile(path, os.path.join(tmp, os.path.basename(path)))
    return audio


def _holds(out_dir: str, rows, copied) -> bool:
    expected = {os.path.basename(p) for p in copied} | {"train.tsv"}
    if not os.path.isdir(out_dir) or set(os.listdir(out_dir)) != expected:
        return False
    manifest = read_manifest(manifest_path(out_dir, "train"))
    if manifest.root != ABSOLUTE_ROOT or manifest.entries != [(p, n) for p, n in rows]:
        return False
    for path in copied:
        with open(path, "rb") as a, open(os.path.join(out_dir, os.path.basename(path)), "rb") as b:
            if a.read() != b.read():
                return False
    return True
