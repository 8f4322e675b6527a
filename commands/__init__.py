"""The command line's commands beside cli.py, one module per group: face.py (what they share),
manage.py (info, check, rm, prune, clip, doctor), learning.py (train, export, eval)."""
