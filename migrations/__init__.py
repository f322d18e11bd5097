"""Alembic migrations of gpulab's database (run with `gpulab migrate`)."""
