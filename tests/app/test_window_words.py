"""Errors and notes from the real engines, as the window says them: what to do in the app, never a terminal
command, a flag or an environment variable (the command line keeps its own advice)."""

from __future__ import annotations

import pytest

from app.errors import user_message
from lemcore.contribute import events as ev
from lemcore.contribute.queue.lab import InfluxQueue
from lemcore.contribute.setup import QueueChoice, check_queue, open_queue
from lemcore.contribute.storage import probe_writable
from lemcore.errors import AuthError, ConfigError, ServerUnreachable, StorageError
from lemcore.influx import InfluxClient, InfluxTarget
from lemcore.secrets import MemoryTokenStore, find_token
from lemcore.settings import Settings

COMMAND_LINE = ("lem ", "--solo", "--output", "LEM_DATA_DIR", "INFLUX_TOKEN", "command line", "`", "in the app",
                "InfluxDB")
NOWHERE = "http://127.0.0.1:9"  # nothing listens there


def _said(err: BaseException) -> str:
    said = user_message(err)
    assert said is not None
    return f"{said[0]}. {said[1]}"


def test_server_token_and_disk_errors_say_what_to_do_in_the_app(influx, tmp_path) -> None:
    client = InfluxClient(InfluxTarget(influx.url, influx.db), "not-the-token")
    with pytest.raises(AuthError) as wrong:
        client.check_access()
    client.close()
    queue = InfluxQueue(InfluxClient(InfluxTarget(NOWHERE, "training"), "t"), "gold", "w")
    with pytest.raises(ServerUnreachable) as down:
        check_queue(queue, NOWHERE)
    queue.close()
    with pytest.raises(ConfigError) as no_token:
        open_queue(QueueChoice(NOWHERE, "training", 120.0), "gold", "w", token_store=MemoryTokenStore())
    blocker = tmp_path / "blocker"  # a file where the output's folder should be
    blocker.write_text("")
    with pytest.raises(StorageError) as disk:
        probe_writable(blocker / "output" / "gold-w.jsonl")
    assert "lem login" in str(wrong.value) and "--solo" in str(down.value)  # the command line's own advice
    for err, advice in ((wrong, "Paste the current token in Settings"), (down, "contribute offline in Settings"),
                        (no_token, "paste it in Settings"), (disk, "Open data folder")):
        text = _said(err.value)
        assert advice in text, text
        assert not any(word in text for word in COMMAND_LINE), text


def test_a_note_from_the_engine_is_said_for_the_window(qtbot, make_window, tmp_path) -> None:
    """The token file of the lab's scripts, used for this session only (no keychain): the note says where to
    save the token in the app."""
    legacy = tmp_path / ".influx_token"
    legacy.write_text("a-token")
    note = find_token(None, legacy_file=legacy).note
    assert "lem login" in note
    window = make_window(settings=Settings(first_run_done=True, solo=True))
    page = window.contribute
    page.on_event(ev.Notice(note[0].upper() + note[1:] + "."))
    assert "for this session only" in page.status.note and "Settings" in page.status.note
    assert not any(word in page.status.note for word in COMMAND_LINE), page.status.note
