"""`lem`: the command line over the same engine functions the GUI calls; one module per command group.

main.py (the parser and `lem doctor/login/logout`), models.py, contribute.py (gold/expand), train.py
(train/fuse), bench.py (bench/score/compare), doctor.py (the machine checks), command.py (error handling).
"""
