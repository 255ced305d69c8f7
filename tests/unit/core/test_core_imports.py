"""visent.core is torch only: importing it must not pull in transformers or trl."""

from __future__ import annotations

import subprocess
import sys


def test_core_imports_neither_transformers_nor_trl():
    code = (
        "import sys, visent.core, pkgutil, importlib\n"
        "import visent.core as c\n"
        "for m in pkgutil.iter_modules(c.__path__): importlib.import_module('visent.core.' + m.name)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('transformers', 'trl'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"visent.core imported: {out.stdout.strip()}"
