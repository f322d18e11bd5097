"""Accounting: what a job holds and uses, over a window and for a lab's history.

`shares` (a job's share of its device, the one function behind fair share, usage and the
dashboard), `usage` (one job's hours and efficiency, idle jobs, windows), `report` (per member,
device or kind), `rollups` (final jobs folded once for reads at scale) and `timeline` (the
queue over time).
"""
