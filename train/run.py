"""`tspo-edge train`: data -> index -> environment -> Trainer, with progress and the final exports."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from tspo_edge.models.agent import save_agent
from tspo_edge.errors import TspoError
from tspo_edge.models.mllm import answerer_for, load_answerer
from tspo_edge.models import ModelSpec, load_models

from tspo_edge.train.checkpoint import latest_checkpoint
from tspo_edge.train.data import Dataset, Row, load_rows
from tspo_edge.train.dist import Dist
from tspo_edge.train.events import EmbeddedImages, FeatureFrames, load_features
from tspo_edge.train.features import indexed_features
from tspo_edge.train.loop import Env, TrainConfig, Trainer
from tspo_edge.train.official import clip_folder, is_clip_vit_l14, save_official
from tspo_edge.train.rollout import VideoFrames


@dataclass
class RunOptions:
    data: Path
    videos: Path
    db: Path = Path("tspo-edge.db")
    models: ModelSpec = field(default_factory=ModelSpec)   # encoder, agent, runtime (one load_models)
    mllm: str = "lite"
    mllm_model: str | None = None
    out: Path = Path("tspo-train")
    strict: bool = False
    resume: bool = False
    fps: float = 1.0
    device: str | None = None
    official: str = "auto"           # auto (CLIP ViT-L/14 only) | always | never
    pool: list[str] | None = None    # distractor videos (default: the data's videos)
    frame_cache: int = 0             # decoded frames kept by (video, time); the toy reuses them
    features: Path | None = None     # precomputed features (.npz): rows name its entries, nothing indexed
    cfg: TrainConfig = field(default_factory=TrainConfig)


def encode_questions(rows: list[Row], encoder) -> dict[str, np.ndarray]:
    """Text embeddings [1, D] of each distinct question stem (computed once per run)."""
    stems = list(dict.fromkeys(r.question for r in rows))
    out: dict[str, np.ndarray] = {}
    for i in range(0, len(stems), 256):
        chunk = stems[i:i + 256]
        emb = np.asarray(encoder.encode_texts(chunk), dtype=np.float32)
        out.update({s: emb[j:j + 1] for j, s in enumerate(chunk)})
    return out


def build_env(ds: Dataset, o: RunOptions, dist: Dist, *, log: Callable[[str], None] = print,
              index_progress=None):
    """Index what is missing (rank 0), then (env, models, agent to train, dropped videos)."""
    spec = o.models
    if spec.runtime == "torch" and spec.device is None and dist.device.type != "cpu":
        spec = replace(spec, device=str(dist.device))
    models = load_models(spec)
    encoder = models.encoder
    agent = models.trainable_agent()  # learns in torch, whatever runtime computes the embeddings
    log(f"agent: {models.agent_source}")
    videos = list(dict.fromkeys(ds.videos + list(o.pool or [])))
    if dist.is_main:
        feats, failed = indexed_features(videos, db=o.db, models=models, fps=o.fps, progress=index_progress)
    dist.barrier()
    if not dist.is_main:
        feats, failed = indexed_features(videos, db=o.db, models=models, fps=o.fps)
    rows = [r for r in ds.rows if r.video not in set(failed)]
    if not rows:
        raise TspoError(f"{o.data}: no row's video could be indexed")
    answerer = answerer_for(o.mllm, models, memo=True, model=o.mllm_model, concurrency=o.cfg.group)
    if not getattr(answerer, "needs_frames", True):
        raise TspoError(f"--mllm {o.mllm}: training needs an answerer that looks at the frames")
    pool = [v for v in (o.pool or [r.video for r in rows]) if v not in set(failed)]
    env = Env(rows=rows, features=feats, frames=VideoFrames(size=getattr(answerer, "image_size", None) or 336,
                                                        cache=o.frame_cache),
              answerer=answerer, questions=encode_questions(rows, encoder), pool=list(dict.fromkeys(pool)))
    return env, models, agent, failed


def build_feature_env(o: RunOptions, dist: Dist, *, log: Callable[[str], None] = print):
    """--features: rows, features and the lite answerer from a feature file (no video is read)."""
    if o.mllm != "lite":
        raise TspoError(f"--features: the rollouts are answered from the stored embeddings, which only "
                        f"--mllm lite can do (got --mllm {o.mllm}); other MLLMs need the videos")
    spec = o.models
    if spec.runtime == "torch" and spec.device is None and dist.device.type != "cpu":
        spec = replace(spec, device=str(dist.device))
    models = load_models(spec)
    feats, _ = load_features(o.features, encoder_id=models.encoder.id)
    ds = load_rows(o.data, None, strict=o.strict, known=set(feats.table))
    for v in ds.missing:
        log(f"not in {o.features} (rows skipped): {v}")
    agent = models.trainable_agent()
    log(f"agent: {models.agent_source}")
    answerer = load_answerer("lite", encoder=EmbeddedImages(models.encoder))
    pool = [v for v in (o.pool or ds.videos) if v in feats.table]
    env = Env(rows=ds.rows, features=feats, frames=FeatureFrames(feats), answerer=answerer,
              questions=encode_questions(ds.rows, models.encoder), pool=list(dict.fromkeys(pool)))
    return ds, env, models, agent


def train_from_options(o: RunOptions, *, log: Callable[[str], None] = print, on_step=None,
                       index_progress=None) -> dict:
    """The whole command: returns a summary dict (also written to <out>/summary.json)."""
    dist = Dist.from_env(o.device)
    if o.features is not None:
        ds, env, models, agent = build_feature_env(o, dist, log=log)
        failed: list[str] = []
    else:
        ds = load_rows(o.data, o.videos, strict=o.strict)
        for v in ds.missing:
            log(f"missing video (rows skipped): {v}")
        env, models, agent, failed = build_env(ds, o, dist, log=log, index_progress=index_progress)
    encoder = models.encoder
    for v in failed:
        log(f"could not index (rows skipped): {v}")
    trainer = Trainer(agent, env, o.cfg, o.out, dist=dist, encoder_id=encoder.id, on_step=on_step)
    if o.resume:
        ckpt = latest_checkpoint(o.out)
        log(f"resuming from {ckpt}" if ckpt else f"--resume: no checkpoint in {o.out}, starting from step 0")
    summary = trainer.run(resume=o.resume)
    summary.update(rows=len(env.rows), skipped_rows=ds.skipped + (len(ds.rows) - len(env.rows)),
                   missing_videos=ds.missing, failed_videos=failed, encoder=encoder.id)
    if dist.is_main:
        final = save_agent(trainer.agent, Path(o.out) / "agent", encoder_id=encoder.id)
        summary["agent"] = str(final.parent)
        folder = None
        if o.official != "never":
            enc_spec = o.models.encoder_spec
            folder = clip_folder(enc_spec) if enc_spec != "lite" and o.models.runtime == "torch" else None
            if folder is not None and (o.official == "always" or is_clip_vit_l14(folder)):
                summary["official"] = str(save_official(trainer.agent, folder, Path(o.out) / "tspo-0.4b"))
            elif o.official == "always":
                raise TspoError(f"{enc_spec}: the official layout needs a local CLIP checkpoint as the encoder")
    return summary


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))
