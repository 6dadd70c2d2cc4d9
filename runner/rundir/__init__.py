"""The run directory's contract, below both the code that writes a run (runner/run/) and the code
that reads one (runner/report/):

    layout  every file and folder name of a run directory, and a model's per-seed paths
    guard   where a run directory is, the marker and the lock, what --overwrite may remove,
            and the link guard (compare never writes through a symbolic link)
    integrity  the sha256 beside each kept prediction and weights file, written and checked
"""
