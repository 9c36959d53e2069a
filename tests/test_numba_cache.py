"""Importing avlips gives numba a persistent cache under the user's cache folder unless NUMBA_CACHE_DIR is set."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

KERNEL = """
from numba import njit


@njit(cache=True)
def plus_one(x):
    return x + 1
"""

# Import avlips first (as every avlips module does), then numba; compile a cached kernel.
PROBE = """
import os, sys
import avlips
import numba
sys.path.insert(0, sys.argv[1])
import kernel
assert kernel.plus_one(1) == 2
print(os.environ.get("NUMBA_CACHE_DIR", ""))
print(numba.config.CACHE_DIR)
"""


def _run(tmp_path: Path, **env: str) -> list[str]:
    (tmp_path / "kernel.py").write_text(KERNEL)
    clean = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    clean.update(PYTHONPATH=str(REPO), HOME=str(tmp_path / "home"), **env)
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], env=clean, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_cache_goes_under_the_users_cache_folder(tmp_path):
    env_value, numba_value = _run(tmp_path, XDG_CACHE_HOME=str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "avlips" / "numba"
    assert env_value == numba_value == str(folder)
    assert list(folder.rglob("*.nbi")), "numba wrote no cache index there"


def test_a_cache_folder_the_user_set_is_kept(tmp_path):
    chosen = tmp_path / "mine"
    env_value, numba_value = _run(tmp_path, NUMBA_CACHE_DIR=str(chosen), XDG_CACHE_HOME=str(tmp_path / "cache"))
    assert env_value == numba_value == str(chosen)
    assert not (tmp_path / "cache").exists()


def test_an_unusable_cache_folder_leaves_numba_its_default(tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would go")
    env_value, numba_value = _run(tmp_path, XDG_CACHE_HOME=str(blocked))
    assert env_value == "" and numba_value == ""
