"""Errors that reach the user: one line, naming the file and the cause."""


class TspoError(Exception):
    """Base class; the CLI prints str(e) and exits with `exit_code`."""

    exit_code = 2


class VideoError(TspoError):
    """A video could not be probed or decoded ("<path>: <cause>")."""


class CheckpointError(TspoError):
    """A checkpoint is missing keys, has wrong shapes, or is of an unknown format."""


class IndexMismatchError(TspoError):
    """An index was built with another encoder (or agent) than the one asked for."""


class ModelLoadError(TspoError):
    """A model (encoder or MLLM) could not be loaded."""


class AnswererError(TspoError):
    """An MLLM answerer failed (server down, bad response)."""
