"""Commands that look after an index and its videos: info, check, rm, prune, clip, doctor."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List

import typer

from tspo_edge import doctor
from tspo_edge.errors import InputError
from tspo_edge.index.console import print_table, videos_table
from tspo_edge.media.clip import cut_clip, format_time, parse_time
from tspo_edge.storage.removal import prune, remove
from tspo_edge.storage.store import Store, existing_index
from tspo_edge.terminal import printable
from tspo_edge.commands.face import DbOpt, JsonOpt, dump, err, examples, out, say, warn

commands = typer.Typer(rich_markup_mode=None)


@commands.command("info", epilog=examples("tspo-edge info", "tspo-edge info --db archive.db --json"))
def info_cmd(db: Path = DbOpt, json_out: bool = JsonOpt) -> None:
    """List the videos in an index: path, duration, frames, status, the agent of their event features."""
    with Store(existing_index(db), readonly=True) as store:
        rows, meta = store.videos(), store.described()
    if json_out:
        dump({"db": str(db), **meta, "videos": [dataclasses.asdict(r) for r in rows]})
    else:
        say(f"schema {meta['schema_version']}; last agent {meta['agent_id']}: {meta['agent_source']}")
        print_table(out, videos_table(rows, db=str(db), encoder_id=meta["encoder_id"]), note=err)


@commands.command("check", epilog=examples("tspo-edge check", "tspo-edge check --db archive.db --json"))
def check_cmd(db: Path = DbOpt, json_out: bool = JsonOpt) -> None:
    """Verify the index: SQLite's integrity check and every video's stored arrays. Exit 1 when something is damaged."""
    with Store(existing_index(db), readonly=True) as store:
        report = store.check()
    if json_out:
        dump(report.to_dict())
    else:
        for line in report.lines():
            say(printable(line))
    raise typer.Exit(0 if report.ok else 1)


@commands.command("rm", epilog=examples(
    "tspo-edge rm ./dashcam/2026-11-01.mp4 ./dashcam/2026-11-02.mp4",
    "tspo-edge rm 12 15 --db archive.db              # by id, as `tspo-edge info` lists them",
    "tspo-edge rm ./dashcam/old/                     # every indexed video under a folder"))
def rm_cmd(refs: List[str] = typer.Argument(..., metavar="PATH_OR_ID...", help="Indexed video paths, folders (every indexed video under them) or ids."),
           db: Path = DbOpt, json_out: bool = JsonOpt) -> None:
    """Remove videos from the index: their rows, features and search data. The files stay on disk."""
    with Store(existing_index(db)) as store:
        r = remove(store, refs)
    for ref in r.not_found:
        warn(f"{ref}: not in the index {db}")
    if json_out:
        dump(r.to_dict())
    else:
        for row in r.removed:
            typer.echo(f"removed {printable(row.path)}")
    raise typer.Exit(1 if r.not_found else 0)


@commands.command("prune", epilog=examples(
    "tspo-edge prune --dry-run          # list what would go, change nothing",
    "tspo-edge prune --db archive.db --json"))
def prune_cmd(db: Path = DbOpt,
              dry_run: bool = typer.Option(False, "--dry-run", help="List the videos that would be removed; change nothing."),
              json_out: bool = JsonOpt) -> None:
    """Remove videos whose files are gone (marked missing, or no file at their path) from the index."""
    with Store(existing_index(db), readonly=dry_run) as store:
        r = prune(store, dry_run=dry_run)
    if json_out:
        dump(r.to_dict())
    else:
        for row, why in r.videos:
            typer.echo(f"{'would remove' if dry_run else 'removed'} {printable(row.path)} ({why})")
    say(f"{len(r.videos)} videos {'would be removed' if dry_run else 'removed'} from {printable(db)}")


@commands.command("clip", epilog=examples(
    "tspo-edge clip dashcam.mp4 --at 03:09 -o gate.mp4            # 10 s, stream copy",
    "tspo-edge clip lecture.mkv --at 1:02:03 --seconds 30 -o proof.mkv",
    "tspo-edge clip dashcam.mp4 --at 189.5 --seconds 4 --reencode -o exact.mp4 --force"))
def clip_cmd(
    video_path: Path = typer.Argument(..., metavar="VIDEO", help="The video to cut from (indexed or not)."),
    at: str = typer.Option(..., "--at", help="Where the clip starts: 03:09, 1:02:03, 189 or 189.5 (as search and ask print times)."),
    seconds: float = typer.Option(10.0, "--seconds", help="How long the clip is."),
    out_path: Path = typer.Option(..., "-o", "--out", help="The clip to write: .mp4, .m4v, .mov or .mkv."),
    reencode: bool = typer.Option(False, "--reencode", help="Start exactly at --at (decode and encode the video); default: stream copy from the keyframe at or before --at."),
    force: bool = typer.Option(False, "--force", help="Replace an existing -o file."),
    json_out: bool = JsonOpt,
) -> None:
    """Cut a clip out of a video around a moment: stream copy (fast, lossless) or --reencode (frame-exact)."""
    t = parse_time(at, what="--at")
    if out_path.exists() and not force:
        raise InputError(f"{out_path}: already exists (--force replaces it)")
    c = cut_clip(video_path, out_path, at=t, seconds=seconds, reencode=reencode, overwrite=force)
    if json_out:
        dump(c.to_dict())
        return
    how = "re-encoded" if c.reencoded else f"stream copy from the keyframe {c.at - c.start:.1f} s before {format_time(c.at)}"
    typer.echo(f"{printable(c.path)}: {format_time(c.start)} to {format_time(c.end)} of {printable(c.source)} "
               f"({c.duration:.1f} s, {how})")


@commands.command("doctor", epilog=examples("tspo-edge doctor", "tspo-edge doctor --json > machine.json"))
def doctor_cmd(json_out: bool = JsonOpt) -> None:
    """What this machine can run: Python, torch and its GPUs, PyAV, the decoders (and why one cannot run), ONNX Runtime's providers, TensorRT, the lite profile."""
    facts = doctor.report()
    if json_out:
        dump(facts)
    else:
        for line in doctor.lines(facts):
            out.print(line, markup=False, highlight=False, soft_wrap=True)
