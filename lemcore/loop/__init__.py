"""The LEK loop: gold answers -> training set -> LoRA -> fused model -> benchmarks of base and trained -> comparison.

`run_loop(config)` / `resume_loop(folder)` (engine.py) with a `LoopConfig` from `loop_config(spec)` or
`load_loop_yaml(path)` (config.py); events in events.py.
"""
