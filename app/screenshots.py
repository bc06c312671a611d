"""`python -m app.screenshots [folder]`: every README image, light and dark, from the real engines (the work is
done by app/devtools/screenshots.py; the default folder is resources/screenshots). Takes minutes."""

from __future__ import annotations

import sys

from app.devtools.screenshots import main

if __name__ == "__main__":
    sys.exit(main())
