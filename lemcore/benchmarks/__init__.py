"""Benchmarks: run models on standard and ethics suites, score them honestly, compare with intervals.

One module per suite, named by its id (gsm8k, truthfulqa, do_not_answer, toxigen, ethics, truthfulqa_mc).
Importing this package does not import mlx: models are loaded inside the engines.
"""

from lemcore.benchmarks.compare import CompareRow, Comparison, compare_runs, format_comparison
from lemcore.benchmarks.events import BenchFinished, BenchProgress, BenchRow, BenchStarted
from lemcore.benchmarks.extract import Extraction, extract_answer, score_gsm8k
from lemcore.benchmarks.judge import APIJudge, JudgeAuthError, JudgeConfig, Judgment, LocalJudge, make_judge
from lemcore.benchmarks.reference import REFERENCE_LABEL, format_reference, load_reference
from lemcore.benchmarks.run import BenchConfig, BenchResult, SuiteSpec, run_benchmark
from lemcore.benchmarks.score import ScoreConfig, judge_run, rescore_run, score_responses
from lemcore.benchmarks.stats import (
    Difference,
    Interval,
    bootstrap_mean,
    difference,
    mean_interval,
    paired_difference,
    proportion_interval,
    sign_test_p,
)
from lemcore.benchmarks.store import list_runs, read_run, summarize_run
from lemcore.benchmarks.suites import SUITE_IDS, BenchItem, Suite, fetch_suite, load_suite, subsample

__all__ = [
    "APIJudge",
    "REFERENCE_LABEL",
    "SUITE_IDS",
    "BenchConfig",
    "BenchFinished",
    "BenchItem",
    "BenchProgress",
    "BenchResult",
    "BenchRow",
    "BenchStarted",
    "CompareRow",
    "Comparison",
    "Difference",
    "Extraction",
    "Interval",
    "JudgeAuthError",
    "JudgeConfig",
    "Judgment",
    "LocalJudge",
    "ScoreConfig",
    "Suite",
    "SuiteSpec",
    "bootstrap_mean",
    "compare_runs",
    "difference",
    "extract_answer",
    "fetch_suite",
    "format_comparison",
    "format_reference",
    "judge_run",
    "load_reference",
    "list_runs",
    "load_suite",
    "make_judge",
    "mean_interval",
    "paired_difference",
    "proportion_interval",
    "read_run",
    "rescore_run",
    "run_benchmark",
    "score_gsm8k",
    "score_responses",
    "sign_test_p",
    "subsample",
    "summarize_run",
]
