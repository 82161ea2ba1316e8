"""The `keel` console script's entry point: the CLI imported with the cyclic garbage collector
off, its objects then frozen, so collections during the command never walk them again.

Importing the CLI (typer, click, rich's pieces, Keel's modules) creates some 25,000 long-lived
objects; a command that allocates a lot afterwards (`keel data status` builds ten thousand stat
results) would traverse all of them in every full collection. Frozen, they are left out:
`keel data status` on 10,004 files takes ~12 % less wall time. Tests and embedders import
keel.cli.main directly and keep Python's defaults.
"""

from __future__ import annotations

import gc
import sys


def run() -> None:
    gc.disable()
    try:
        from keel.cli.main import main
    finally:
        gc.freeze()  # what was imported stays for the life of the process anyway
        gc.enable()
    sys.exit(main())
