"""`python -m modelyard`: the `modelyard` command, for environments where the console script
is not on PATH (a venv not activated, a container's system Python)."""

from modelyard.cli import main

if __name__ == "__main__":  # imported (pydoc, a package walk), it must not run the CLI
    main()
