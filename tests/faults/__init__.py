"""Fault tests: each of gpulab's promises under a broken broker, database, worker, disk or input."""
