"""Hugging Face CLIP / SigLIP encoders (placeholder until the next commit)."""
from ..errors import ModelLoadError


class HFEncoder:
    def __init__(self, spec, **kw):
        raise ModelLoadError(f"{spec}: Hugging Face encoders are not available yet")
