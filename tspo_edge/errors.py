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


class StoreError(TspoError):
    """The index file cannot be used (not an index, newer schema, missing video, storage fault)."""


class NotAnIndexError(StoreError):
    """The file exists and SQLite can read it, but it is not a tspo-edge index (or not SQLite at all)."""


class StoreLockedError(StoreError):
    """Another process held the index's write lock for longer than the bounded wait."""


class StoreFullError(StoreError):
    """The disk (or quota) holding the index is full; what was committed before is kept."""


class StoreReadOnlyError(StoreError):
    """A write was needed but the index file, its folder or its mount is read-only."""


class StoreUnreadableError(StoreError):
    """The index cannot be opened or read (permissions, I/O error, a folder given as the file)."""


class NonFiniteError(TspoError):
    """An array that would be stored or used holds NaN or infinity."""


def check_finite(array, what: str) -> None:
    """Raise NonFiniteError("<what>: N non-finite values ...") unless every value is finite.

    `what` names the thing (a video path, a checkpoint); call it on every batch of embeddings or
    event features before they are written anywhere."""
    import numpy as np

    a = array.detach().float().cpu().numpy() if hasattr(array, "detach") else np.asarray(array)
    if a.dtype.kind not in "fc":
        return
    ok = np.isfinite(a)
    if not ok.all():
        bad = int(a.size - np.count_nonzero(ok))
        kinds = "NaN" if np.isnan(a).any() else ""
        if np.isinf(a).any():
            kinds = f"{kinds} and inf" if kinds else "inf"
        raise NonFiniteError(f"{what}: {bad} of {a.size} values are not finite ({kinds})")


class StoreNonFiniteError(StoreError, NonFiniteError):
    """The store refused to write NaN/inf features; raised before the transaction starts.

    A StoreError, so a batch indexer stops (the model is at fault, not the file) instead of
    recording the video as failed and dropping its stored features."""
