"""Importing convnet_core pulls in none of the heavier siblings' dependencies."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ["h5py", "PIL", "click", "tkinter", "tqdm", "convnet_io", "convnet_data"]


def test_importing_convnet_core_imports_no_optional_dependency():
    code = (
        "import json, sys\n"
        "import convnet_core, convnet_core.layers, convnet_core.losses, convnet_core.gradcheck\n"
        f"print(json.dumps(sorted(m for m in {FORBIDDEN!r} if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
