"""`lem-desktop --self-test`: prove that this build (source checkout or frozen bundle) really works, then exit.

It starts offscreen, builds the main window, finds the shipped kernel, seeds and icon through the one path
helper, converts and loads the built-in model on an MLX worker thread, writes a few tokens of an answer, and
looks at the keychain. One line per check:

    self-test: <check>: OK|WARN|FAIL - <detail>

and a last line `self-test: PASSED ...` or `self-test: FAILED ...`. The exit code is 0 only if no required check
failed. A missing system keychain is a WARN (CI machines and headless shells have none running); a keychain
backend that is not even packaged is a FAIL.

Nothing here writes to the user's keychain or reads their saved token (a freshly built, differently signed app
reading it would make macOS ask for permission): the window gets an in-memory token store, and the keychain
probe reads an account that never exists.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import lemcore.resources as res
from app.main_window import MainWindow
from lemcore.contribute.kernel import default_kernel_paths, load_axioms, load_kernel_text
from lemcore.generate.engine import encode_prompt, load_mlx_model
from lemcore.mlx_thread import MLXWorker
from lemcore.models.embedded import default_dtype, ensure_embedded_model
from lemcore.prompts import eval_prompt_files
from lemcore.resources import resource, seeds_dir
from lemcore.secrets import MemoryTokenStore, backend_info

PREFIX = "self-test:"
PROMPT = "What is the capital of France? Answer in one sentence."
MAX_TOKENS = 12
MODEL_TIMEOUT_S = 900.0  # cold conversion + load + generation; ~10 s on a 2-core Linux box
PROBE_SERVICE = "lem-desktop-self-test"  # never written: reading it proves the backend answers
PROBE_ACCOUNT = "probe-never-stored"

OK, WARN, FAIL = "OK", "WARN", "FAIL"


class CheckFailed(Exception):
    """A required check failed; the message says why."""


class CheckWarning(Exception):
    """Not a failure of this build (e.g. no keychain service running); the message says what to do."""


@dataclass
class _Results:
    out: Callable[[str], None]
    counts: dict[str, int] = field(default_factory=lambda: {OK: 0, WARN: 0, FAIL: 0})

    def record(self, name: str, status: str, detail: str) -> None:
        self.counts[status] += 1
        self.out(f"{PREFIX} {name}: {status} - {detail}")

    def run(self, name: str, check: Callable[[], str]) -> None:
        try:
            detail = check()
        except CheckWarning as warn:
            self.record(name, WARN, str(warn))
        except CheckFailed as err:
            self.record(name, FAIL, str(err))
        except Exception as err:  # noqa: BLE001 - any crash of a check is that check failing
            self.record(name, FAIL, f"{type(err).__name__}: {err}")
            if sys.stderr is not None:  # the whole story, for a bug report; stdout keeps one line per check
                traceback.print_exception(err, file=sys.stderr)
        else:
            self.record(name, OK, detail)


def _print(line: str) -> None:
    stream = sys.stdout or sys.stderr  # a windowed build on some platforms has no stdout
    if stream is not None:
        print(line, file=stream, flush=True)


# -- checks ------------------------------------------------------------------------------------------
def check_environment() -> str:

    frozen = "frozen bundle" if getattr(sys, "frozen", False) else "source checkout"
    return (f"{frozen}, Python {platform.python_version()}, {platform.system()} {platform.machine()}, "
            f"resources at {res.root()}")


def check_resources() -> str:

    paths = default_kernel_paths()
    axioms = load_axioms(paths.axioms)
    text = load_kernel_text(paths.text)
    seeds = eval_prompt_files(seeds_dir())
    icon = resource("icon.png")
    if not seeds:
        raise CheckFailed(f"no prompt files in {seeds_dir()}")
    if not icon.is_file():
        raise CheckFailed(f"icon missing: {icon}")
    return f"kernel ({len(axioms)} axioms, {len(text)} chars), {len(seeds)} seed files, icon"


def check_gui() -> str:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import (  # lazy: Qt loads only once the self-test or the window needs it
        QFontDatabase,
        QGuiApplication,
    )
    from PySide6.QtWidgets import (
        QApplication,  # lazy: Qt loads only once the self-test or the window needs it
    )


    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "lem-desktop"])
    window = MainWindow(token_store=MemoryTokenStore())  # never the user's keychain (see the module doc)
    try:
        window.show()
        app.processEvents()
        image = window.grab().toImage()
        if image.isNull() or image.width() < 200:
            raise CheckFailed("the main window rendered no image")
        pages = [window.nav.item(i).text() for i in range(window.nav.count())]
        detail = (f"main window {image.width()}x{image.height()} on Qt platform "
                  f"'{QGuiApplication.platformName()}', pages: {', '.join(pages)}")
    finally:
        window.runner.shutdown()
        window.hide()
        window.deleteLater()
        app.processEvents()
    if not QFontDatabase.families():
        raise CheckWarning(detail + "; but no fonts are installed, so text draws as boxes (install a font)")
    return detail


def _generate_on_worker() -> str:
    """Runs on the MLX worker thread: convert (first run), load, and write a few tokens."""
    import mlx.core as mx  # lazy: `import lemcore` stays free of MLX (ARCHITECTURE.md, "Layers")
    from mlx_lm import stream_generate  # lazy: mlx-lm pulls in MLX and transformers (seconds)


    t0 = time.perf_counter()
    folder = ensure_embedded_model()
    t1 = time.perf_counter()
    model, tokenizer = load_mlx_model(folder)
    t2 = time.perf_counter()
    _, ids = encode_prompt(tokenizer, [{"role": "user", "content": PROMPT}])
    text, tokens = "", 0
    for response in stream_generate(model, tokenizer, ids, max_tokens=MAX_TOKENS):
        text += response.text
        tokens = response.generation_tokens
    t3 = time.perf_counter()
    if tokens < 1 or not text.strip():
        raise CheckFailed(f"the model generated nothing ({tokens} tokens)")
    return (f"{folder.name} ({default_dtype()}, MLX {getattr(mx, '__version__', '?')} on {mx.default_device()}): "
            f"ready {t1 - t0:.1f} s, load {t2 - t1:.1f} s, {tokens} tokens in {t3 - t2:.1f} s: {text.strip()!r}")


def check_model(timeout_s: float = MODEL_TIMEOUT_S) -> str:

    worker = MLXWorker("lem-self-test")
    try:
        return worker.submit(_generate_on_worker).result(timeout=timeout_s)
    except FutureTimeout:
        # The task cannot be interrupted and a non-daemon worker would hold the exit: report and leave now.
        _print(f"{PREFIX} model: FAIL - no answer within {timeout_s:.0f} s")
        _print(f"{PREFIX} FAILED (model check timed out)")
        os._exit(1)
    finally:
        worker.shutdown(wait=True)


def _expected_system_backend() -> tuple[str, list[str]] | None:
    """(entry-point name, modules it needs) of this platform's system keychain backend."""
    if sys.platform == "darwin":
        return "macOS", ["keyring.backends.macOS"]
    if sys.platform.startswith("linux"):
        return "SecretService", ["keyring.backends.SecretService", "secretstorage", "jeepney"]
    if sys.platform == "win32":
        return "Windows", ["keyring.backends.Windows"]
    return None


def check_keychain_packaged() -> str:
    """keyring finds its backends through entry points: the bundle must carry keyring's metadata and modules."""

    names = sorted(ep.name for ep in importlib.metadata.entry_points(group="keyring.backends"))
    if not names:
        raise CheckFailed("keyring's backends are not discoverable (no keyring.backends entry points)")
    expected = _expected_system_backend()
    if expected is None:
        return f"backends: {', '.join(names)}"
    name, modules = expected
    if name not in names:
        raise CheckFailed(f"the {name} backend is not registered (found: {', '.join(names)})")
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise CheckFailed(f"{module} is not importable: {err}") from None
    return f"backends: {', '.join(names)}; {name} modules import"


def check_keychain_backend() -> str:
    import keyring  # lazy: keyring discovers its backends at import


    info = backend_info()
    if not info.is_system:
        raise CheckWarning(f"{info.name}, system store: no. {info.advice}")
    try:
        keyring.get_password(PROBE_SERVICE, PROBE_ACCOUNT)  # read-only; the account never exists
    except Exception as err:  # noqa: BLE001 - locked, dismissed, no D-Bus session: the machine's state, not the build
        raise CheckWarning(f"{info.name}, system store: yes, but a read failed ({type(err).__name__})") from None
    return f"{info.name}, system store: yes (read probe answered)"


def run_self_test(*, out: Callable[[str], None] = _print, model_timeout_s: float = MODEL_TIMEOUT_S) -> int:
    """Run every check, print one line each and a summary; 0 if all required checks passed, else 1."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    started = time.perf_counter()
    results = _Results(out)
    results.run("environment", check_environment)
    results.run("resources", check_resources)
    results.run("gui", check_gui)
    results.run("model", lambda: check_model(model_timeout_s))
    results.run("keychain backends", check_keychain_packaged)
    results.run("keychain", check_keychain_backend)
    c = results.counts
    verdict = "PASSED" if c[FAIL] == 0 else "FAILED"
    out(f"{PREFIX} {verdict} ({c[OK]} ok, {c[WARN]} warnings, {c[FAIL]} failed) "
        f"in {time.perf_counter() - started:.1f} s")
    return 0 if c[FAIL] == 0 else 1


if __name__ == "__main__":
    sys.exit(run_self_test())
