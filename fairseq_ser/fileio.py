"""Writing files that other steps read, without ever leaving a half-written one."""

import contextlib
import json
import os
import tempfile


def _read_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by the owner only; the final file gets the
# mode a plain open() would give it. Read once: os.umask is process-wide and
# writers run in threads.
_FILE_MODE = 0o666 & ~_read_umask()


@contextlib.contextmanager
def atomic_open(path, mode="w", **kwargs):
    """Open a temporary file beside ``path``; rename it to ``path`` on success.

    If the block raises (or the process dies), ``path`` is left as it was and
    the temporary file is removed (or, after a kill, left under a name no
    reader looks for).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp"
    )
    os.close(fd)
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_path(path):
    """Context manager yielding a temporary path that is renamed to ``path`` on success.

    For writers that insist on a file name (``torch.save``, ``soundfile.write``,
    ``matplotlib.savefig``).
    """
    return _AtomicPath(os.fspath(path))


class _AtomicPath:
    def __init__(self, path):
        self.path = path
        self.tmp = None

    def __enter__(self):
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        root, ext = os.path.splitext(os.path.basename(self.path))
        fd, self.tmp = tempfile.mkstemp(dir=directory, prefix="." + root + ".", suffix=".tmp" + ext)
        os.close(fd)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            os.chmod(self.tmp, _FILE_MODE)
            os.replace(self.tmp, self.path)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.tmp)
        return False


def read_json_or_none(path):
    """The JSON document at ``path``, or None when there is no such file.

    Files this package writes go through :func:`atomic_open`, so an existing
    file is complete; a file that does not parse is an error, not "absent".
    """
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)
