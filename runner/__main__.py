"""`python -m compare`."""
import os
import sys

# `python -m` puts the working directory first on sys.path. In compare's own checkout that folder
# holds the source folders `datasets/` and `models/`, which would then shadow Hugging Face's
# `datasets`; compare itself is imported through its install, so the working directory goes
# last, where the `compare` script puts it for module references (runner/resolve/references.py).
if sys.path and sys.path[0] in ("", os.getcwd()):
    sys.path.append(sys.path.pop(0))

from compare.cli.main import main  # noqa: E402

main()
