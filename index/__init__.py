"""Batch indexing of video files and folders into the SQLite store (incremental, resumable)."""

from tspo_edge.index.engine import IndexSummary, index_paths
from tspo_edge.index.engine_choice import check_engine, index_with_engine
from tspo_edge.index.files import find_videos

__all__ = ["IndexSummary", "check_engine", "find_videos", "index_paths", "index_with_engine"]
