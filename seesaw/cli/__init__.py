"""The ``seesaw`` command: thin Typer commands over the use cases (``seesaw.app``), one module per
command group.

Conventions: results go to stdout, progress and notes to stderr (``console``); with ``--json`` the
last stdout line is one JSON object. Any bad input (missing file, malformed data, unknown GPU or
model, invalid layout, a model that does not fit) is one line on stderr naming the problem, exit
code 2, never a traceback (``errors``: the one error -> exit-code map). Nothing else imports this
package.
"""

from __future__ import annotations

import typer

from seesaw.cli import calibrate, catalog, plan, profile, run, simulate, whatif
from seesaw.cli.errors import run_with_error_map

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Seesaw: plan, simulate and run throughput-oriented offline LLM inference with dynamic re-sharding.",
)
workload_app = typer.Typer(no_args_is_help=True, help="Inspect workloads (files or built-in generators).")
app.add_typer(workload_app, name="workload")

catalog.register(app, workload_app)
simulate.register(app)
plan.register(app)
whatif.register(app)
profile.register(app)
run.register(app)
calibrate.register(app)


def main() -> None:
    """Console-script entry point: the one place where user errors become one-line messages."""
    run_with_error_map(app)
