"""`python -m tspo_edge`: runs the command line, cli.py, as the main program (as `python cli.py` does)."""
import runpy

runpy.run_module("tspo_edge.cli", run_name="__main__")
