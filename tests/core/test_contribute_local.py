"""Contribution on one computer, the cases that broke: a second prompt set in solo mode, two processes with one
worker name, a read-only or full disk, a finished last line without its newline, a prompt longer than the
model's context, a token read from `~/.influx_token` with no keychain, the solo queue's own fenced protocol
(a worker stopped past its lease included), answers kept aside on a full disk, and journals from before instance
ids. Real files, real processes, real (tiny) models; the read-only and full disks are real tmpfs mounts (the
tests run as root, which ignores permission bits, so chmod would prove nothing)."""

from __future__ import annotations

import collections
import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lemcore.contribute.engine import ContributeConfig, prompt_file, run_contribution
from lemcore.contribute.events import Notice
from lemcore.contribute.journal import Journal
from lemcore.contribute.queue.base import DONE, OWNED, TAKEN, ClaimOutcome, Completion, as_fenced
from lemcore.contribute.queue.solo import SQLiteQueue
from lemcore.contribute.setup import ContributionOptions, build_contribution, open_solo_queue
from lemcore.errors import ConfigError, StorageError
from lemcore.generate.engine import MLXGenerator, Sampling
from lemcore.generate.protocol import GenItem, GenResult
from lemcore.prompts import load_gold_prompts, prompt_set_hash
from lemcore.resources import seeds_dir
from lemcore.secrets import (
    FROM_FILE_IMPORTED,
    FROM_FILE_SESSION,
    MemoryTokenStore,
    find_token,
    find_token_or_env,
)
from tests.core.contribute_helpers import (
    ROOT,
    ScriptedGenerator,
    jsonl_indices,
    sleepy_worker_cmd,
    solo_reports,
    start,
    worker_cmd,
    worker_env,
    write_prompts,
    write_small_kernel,
)
from tests.tiny_models import make_tiny_model

# -- helpers -------------------------------------------------------------------------------------------------


def run_cli(cmd: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def write_other_prompts(path: Path, n: int) -> Path:
    """A second prompt set: other seeds, other questions, same indices."""
    rows = [json.dumps({"seed_id": f"B{i:03d}", "domain": "Work", "voice": "blunt",
                        "prompt": f"Another question {i}: may I read my colleague's mail?"}) for i in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


def lines_of(path: Path) -> list[dict]:
    """Every line of a JSONL file, asserting each one is whole."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "the file ends in a partial line"
    return [json.loads(raw) for raw in data.splitlines() if raw.strip()]


class Mount:
    def __init__(self, path: Path) -> None:
        self.path = path

    def remount(self, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(self.path)], check=True, capture_output=True)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Mount]]:
    """A real small file system: `tmpfs("64k")` mounts one and returns it (unmounted at the end)."""
    mounted: list[Path] = []

    def mount(size: str) -> Mount:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            pytest.skip(f"needs root with CAP_SYS_ADMIN to mount a tmpfs: {out.stderr.strip()}")
        mounted.append(where)
        return Mount(where)

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def small_run(tmp_path: Path, prompts: Path, output: Path, **kw) -> ContributeConfig:
    kernel = write_small_kernel(tmp_path / "k")
    kw.setdefault("quality_gate", False)  # a tiny model's few tokens are no answer; the gate is tested elsewhere
    return ContributeConfig(prompts=prompts, output=output, worker="w", axioms_path=kernel[0], kernel_path=kernel[1],
                            sampling=Sampling(temperature=0, max_tokens=kw.pop("max_tokens", 4)), **kw)


# -- 1. solo mode: each prompt set has its own progress ------------------------------------------------------


def test_solo_second_prompt_file_is_generated_not_found_done(tmp_path, tiny_llama) -> None:
    first = write_prompts(tmp_path / "first.jsonl", 6)
    second = write_other_prompts(tmp_path / "second.jsonl", 6)
    kernel = write_small_kernel(tmp_path / "k")
    env = worker_env(tmp_path)  # one data folder: one solo queue file for both runs
    extra = ["--max-tokens", "4", "--batch-size", "2"]
    out1, out2 = tmp_path / "o1.jsonl", tmp_path / "o2.jsonl"
    a = run_cli(worker_cmd(tiny_llama, first, out1, "vol", kernel, extra=extra), env)
    assert a.returncode == 0, a.stderr
    b = run_cli(worker_cmd(tiny_llama, second, out2, "vol", kernel, extra=extra), env)
    assert b.returncode == 0, b.stderr
    assert "6 prompts, 0 done, 6 left" in b.stdout, b.stdout
    assert sorted(jsonl_indices(out2)) == list(range(6))
    assert {r["seed_id"] for r in lines_of(out2)} == {f"B{i:03d}" for i in range(6)}
    again = run_cli(worker_cmd(tiny_llama, first, out1, "vol", kernel, extra=extra), env)
    assert "6 prompts, 6 done, 0 left" in again.stdout and "Finished: 0 answers" in again.stdout, again.stdout


def test_solo_queue_from_before_prompt_sets_keeps_only_matching_rows(tmp_path) -> None:
    """A schema-1 queue file (rows keyed by kind and index only): its done rows count for the prompt set whose
    items they describe, not for another file; its claims and progress are dropped."""
    first = write_prompts(tmp_path / "first.jsonl", 6)
    second = write_other_prompts(tmp_path / "second.jsonl", 6)
    path = tmp_path / "solo-queue.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        """CREATE TABLE claims (kind TEXT, idx INTEGER, worker TEXT, until REAL, PRIMARY KEY (kind, idx));
           CREATE TABLE done (kind TEXT, idx INTEGER, worker TEXT, report TEXT, PRIMARY KEY (kind, idx));
           CREATE TABLE progress (kind TEXT, worker TEXT, completed INTEGER, target INTEGER, at REAL,
               PRIMARY KEY (kind, worker));""")
    items = load_gold_prompts(first)
    for it in items[:4]:
        report = Completion("gold", it.idx, "old", it.seed_id, it.domain, voice=it.voice).to_dict()
        old.execute("INSERT INTO done VALUES (?,?,?,?)", ("gold", it.idx, "old", json.dumps(report)))
    old.execute("INSERT INTO done VALUES ('expansion', 0, 'old', '{}')")
    old.execute("INSERT INTO claims VALUES ('gold', 5, 'old', ?)", (time.time() + 600,))
    old.commit()
    old.close()

    q2 = open_solo_queue(path, "gold", "w", second)
    assert q2.completed() == set(), "another prompt set must not find the old rows done"
    assert q2.claim([5]) == [5], "old claims are dropped"
    q1 = open_solo_queue(path, "gold", "w", first)
    assert q1.completed() == {0, 1, 2, 3}
    assert q1.prompt_set == prompt_set_hash(first) != q2.prompt_set
    q1b = open_solo_queue(path, "gold", "w2", first)  # adopting again is harmless
    assert q1b.completed() == {0, 1, 2, 3}
    for q in (q1, q1b, q2):
        q.close()
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    assert version == 2


# -- 2. two processes, one worker name ------------------------------------------------------------------------


def test_two_solo_processes_with_the_same_worker_name_do_nothing_twice(tmp_path, tiny_llama) -> None:
    n = 60
    prompts = write_prompts(tmp_path / "p.jsonl", n)
    kernel = write_small_kernel(tmp_path / "k")
    env = worker_env(tmp_path)
    out = tmp_path / "gold-twin.jsonl"  # the same output too, as the default output of one name would be
    cmd = worker_cmd(tiny_llama, prompts, out, "twin", kernel,
                     extra=["--max-tokens", "24", "--batch-size", "2", "--lease", "30"])
    procs = [start(cmd, env, tmp_path / f"w{k}.log") for k in range(2)]
    for k, proc in enumerate(procs):
        assert proc.wait(timeout=600) == 0, (tmp_path / f"w{k}.log").read_text()[-3000:]
    idx = jsonl_indices(out)
    dupes = [i for i, c in collections.Counter(idx).items() if c > 1]
    assert dupes == [], f"generated twice: {dupes}"
    assert sorted(idx) == list(range(n))
    rows = lines_of(out)
    assert {r["worker"] for r in rows} == {"twin"}  # the name stays in the records
    queue = SQLiteQueue(tmp_path / "data" / "solo-queue.sqlite", "gold", "twin", prompt_set=prompt_set_hash(prompts))
    assert queue.completed() == set(range(n))
    queue.close()


def test_same_name_instances_do_not_share_claims(tmp_path) -> None:
    path = tmp_path / "q.sqlite"
    a = SQLiteQueue(path, "gold", "same", prompt_set="set")
    b = SQLiteQueue(path, "gold", "same", prompt_set="set")
    assert a.instance != b.instance and a.instance.startswith("same#")
    assert a.claim_round([0, 1, 2, 3], 3).won == [0, 1, 2]
    outcome = b.claim_round([0, 1, 2, 3], 4)
    assert outcome.won == [3] and set(outcome.taken) == {0, 1, 2}
    assert all(0 < s <= 120 for s in outcome.taken.values())
    assert b.verify([0, 3]) == {0: TAKEN, 3: OWNED}
    a.release([0])
    assert b.claim([0]) == [0]
    a.report([Completion("gold", 1, "same", "S1", "d", instance=a.instance)])
    assert b.completed() == {1} and b.done_among([0, 1]) == {1} and b.completed_recent(60) == {1}
    for q in (a, b):
        q.close()


_HOLD = """
import sys, time
from lemcore.contribute.queue.solo import SQLiteQueue
q = SQLiteQueue(sys.argv[1], "gold", "same", prompt_set="set", lease_s=600)
print(q.claim([0, 1, 2]), flush=True)
time.sleep(600)
"""


def test_claims_of_a_killed_process_are_free_at_once(tmp_path) -> None:
    """Instances are not the name, so a restart cannot take over its own claims by name; a claim whose process
    is gone (SIGKILL) is free at once instead of after its 600 s lease. A live one is not."""
    path = tmp_path / "q.sqlite"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "[0, 1, 2]"
        mine = SQLiteQueue(path, "gold", "same", prompt_set="set")
        outcome = mine.claim_round([0, 1, 2, 3], 4)
        assert outcome.won == [3], "a live process keeps its claims"
        assert set(outcome.taken) == {0, 1, 2} and all(500 < s <= 600 for s in outcome.taken.values())
        assert mine.verify([0]) == {0: TAKEN}
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert mine.verify([0]) == {0: OWNED}  # the dead holder keeps nothing: claimed for this instance
    assert mine.claim_round([0, 1, 2], 3) == ClaimOutcome([0, 1, 2])
    mine.close()


# -- 3. read-only and full disks ------------------------------------------------------------------------------


def test_read_only_output_folder_is_a_clear_error_and_finished_lines_stay(tmp_path, tiny_llama, tmpfs) -> None:
    disk = tmpfs("1m")
    prompts = write_prompts(tmp_path / "p.jsonl", 8)
    kernel = write_small_kernel(tmp_path / "k")
    env = worker_env(tmp_path)
    out = disk.path / "out" / "gold.jsonl"
    cmd = worker_cmd(tiny_llama, prompts, out, "w", kernel, extra=["--max-tokens", "4", "--batch-size", "2"])
    first = run_cli(cmd + ["--limit", "3"], env)
    assert first.returncode == 0, first.stderr
    before = out.read_bytes()
    disk.remount("ro")
    t0 = time.monotonic()
    second = run_cli(cmd, env)
    assert second.returncode == 2, second.stdout + second.stderr
    assert "Traceback" not in second.stderr
    assert "read-only" in second.stderr and str(out) in second.stderr and "--output" in second.stderr
    assert "kept" in second.stderr
    assert out.read_bytes() == before and len(lines_of(out)) == 3
    assert time.monotonic() - t0 < 60  # found before the model loads, not after generating

    # The solo queue on a read-only disk says which file and how to move it.
    with pytest.raises(StorageError, match="LEM_SOLO_QUEUE") as err:
        SQLiteQueue(disk.path / "queue" / "solo.sqlite", "gold", "w")
    assert str(disk.path / "queue" / "solo.sqlite") in str(err.value) and "read-only" in str(err.value)


def test_disk_full_mid_run_is_a_clear_error_then_the_run_completes(tmp_path, tiny_llama, tmpfs) -> None:
    n = 40
    disk = tmpfs("128k")  # the journal's WAL index alone takes 32k
    prompts = write_prompts(tmp_path / "p.jsonl", n)
    kernel = write_small_kernel(tmp_path / "k")
    env = worker_env(tmp_path)
    out = disk.path / "gold.jsonl"
    cmd = worker_cmd(tiny_llama, prompts, out, "w", kernel, extra=["--max-tokens", "48", "--batch-size", "2"])
    full = run_cli(cmd, env)
    assert full.returncode == 2, full.stdout + full.stderr
    assert "Traceback" not in full.stderr
    assert "is full" in full.stderr and str(disk.path) in full.stderr and "kept" in full.stderr, full.stderr
    kept = lines_of(out)  # every line whole
    assert 0 < len(kept) < n and len({r["idx"] for r in kept}) == len(kept)

    disk.remount("size=8m")  # the volunteer frees some space
    done = run_cli(cmd, env)
    assert done.returncode == 0, done.stderr
    rows = lines_of(out)
    assert rows[:len(kept)] == kept, "finished answers are unchanged"
    assert sorted(r["idx"] for r in rows) == list(range(n)), "nothing lost, nothing twice"


def test_a_short_write_leaves_no_partial_line(tmp_path, monkeypatch) -> None:
    """Simulated in-process (os.write accepts half a line, then ENOSPC), to pin the cut-back path that a real
    tmpfs only sometimes takes (SQLite's journal may fill the disk first)."""
    out = tmp_path / "o.jsonl"
    journal = Journal(out, "gold", "set")
    c0 = Completion("gold", 0, "w", "S0", "d")
    journal.record({"idx": 0, "response": "first"}, c0)
    before = out.read_bytes()
    real_write = os.write
    calls = {"n": 0}

    def half_then_full(fd: int, data: bytes | memoryview) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(os, "write", half_then_full)
        with pytest.raises(StorageError, match="is full") as err:
            journal.record({"idx": 1, "response": "x" * 500}, Completion("gold", 1, "w", "S1", "d"))
    assert str(out) in str(err.value)
    assert out.read_bytes() == before and journal.done_set() == {0}
    journal.record({"idx": 1, "response": "again"}, Completion("gold", 1, "w", "S1", "d"))
    assert [r["idx"] for r in lines_of(out)] == [0, 1]
    journal.close()


def test_a_file_where_the_output_folder_should_be_fails_before_the_model_loads(tmp_path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    prompts = write_prompts(tmp_path / "p.jsonl", 3)

    def cache(key, load):
        raise AssertionError("no model may load when the output cannot be written")

    options = ContributionOptions(worker="w", prompts=prompts, output=blocker / "out.jsonl")
    with pytest.raises(StorageError, match="a file stands where a folder should be") as err:
        build_contribution(options, MemoryTokenStore(), cache=cache)
    assert str(blocker / "out.jsonl") in str(err.value)


# -- 4. a complete last line without its newline ---------------------------------------------------------------


def test_complete_last_line_without_newline_is_kept_not_regenerated(tmp_path, tiny_llama) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 6)
    out = tmp_path / "o.jsonl"
    gen = MLXGenerator.load(tiny_llama, batch_size=2)
    queue = SQLiteQueue(tmp_path / "q.sqlite", "gold", "w")
    run_contribution(small_run(tmp_path, prompts, out, limit=3), queue, gen)
    first = out.read_bytes()
    out.write_bytes(first.rstrip(b"\n"))  # as another tool (or the lab's writer) leaves it
    out.with_name(out.name + ".journal.sqlite").unlink()  # and no journal: only the file says what is done
    for extra in ("-wal", "-shm"):
        out.with_name(out.name + ".journal.sqlite" + extra).unlink(missing_ok=True)
    events: list = []
    second = run_contribution(small_run(tmp_path, prompts, out), SQLiteQueue(
        tmp_path / "q2.sqlite", "gold", "w"), gen, report=events.append)
    assert second.done_this_run == 3, "the three finished answers are not generated again"
    rows = lines_of(out)
    assert out.read_bytes().startswith(first) and sorted(r["idx"] for r in rows) == list(range(6))
    queue.close()


def test_a_torn_last_line_is_still_cut(tmp_path) -> None:
    out = tmp_path / "o.jsonl"
    whole = json.dumps({"idx": 0, "response": "ok", "kind": "gold", "prompt_set": "set"}) + "\n"
    out.write_text(whole + '{"idx": 1, "response": "half an ans')
    journal = Journal(out, "gold", "set")
    assert out.read_text() == whole and journal.done_set() == {0}
    journal.close()


# -- 5. a prompt longer than the model's context ----------------------------------------------------------------


def long_prompt(words: int) -> str:
    return "Consider this long story. " + " ".join(f"volunteers met on Saturday number {i}" for i in range(words))


def test_overlong_prompt_is_refused_at_once_and_holds_up_nothing(tmp_path) -> None:
    model = make_tiny_model(tmp_path / "tiny-256", context=256)
    gen = MLXGenerator.load(model, batch_size=2)
    assert gen.max_positions == 256
    items = [GenItem(0, [{"role": "user", "content": "Hi there, short one."}]),
             GenItem(1, [{"role": "user", "content": long_prompt(2000)}]),
             GenItem(2, [{"role": "user", "content": "Another short question?"}]),
             GenItem(3, [{"role": "user", "content": "And a third one."}])]
    feed_items = list(items)
    prefilled: list[int] = []
    real_prefill = gen._prefill

    def spy(ids, *rest):  # (ids, cancel[, progress callback])
        prefilled.append(len(ids))
        return real_prefill(ids, *rest)

    gen._prefill = spy
    results: list[GenResult] = []
    t0 = time.perf_counter()
    n = gen.run(lambda: feed_items.pop(0) if feed_items else None, Sampling(temperature=0, max_tokens=8),
                results.append)
    assert n == 4 and len(results) == 4
    refused = [r for r in results if r.refused]
    assert [r.key for r in refused] == [1]
    r = refused[0]
    assert r.text == "" and r.tokens == 0 and r.prompt_tokens > 256
    assert f"the prompt is {r.prompt_tokens:,} tokens, longer than the 256" in r.refused
    assert results[0].key == 1, "refused before the batch's first answer finished: it held nothing up"
    assert all(n_ids <= 256 for n_ids in prefilled) and len(prefilled) == 3
    assert all(not x.refused and x.tokens > 0 for x in results if x.key != 1)
    assert time.perf_counter() - t0 < 60


def test_prompt_plus_answer_beyond_the_context_is_refused_with_advice(tiny_llama) -> None:
    gen = MLXGenerator(object(), object(), max_positions=2048)
    assert gen.refusal(1500, 512) == ""
    assert gen.refusal(1536, 512) == ""
    reason = gen.refusal(1600, 512)
    assert "1,600 tokens" in reason and "lower max tokens to 448" in reason
    assert MLXGenerator(object(), object()).refusal(10**6, 512) == ""  # unknown context: nothing refused
    assert MLXGenerator.load(tiny_llama, batch_size=1).max_positions == 8192  # from config.json


def test_contribution_skips_an_overlong_prompt_with_a_notice(tmp_path) -> None:
    model = make_tiny_model(tmp_path / "tiny-256", context=256)
    rows = [{"idx": i, "seed_id": f"E{i}", "region": "north", "domain": "d", "prompt": f"Short question {i}?"}
            for i in range(4)]
    rows[2]["prompt"] = long_prompt(2000)
    prompts = tmp_path / "expand.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o.jsonl"
    events: list = []
    config = ContributeConfig(kind="expansion", prompts=prompts, output=out, worker="w",
                              sampling=Sampling(temperature=0, max_tokens=8), quality_gate=False)
    queue = SQLiteQueue(tmp_path / "q.sqlite", "expansion", "w")
    result = run_contribution(config, queue, MLXGenerator.load(model, batch_size=2), report=events.append)
    assert sorted(jsonl_indices(out)) == [0, 1, 3] and result.done_this_run == 3
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert any(m.startswith("Skipped prompt 2 (E2): the prompt is") for m in notices), notices
    assert 2 not in queue.completed()
    queue.close()


# -- 6. the lab's token file without a keychain ---------------------------------------------------------------


def test_token_file_without_keychain_is_kept_for_this_session_only(tmp_path, tiny_llama, influx) -> None:
    home = tmp_path / "home"
    home.mkdir()
    token_file = home / ".influx_token"
    token_file.write_text(influx.token + "\n")
    prompts = write_prompts(tmp_path / "p.jsonl", 2)
    kernel = write_small_kernel(tmp_path / "k")
    env = dict(worker_env(tmp_path), HOME=str(home), PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")
    env.pop("INFLUX_TOKEN", None)
    cmd = worker_cmd(tiny_llama, prompts, tmp_path / "o.jsonl", "w", kernel, influx_url=influx.url,
                     extra=["--max-tokens", "4", "--limit", "1"])
    out = run_cli(cmd, env)
    assert out.returncode == 0, out.stderr
    assert "for this session only" in out.stderr and "Keep that file" in out.stderr, out.stderr
    assert "delete" not in out.stderr and influx.token not in out.stderr + out.stdout
    assert token_file.read_text().strip() == influx.token


def test_token_file_notes_say_where_the_token_is_kept(tmp_path, monkeypatch) -> None:
    import keyring
    from keyring.backends import fail

    from lemcore.errors import SecretStoreError
    from lemcore.secrets import KeyringTokenStore

    legacy = tmp_path / ".influx_token"
    legacy.write_text("file-tok\n")
    store = MemoryTokenStore()
    found = find_token(store, legacy_file=legacy)
    assert (found.token, found.source) == ("file-tok", FROM_FILE_IMPORTED) and store.get() == "file-tok"
    assert "you can now delete that file" in found.note and "file-tok" not in repr(found)

    class Locked(MemoryTokenStore):
        def set(self, token: str, account: str = "influx-token") -> None:
            raise SecretStoreError("The keychain is locked, so the token could not be saved. Unlock it.")

    found = find_token(Locked(), legacy_file=legacy)
    assert found.source == FROM_FILE_SESSION and "keychain is locked" in found.note
    assert "for this session only" in found.note and "delete" not in found.note

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        found = find_token_or_env(KeyringTokenStore(), legacy_file=legacy)
    finally:
        keyring.set_keyring(previous)
    assert found.token == "file-tok" and found.source == FROM_FILE_SESSION
    assert "No system keychain" in found.note and "Keep that file" in found.note and "delete" not in found.note


# -- 7. the solo queue's own fenced protocol ------------------------------------------------------------------


def test_solo_queue_speaks_the_fenced_protocol_natively(tmp_path) -> None:
    path = tmp_path / "q.sqlite"
    a = SQLiteQueue(path, "gold", "same", prompt_set="set", lease_s=1)
    b = SQLiteQueue(path, "gold", "same", prompt_set="set", lease_s=60)
    assert as_fenced(a) is a, "no adapter: the queue is a FencedQueue itself"
    assert a.instance.startswith("same#") and len(a.instance) == len("same#") + 12  # base.new_instance_id
    assert a.claim_round([0, 1, 2], 2) == ClaimOutcome([0, 1])
    # b: 0 and 1 held by a live instance (with the seconds left on a's lease), 2 claimed, 3 over `want`.
    outcome = b.claim_round([0, 1, 2, 3], 1)
    assert outcome.won == [2] and set(outcome.taken) == {0, 1} and all(0 < s <= 1 for s in outcome.taken.values())
    a.report([Completion("gold", 0, "same", "S0", "d", instance=a.instance)])
    assert b.claim_round([0, 1, 3], 3) == ClaimOutcome([3], frozenset({0}), {1: pytest.approx(1, abs=0.5)})
    assert b.done_among([0, 1, 2, 3, 99]) == {0} and b.completed_recent(60) == {0} == b.completed()

    # verify: done -> DONE, another live instance's claim -> TAKEN, else renewed or claimed again -> OWNED.
    assert b.verify([0, 1, 2, 7]) == {0: DONE, 1: TAKEN, 2: OWNED, 7: OWNED}
    time.sleep(1.2)  # a's lease on 1 runs out, unrenewed
    assert b.verify([1]) == {1: OWNED}
    assert a.verify([1]) == {1: TAKEN}, "a's claim lapsed and b holds the item now"

    # for_thread: the same instance on a connection another thread may use; the keeper closes it.
    twin = b.for_thread()
    assert isinstance(twin, SQLiteQueue) and twin is not b
    assert (twin.instance, twin.prompt_set, twin.lease_s) == (b.instance, "set", 60)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(v=twin.verify([1, 2])))
    thread.start()
    thread.join(30)
    assert result["v"] == {1: OWNED, 2: OWNED}
    twin.close()
    assert not hasattr(b, "claimed_by_others")
    for q in (a, b):
        q.close()


def test_solo_lease_range_and_prompt_set_are_checked(tmp_path) -> None:
    for bad in (0.5, 7200):
        with pytest.raises(ConfigError, match="1 to 3600 s"):
            SQLiteQueue(tmp_path / "q.sqlite", "gold", "w", lease_s=bad)

        def cache(key, load):
            raise AssertionError("no model may load for a bad lease")

        with pytest.raises(ConfigError, match="1 to 3600 s"):
            build_contribution(ContributionOptions(worker="w", lease_s=bad), MemoryTokenStore(), cache=cache)
    prompts = write_prompts(tmp_path / "p.jsonl", 3)
    other = write_other_prompts(tmp_path / "other.jsonl", 3)
    queue = SQLiteQueue(tmp_path / "q.sqlite", "gold", "w", prompt_set=prompt_set_hash(other))
    with pytest.raises(ConfigError, match="another prompt set"):
        run_contribution(small_run(tmp_path, prompts, tmp_path / "o.jsonl"), queue, ScriptedGenerator())
    assert not (tmp_path / "o.jsonl").exists()
    queue.close()
    # The queue setup opens and the engine reads the same file, the shipped one when none is given.
    assert prompt_file(None) == seeds_dir() / "gold-prompts.jsonl" and prompt_file(prompts) == prompts


@pytest.mark.slow
def test_solo_worker_stopped_past_its_lease_reports_nothing_it_lost(tmp_path) -> None:
    """Two solo worker processes on one queue file; one is stopped (SIGSTOP: a laptop asleep) for 12 s against
    a 4 s lease while the other goes on, then continued."""
    n = 24
    prompts = write_prompts(tmp_path / "p.jsonl", n)
    queue_file = tmp_path / "solo.sqlite"
    env = worker_env(tmp_path)
    outs = {"sleeper": tmp_path / "sleeper.jsonl", "other": tmp_path / "other.jsonl"}
    logs = {name: tmp_path / f"{name}.log" for name in outs}
    sleeper = start(sleepy_worker_cmd("", prompts, outs["sleeper"], "sleeper", lease_s=4, item_s=1.5, batch_size=4,
                                      idle_max_s=3, solo_queue=queue_file), env, logs["sleeper"])
    deadline = time.monotonic() + 60
    while len(jsonl_indices(outs["sleeper"])) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    other = start(sleepy_worker_cmd("", prompts, outs["other"], "other", lease_s=4, item_s=0.5, batch_size=2,
                                    idle_max_s=3, solo_queue=queue_file), env, logs["other"])
    time.sleep(0.5)
    sleeper.send_signal(signal.SIGSTOP)
    try:
        time.sleep(12)
    finally:
        sleeper.send_signal(signal.SIGCONT)
    for name, proc in (("sleeper", sleeper), ("other", other)):
        assert proc.wait(timeout=300) == 0, logs[name].read_text()[-3000:]
    local = jsonl_indices(*outs.values())
    assert sorted(local) == list(range(n)), "every item in exactly one output, none twice"
    reports = solo_reports(queue_file)
    assert sorted(i for i, _w, _inst in reports) == list(range(n))
    assert {i for i, w, _inst in reports if w == "sleeper"} == set(jsonl_indices(outs["sleeper"]))
    log = logs["sleeper"].read_text()
    assert "Traceback" not in log
    noted = [row for row in log.splitlines() if row.startswith("ClaimLost: ")]
    assert noted, log[-3000:]  # it held items when it stopped: each is noted as lost, none reported
    assert all("while this computer was asleep or paused" in row or "finished by another volunteer" in row
               for row in noted), noted
    kept_aside = jsonl_indices(outs["sleeper"].with_name("sleeper.jsonl.lost.jsonl"))
    assert not set(kept_aside) & {i for i, w, _inst in reports if w == "sleeper"}  # aside, not reported


# -- 8. answers kept aside, old journal rows -------------------------------------------------------------------


def fill_disk(path: Path) -> None:
    """Write `path` until the file system says it is full."""
    with open(path, "wb", buffering=0) as fh:
        block = b"\0" * 65536
        try:
            while True:
                fh.write(block)
        except OSError as err:
            assert err.errno == errno.ENOSPC, err


def test_keep_aside_on_a_full_disk_is_a_clear_error_and_leaves_whole_lines(tmp_path, tmpfs) -> None:
    disk = tmpfs("256k")
    out = disk.path / "gold.jsonl"
    journal = Journal(out, "gold", "set")
    lost = {"lost": "taken", "cause": "paused"}
    journal.keep_aside({"idx": 0, "response": "first"}, lost)
    journal.hold({"idx": 5, "response": "loop"}, {"held": ["repetition"], "quality": {"ngram_repeat": 0.9}})
    filler = disk.path / "filler"
    fill_disk(filler)
    big = {"idx": 1, "response": "x" * 20000}  # more than the free end of the file's last page
    with pytest.raises(StorageError, match="is full") as err:
        journal.keep_aside(big, lost)
    assert str(journal.lost_path) in str(err.value) and "kept" in str(err.value)
    with pytest.raises(StorageError, match="is full") as err:
        journal.hold(dict(big, idx=6), {"held": ["repetition"], "quality": {}})
    assert str(journal.held_path) in str(err.value)
    assert [r["idx"] for r in lines_of(journal.lost_path)] == [0], "no partial line"
    assert [r["idx"] for r in lines_of(journal.held_path)] == [5]
    filler.unlink()  # the volunteer frees some space
    journal.keep_aside(big, lost)
    rows = lines_of(journal.lost_path)
    assert [r["idx"] for r in rows] == [0, 1]
    assert rows[1] == dict(big, kind="gold", prompt_set="set", lost="taken", cause="paused")
    journal.close()
    # Lines beside the output are never adopted as finished answers.
    again = Journal(out, "gold", "set")
    assert again.done_set() == set() and again.outbox() == [] and not out.exists()
    again.close()


def test_journal_rows_from_before_instances_still_load_and_are_reported(tmp_path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 3)
    dataset = prompt_set_hash(prompts)
    out = tmp_path / "o.jsonl"

    def old_report(idx: int) -> dict:  # a Completion as the version before instances wrote it: no "instance"
        return {"kind": "gold", "idx": idx, "worker": "w", "seed_id": f"S{idx:03d}", "domain": "Privacy",
                "voice": "original", "region": "", "gen_time": 1.5, "chars": 40, "tokens": 9,
                "truncated": False, "model": "m", "time_ns": 1_700_000_000_000_000_000 + idx}

    # Answer 1: written and journaled, not reported. Answer 2: written just before a crash, never journaled.
    line = {"prompt": "q", "response": "an old answer", "kind": "gold", "prompt_set": dataset}
    out.write_text("".join(json.dumps(dict(line, idx=i, _completion=old_report(i))) + "\n" for i in (1, 2)))
    db = sqlite3.connect(out.with_name(out.name + ".journal.sqlite"))
    db.execute("CREATE TABLE done (kind TEXT, dataset TEXT, idx INTEGER, completion TEXT, reported INTEGER "
               "DEFAULT 0, PRIMARY KEY (kind, dataset, idx))")
    db.execute("INSERT INTO done VALUES ('gold', ?, 1, ?, 0)", (dataset, json.dumps(old_report(1))))
    db.commit()
    db.close()

    journal = Journal(out, "gold", dataset)
    outbox = journal.outbox()
    assert [c.idx for c in outbox] == [1, 2]
    assert all(c.instance == "" and c.time_ns == old_report(c.idx)["time_ns"] for c in outbox)
    journal.close()
    # Fields a newer version may add are ignored.
    assert Completion.from_dict(dict(old_report(1), future_field=3)) == Completion.from_dict(old_report(1))

    queue = SQLiteQueue(tmp_path / "q.sqlite", "gold", "w", prompt_set=dataset)
    result = run_contribution(small_run(tmp_path, prompts, out), queue, ScriptedGenerator())
    assert result.done_this_run == 1 and result.unreported == 0  # only item 0 was left to generate
    assert queue.completed() == {0, 1, 2}
    reports = {i: inst for i, _w, inst in solo_reports(tmp_path / "q.sqlite")}
    assert reports[1] == reports[2] == "" and reports[0] == queue.instance
    queue.close()
