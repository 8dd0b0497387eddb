"""`python -m orchestrator` runs the `ect` CLI (same as the installed `ect` script)."""

from .cli import app

if __name__ == "__main__":  # not when a spawned process (`ect study evaluate --workers`) imports it
    app(prog_name="ect")
