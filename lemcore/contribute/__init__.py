"""The volunteer's job: claim prompts, write gold (axiom sandwich) or expansion answers, nothing done twice
or lost.

engine.py (run_contribution), events.py (what it reports), setup.py (queue, token and generator from
settings), kernel.py (axioms and the sandwich), journal.py (JSONL + SQLite outbox), governor.py (battery,
memory, in-use pauses), queue/ (the lab's InfluxDB queue and the solo SQLite queue behind one protocol).
"""

from lemcore.contribute.engine import ContributeConfig, ContributeResult, run_contribution
from lemcore.contribute.governor import Governor, GovernorRules
from lemcore.contribute.kernel import build_sandwich, load_axioms, load_kernel_text
from lemcore.contribute.setup import QueueChoice, check_queue, make_generator, open_queue

__all__ = [
    "ContributeConfig",
    "ContributeResult",
    "Governor",
    "GovernorRules",
    "QueueChoice",
    "build_sandwich",
    "check_queue",
    "load_axioms",
    "load_kernel_text",
    "make_generator",
    "open_queue",
    "run_contribution",
]
