"""The `gpulab` command: a thin client of the HTTP API, plus the commands that start the parts."""
