"""The index and what reads it: one SQLite file (store.py) with its schema, migrations and
transactions; the archive-wide search (search.py) over its int8 cache (search_cache.py) and
filters (search_filters.py); taking videos out (removal.py)."""
