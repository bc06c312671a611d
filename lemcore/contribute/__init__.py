"""The volunteer's job: claim prompts, write gold (axiom sandwich) or expansion answers, nothing done twice
or lost.

engine.py (run_contribution), events.py (what it reports), setup.py (build_contribution: queue, token and
generator from options or settings), kernel.py (axioms and the sandwich), journal.py (JSONL + SQLite
outbox), governor.py (battery, memory, in-use pauses), queue/ (the lab's InfluxDB queue and the solo SQLite
queue behind one protocol).
"""

from lemcore.contribute.engine import ContributeConfig, ContributeResult, run_contribution
from lemcore.contribute.governor import Governor, GovernorRules
from lemcore.contribute.kernel import build_sandwich, load_axioms, load_kernel_text
from lemcore.contribute.setup import (
    ContributionOptions,
    ContributionRun,
    QueueChoice,
    build_contribution,
    check_queue,
    make_generator,
    open_queue,
    options_from_settings,
)

__all__ = [
    "ContributeConfig",
    "ContributeResult",
    "ContributionOptions",
    "ContributionRun",
    "Governor",
    "GovernorRules",
    "QueueChoice",
    "build_contribution",
    "build_sandwich",
    "check_queue",
    "load_axioms",
    "load_kernel_text",
    "make_generator",
    "open_queue",
    "options_from_settings",
    "run_contribution",
]
