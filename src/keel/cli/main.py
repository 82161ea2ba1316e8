"""The `keel` command. Subcommand modules import their heavy dependencies lazily, so
`keel --help` stays fast; every KeelError becomes one clear line and a non-zero exit.
"""

from __future__ import annotations

import sys

import click
import typer

from keel.cli import (
    data,
    demo,
    deploy,
    deploy_control,
    features,
    features_skew,
    features_store,
    lineage,
    loadtest,
    models,
    project_cmds,
    reproduce,
    runs,
    serve,
    training,
)

# Command groups: (name, sub-app, help). Registered on the full app below, and alone on the
# small app `_app_for` runs for `keel GROUP ...`.
_GROUPS = {
    "runs": (runs.app, "Browse, search and compare tracked runs."),
    "models": (models.app, "The model registry: versions, aliases, states."),
    "data": (data.app, "Version data: add, status, push, pull, checkout, gc."),
    "features": (features.app, "Feature store: apply, list, show, diff, materialize, get-online."),
}
features_store.register(features.app)
features_skew.register(features.app)


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
        sub_app, text = _GROUPS[name]
        new.add_typer(sub_app, name=name, help=text)
    return new


app = _new_app(list(_GROUPS))
project_cmds.register(app)
demo.register(app)
lineage.register(app)
training.register(app)
reproduce.register(app)
serve.register(app)
loadtest.register(app)
deploy.register(app)
deploy_control.register(deploy.app)


def _app_for(args: list[str]) -> typer.Typer:
    """The app to run ``args``: for ``keel GROUP ...`` one holding that group alone, since typer
    builds every command it holds on each run (about 70 ms for all of Keel's, on the path of
    git hooks and `keel data status`); otherwise the full app."""
    if args and args[0] in _GROUPS:
        return _new_app([args[0]])
    return app


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


def run() -> None:
    sys.exit(main())
