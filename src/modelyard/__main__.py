"""`python -m modelyard`: the `modelyard` command, for environments where the console script
is not on PATH (a venv not activated, a container's system Python)."""

from modelyard.cli import main

main()
