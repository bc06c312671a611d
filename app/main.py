"""Entry point of the desktop app: build the QApplication, wire services, show the main window."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lem-desktop", description="LEM Desktop")
    parser.add_argument("--screenshot", metavar="PNG", help="render the main window to PNG and exit")
    parser.add_argument("--self-test", action="store_true",
                        help="check this build offscreen (window, built-in model, keychain) and exit 0 if it works")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        from lemcore.blas import reexec_with_openblas

        reexec_with_openblas()
        argv = sys.argv[1:]
    args = parse_args(argv)
    if args.self_test:
        from app.devtools.self_test import run_self_test

        return run_self_test()

    from PySide6.QtWidgets import QApplication

    from app.errors import setup_logging
    from app.main_window import MainWindow

    setup_logging()
    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("LEM Desktop")
    app.setOrganizationName("LEM")
    app.setQuitOnLastWindowClosed(False)  # the tray icon keeps a contribution running
    window = MainWindow()
    app.aboutToQuit.connect(window.runner.shutdown)
    window.show()
    if args.screenshot:
        app.processEvents()
        window.grab().save(args.screenshot)
        window.quit()
        return 0
    return int(app.exec())


if __name__ == "__main__":
    sys.exit(main())
