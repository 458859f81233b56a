"""The benchmark harness behind `benchmarks/run.py` (see benchmarks/README.md).

Modules: `data` (generated repos and their manifests), `hubserver` (the FakeHub child process),
`server` (the parent's handle on it), `runner` (one participant's download, in a child process),
`procs` (spawning and measuring children), `participants`, `scenarios` and `report`.
"""
