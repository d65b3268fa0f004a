"""Where TensorFlow's autograph writes the Python it generates: the cache folder.

Autograph compiles every function it converts from a file `__autograph_generated_file*.py`
that it creates with `tempfile` in the system's temporary folder and removes at a normal exit.
A process that is killed (a training job out of memory, a server stopped by a signal) leaves
its files there for good. Each process here writes them to
CACHE_DIR/autograph/<machine>-<pid>/ instead, removed at exit; the folders of this machine's
processes that are gone are removed when the next process starts.
"""

import atexit
import functools
import os
import shutil
import socket
import tempfile
import types
from pathlib import Path

from core import config
from core.storage import runs

FOLDER_NAME = "autograph"


def keep_generated_files_in_cache(cache_dir: Path | None = None) -> Path | None:
    """Send this process's autograph files to its own folder under the cache; the folder.

    None when that cannot be done (a TensorFlow without this loader, a read-only cache): the
    files then go where TensorFlow puts them, which costs disk space, not correctness.
    """
    try:
        from tensorflow.python.autograph.pyct import loader
    except ImportError:
        return None
    root = Path(cache_dir or config.CACHE_DIR) / FOLDER_NAME
    folder = root / f"{socket.gethostname()}-{os.getpid()}"
    try:
        _remove_abandoned(root)
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    # The loader only calls tempfile.NamedTemporaryFile; give it one that writes in `folder`.
    named = functools.partial(tempfile.NamedTemporaryFile, dir=folder)
    loader.tempfile = types.SimpleNamespace(NamedTemporaryFile=named)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _remove_abandoned(root: Path) -> None:
    """Remove the folders of this machine's processes that have ended."""
    if not root.is_dir():
        return
    for folder in root.iterdir():
        host, _, pid = folder.name.rpartition("-")
        if host == socket.gethostname() and pid.isdigit() and not runs.process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
