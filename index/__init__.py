"""Batch indexing of video files and folders into the SQLite store (incremental, resumable)."""

from .files import VIDEO_EXTENSIONS, find_videos
from .indexer import (FileResult, IndexEvent, IndexSummary, encode_video, ensure_indexed, index_file,
                      index_paths, resolve_agent)

__all__ = ["VIDEO_EXTENSIONS", "find_videos", "FileResult", "IndexEvent", "IndexSummary", "encode_video",
           "ensure_indexed", "index_file", "index_paths", "resolve_agent"]
