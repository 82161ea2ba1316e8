"""The `keel` command. Subcommand modules import their heavy dependencies lazily, so
`keel --help` stays fast; every KeelError becomes one clear line and a non-zero exit.
"""

from __future__ import annotations

import sys
from functools import cache
from importlib import import_module
from typing import Any

import click
import typer

# Command groups: name -> (the modules that make it, help). The first module's `app` is the
# group; each further module adds commands to it with `register(app)`. Imported only when the
# group is run or the full app is built: `keel data status` (git hooks run it) then loads the
# data commands alone, not serving's or deployment's modules.
_GROUPS: dict[str, tuple[tuple[str, ...], str]] = {
    "runs": (("runs",), "Browse, search and compare tracked runs."),
    "models": (("models",), "The model registry: versions, aliases, states."),
    "data": (("data",), "Version data: add, status, push, pull, checkout, gc."),
    "features": (
        ("features", "features_store", "features_skew"),
        "Feature store: apply, list, show, diff, materialize, get-online.",
    ),
}
# Commands on the root app (each module's `register(app)`), in the order `keel --help` lists them.
_ROOT_COMMANDS = (
    "project_cmds",
    "demo",
    "lineage",
    "training",
    "reproduce",
    "serve",
    "loadtest",
    "deploy",
)


@cache
def _group(name: str) -> typer.Typer:
    """Group ``name``'s sub-app, its commands registered once however often it is asked for."""
    first, *more = (import_module(f"keel.cli.{module}") for module in _GROUPS[name][0])
    for module in more:
        module.register(first.app)
    group: typer.Typer = first.app
    return group


def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> None:
    state["debug"] = debug


def _new_app(groups: list[str]) -> typer.Typer:
    new = typer.Typer(
        name="keel",
        help="Keel: get ML models out of the notebook and keep them healthy in production.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    new.callback()(_root)
    for name in groups:
        new.add_typer(_group(name), name=name, help=_GROUPS[name][1])
    return new


@cache
def _full_app() -> typer.Typer:
    full = _new_app(list(_GROUPS))
    for name in _ROOT_COMMANDS:
        import_module(f"keel.cli.{name}").register(full)
    import_module("keel.cli.deploy_control").register(import_module("keel.cli.deploy").app)
    return full


def __getattr__(name: str) -> Any:
    # `app`, the full app, is built on first use (tests and embedders import it).
    if name == "app":
        return _full_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _app_for(args: list[str]) -> typer.Typer:
    """The app to run ``args``: for ``keel GROUP ...`` one holding that group alone, since typer
    builds every command it holds on each run (about 70 ms for all of Keel's, on the path of
    git hooks and `keel data status`) and the other groups' modules need not be imported;
    otherwise the full app."""
    if args and args[0] in _GROUPS:
        return _new_app([args[0]])
    return _full_app()


state: dict[str, bool] = {"debug": False}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script: runs the app and maps errors to exit codes."""
    from keel.errors import KeelError

    args = list(argv if argv is not None else sys.argv[1:])
    debug = "--debug" in args
    try:
        code = _app_for(args)(args=args, standalone_mode=False)
    except KeelError as exc:
        if debug:
            raise
        from keel.cli.output import err_console

        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        return 130
    except click.ClickException as exc:  # usage errors: unknown option, missing argument
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        return int(getattr(exc, "exit_code", 2))
    return code if isinstance(code, int) else 0
