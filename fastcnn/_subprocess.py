"""Child Python processes that run a module of this very fastcnn."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)  # the folder that holds ``fastcnn/``


def module_command(module: str, *args: str) -> list[str]:
    """The command line of ``python -m module *args`` that imports fastcnn from where this
    process did.

    ``python -m`` puts the working directory first on ``sys.path``: started from a source
    checkout beside an installed fastcnn (the README's commands), the child imported the
    checkout, compiled its kernels into the checkout's cache, and the parent, which reads
    the installed package's cache, compiled them all again.
    """
    code = (
        f"import runpy, sys; sys.path[0] = {_ROOT!r}; "
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    )
    return [sys.executable, "-c", code, *args]
