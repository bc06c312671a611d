"""Entry script of the frozen app (PyInstaller): the same `app.main:main` as the `lem-desktop` command."""

import sys

from app.main import main

if __name__ == "__main__":
    sys.exit(main())
