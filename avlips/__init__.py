"""avlips: build AVLips-style lip-sync deepfake datasets and evaluate the LipFD detector on them."""
import os as _os

__version__ = "0.1.0"


def _user_cache_dir() -> str:
    """The user's cache folder for avlips: platformdirs' answer, else $XDG_CACHE_HOME or ~/.cache."""
    try:
        from platformdirs import user_cache_dir
    except ImportError:
        base = _os.environ.get("XDG_CACHE_HOME") or _os.path.join(_os.path.expanduser("~"), ".cache")
        return _os.path.join(base, "avlips")
    return user_cache_dir("avlips", appauthor=False)


def _persistent_numba_cache() -> None:
    """Point numba's cache at the user's cache folder unless NUMBA_CACHE_DIR is set.

    numba caches compiled functions beside their sources only where that folder is writable; on a
    read-only or shared install every process would compile librosa's kernels again (about 5 s per
    stage process). Done here, the package's first import, so it precedes numba's own import (which
    reads the variable) in every avlips module; a folder that cannot be written is left alone.
    """
    if _os.environ.get("NUMBA_CACHE_DIR"):
        return
    folder = _os.path.join(_user_cache_dir(), "numba")
    try:
        _os.makedirs(folder, exist_ok=True)
    except OSError:
        return
    if _os.access(folder, _os.W_OK):
        _os.environ["NUMBA_CACHE_DIR"] = folder


_persistent_numba_cache()
