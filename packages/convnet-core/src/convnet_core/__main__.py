"""`python -m convnet_core [--require-cuda]`: say whether a GPU is usable, and why not.

With `--require-cuda` it exits non-zero when none is (the `tests-cuda` nox session runs it
first). It lives here rather than under `-m convnet_core.backend`, which Python runs as a
second copy of a module the package has already imported, and warns about.
"""

import sys

from convnet_core.backend import _main

raise SystemExit(_main(sys.argv[1:]))
