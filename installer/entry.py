"""Entry point of the PyInstaller build: the `herdbook` command; with no arguments it opens the app."""

import sys

from herdbook.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["app"]))
