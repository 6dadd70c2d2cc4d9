"""The thin typer layer, the top floor: it parses, prints and maps errors to exit codes.
- app: the app, the console, `fail` (the one error -> exit-code mapping), table fitting
- run: `compare run`, `resume` and `merge`
- reports: `compare leaderboard`, `plot`, `tensorboard`
- authoring: `compare init`, `list`, the dry-run plan's printing
- bench: `compare bench`
- export: `compare export mlflow`
- main: registers the commands; the entry point"""
