"""Background work: the job runner (runner.py, the only module that creates threads) and the jobs pages start
(contribute.py). See ARCHITECTURE.md, "Threads"."""
