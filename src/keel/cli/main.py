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

app = typer.Typer(
    name="keel",
    help="Keel: get ML models out of the notebook and keep them healthy in production.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(runs.app, name="runs", help="Browse, search and compare tracked runs.")
app.add_typer(models.app, name="models", help="The model registry: versions, aliases, states.")
app.add_typer(data.app, name="data", help="Version data: add, status, push, pull, checkout, gc.")
app.add_typer(
    features.app,
    name="features",
    help="Feature store: apply, list, show, diff, materialize, get-online.",
)
features_store.register(features.app)
features_skew.register(features.app)
project_cmds.register(app)
demo.register(app)
lineage.register(app)
training.register(app)
reproduce.register(app)
serve.register(app)
loadtest.register(app)
deploy.register(app)
deploy_control.register(deploy.app)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> None:
    state["debug"] = debug


state: dict[str, bool] = {"debug": False}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script: runs the app and maps errors to exit codes."""
    from keel.errors import KeelError

    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        code = app(args=argv, standalone_mode=False)
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
