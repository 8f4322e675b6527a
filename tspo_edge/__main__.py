"""`python -m tspo_edge`: the command line (the top of the import graph, like the console script)."""

from tspo_edge.cli import app

app(prog_name="tspo-edge")
