"""`python -m orchestrator` runs the `ect` CLI (same as the installed `ect` script)."""

from .cli import app

app(prog_name="ect")
