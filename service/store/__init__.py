"""Store functions: every change to the database goes through one of these.

Each is a verb with keyword-only arguments and commits its own transaction. Every job state
change is one conditional UPDATE: the row that wins is the truth, and a lost race is a
clean no-op that returns None or False.
"""
