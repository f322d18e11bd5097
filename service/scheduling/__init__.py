"""Scheduling: which pending job starts where and when.

The queue view (`queue_state`), placement, fair share, per-member limits and device
requests, and the dispatcher loop that acts on them. Routes read the queue through
`queue_state`; only `cli` starts the dispatcher.
"""
