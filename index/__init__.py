"""Batch indexing of video files and folders into the SQLite store (incremental, resumable)."""

from .engine import IndexSummary, index_paths
from .files import find_videos

__all__ = ["IndexSummary", "find_videos", "index_paths"]
