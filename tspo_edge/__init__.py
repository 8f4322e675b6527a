"""tspo-edge: TSPO keyframe selection for question answering over long videos."""

__version__ = "0.1.0"
