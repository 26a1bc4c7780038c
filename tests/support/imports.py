"""What importing a module drags in, checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def gpu_modules_imported_by(*modules: str) -> list[str]:
    """The tensorrt/pycuda modules loaded by a fresh `import` of `modules` (should be none)."""
    code = (f"import json, sys, {', '.join(modules)}; print(json.dumps(sorted("
            "m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'pycuda'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return json.loads(out.stdout)
