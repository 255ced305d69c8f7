"""Where loaded datasets are cached, and the key that says when a cached copy is stale.

A cached dataset is a folder ``<cache root>/<key>/`` holding ``rows.arrow`` (the examples, Arrow IPC
stream, memory-mapped when read), ``report.json`` (the load report) and ``info.json`` (what was loaded, for
humans). The key is a hash of

- the source: for a local path, every data file it covers (jsonl/json/parquet/pth and the class-list
  ``.txt`` files beside them) with its size and modification time, so editing, replacing or adding a file
  gives a new key; for a Hub id, the id, split and the ``datasets`` fingerprint of the split;
- the format and every load option (mapping, image root, image check, strict, limit, ...);
- the source code of ``visent.data`` (a parser change must not serve rows parsed by the old one).

Image files referenced by path are not part of the key: the cache keeps their paths (and sizes read at
load time), and a batch opens the file itself when it needs the pixels.

The root is ``$VISENT_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/visent/datasets``, else
``~/.cache/visent/datasets``. Deleting a folder (or the root) is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

CACHE_FORMAT = 1  # bump when the layout of rows.arrow changes
_KEY_SUFFIXES = (".jsonl", ".json", ".parquet", ".pth", ".txt")


def cache_root() -> Path:
    env = os.environ.get("VISENT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "visent" / "datasets"


def _code_digest() -> str:
    h = hashlib.sha256()
    root = Path(__file__).parent
    for file in sorted(root.rglob("*.py")):
        h.update(str(file.relative_to(root)).encode())
        h.update(file.read_bytes())
    return h.hexdigest()


def source_files(path: Path) -> list[Path]:
    """The files whose change invalidates a cached load of ``path``: the file itself and its sibling class
    lists, or every data file under a folder (recursively; Geometry3K's problem folders)."""
    if path.is_file():
        files = [path]
        files += [p for p in path.parent.glob("*.txt") if p.is_file()]
        return sorted(set(files))
    out = []
    for dirpath, _, names in os.walk(path):
        for name in names:
            if name.lower().endswith(_KEY_SUFFIXES):
                out.append(Path(dirpath) / name)
    return sorted(out)


def stat_entries(files: list[Path]) -> list[list[Any]]:
    entries = []
    for f in files:
        st = f.stat()
        entries.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    return entries


def cache_key(source: dict[str, Any], options: dict[str, Any]) -> str:
    """Hex key of a load: ``source`` describes the data (file stats or Hub fingerprint), ``options`` every
    setting that changes the rows."""
    blob = json.dumps({"cache_format": CACHE_FORMAT, "code": _code_digest(), "source": source,
                       "options": options}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def entry_dir(key: str, root: Path | None = None) -> Path:
    return (root or cache_root()) / key


def is_complete(folder: Path) -> bool:
    return (folder / "rows.arrow").is_file() and (folder / "report.json").is_file()


def publish(tmp: Path, final: Path) -> Path:
    """Move a fully written ``tmp`` folder to ``final`` atomically; when another process got there first,
    keep theirs (same key, same content) and drop ours."""
    try:
        os.replace(tmp, final)
    except OSError:
        if not is_complete(final):
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return final
