"""Exports of a finished run directory to other tools (read through runner/report):
- mlflow_store: `compare export mlflow`, a parent run per compare run and a child per model and
  seed in an MLflow tracking store (mlflow is an optional extra, imported on use)"""
