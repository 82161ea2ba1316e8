"""``python -m keel``: the same command as the ``keel`` console script.

It lets a subprocess run Keel with exactly the interpreter of its parent (``sys.executable``),
or with another environment's interpreter, without relying on a script on PATH.
"""

from __future__ import annotations

from keel.cli.entry import run

if __name__ == "__main__":
    run()
