"""Measurements of the server, one module each; the plumbing they share is in bench/common/.

`make bench` (run.py) runs limit, paths, padding, loads (with bare_grpc), the seed's Flask
app and tuning in one plan, judged by acceptance.py and written up by report.py. Apart from
it: soak, native_leaks, replica_kill, slowdown, explain_faithfulness and explain_speed,
each with its own make target.
"""
