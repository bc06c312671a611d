"""Entry point of the desktop app: build the QApplication, wire services, show the main window."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lem-desktop", description="LEM Desktop")
    parser.add_argument("--screenshot", metavar="PNG", help="render the main window to PNG and exit")
    parser.add_argument("--self-test", action="store_true",
                        help="check this build offscreen (window, built-in model, keychain) and exit 0 if it works")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        from lemcore.blas import (
            reexec_with_openblas,  # lazy: the window's modules load after the self-test check and the BLAS re-exec
        )

        reexec_with_openblas()
        argv = sys.argv[1:]
    args = parse_args(argv)
    if args.self_test:
        from app.devtools.self_test import (
            run_self_test,  # lazy: the window's modules load after the self-test check and the BLAS re-exec
        )

        return run_self_test()

    from PySide6.QtWidgets import (
        QApplication,  # lazy: Qt loads only once the self-test or the window needs it
    )

    from app.errors import (
        setup_logging,  # lazy: the window's modules load after the self-test check and the BLAS re-exec
    )
    from app.jobs.startup import (
        prepare_gui_process,  # lazy: the window's modules load after the self-test check and the BLAS re-exec
    )
    from app.main_window import (
        MainWindow,  # lazy: the window's modules load after the self-test check and the BLAS re-exec
    )

    setup_logging()
    app = cast(QApplication, QApplication.instance() or QApplication([sys.argv[0]]))
    prepare_gui_process()  # garbage collection on this thread, engine imports, start-up objects frozen
    app.setApplicationName("LEM Desktop")
    app.setOrganizationName("LEM")
    app.setQuitOnLastWindowClosed(False)  # the tray icon keeps a contribution running
    window = MainWindow()
    window.show()
    if args.screenshot:
        app.processEvents()
        window.grab().save(args.screenshot)
        window.quit()
        return 0
    return run_until_quit(app, window)


def run_until_quit(app: QApplication, window: MainWindow) -> int:
    """Run the event loop; however the app is asked to quit, `window.quit` stops the jobs (bounded)."""
    app.aboutToQuit.connect(window.quit)
    code = int(app.exec())
    if not window.runner.shutdown():  # already shut down by window.quit: this only reports
        # A job ignored its cancel and still runs on the engine thread, which is non-daemon: interpreter exit
        # would wait for it forever. Finished work is already on disk, so leave without waiting.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
