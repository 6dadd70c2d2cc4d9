"""The thin typer layer: app (the app, console, and the one error -> exit-code mapping), the
commands (run, reports, authoring, bench), and main (registers them; the entry point)."""
