"""The SQLite store: round trip, schema version, encoder binding, one transaction per video."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
import sqlite_utils

from tspo_edge.storage import search as S
from tspo_edge.errors import IndexMismatchError, StoreDamagedError
from tspo_edge.storage.store import SCHEMA_VERSION, Store, StoreError, fingerprint


def _features(t=50, d=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((t, d)).astype(np.float32) * 3
    z = x + rng.standard_normal((t, d)).astype(np.float32)
    return np.arange(t) * 1.0 + 0.25, x, z


def _put(store, path="/videos/a.mp4", encoder_id="enc-A", agent_id="agent-1", **kw):
    times, x, z = _features(**kw)
    return store.put_video(path=path, size=123, mtime=1.5, fingerprint="fp", times=times, x=x, z=z,
                           encoder_id=encoder_id, agent_id=agent_id, duration=50.0, fps=25.0, width=640,
                           height=360, sample_fps=1.0)


def test_round_trip_float32_with_norms(tmp_path):
    times, x, z = _features()
    with Store(tmp_path / "i.db") as s:
        row = _put(s)
        f = s.load_features(row.id)
    assert row.status == "indexed" and row.frame_count == 50 and row.dim == 16
    assert row.encoder_id == "enc-A" and row.agent_id == "agent-1" and row.width == 640
    assert f.x.dtype == f.z.dtype == f.x_norm.dtype == np.float32 and f.times.dtype == np.float64
    np.testing.assert_array_equal(f.times, times)
    np.testing.assert_allclose(f.x, x, rtol=1e-3, atol=1e-3)  # stored as float16
    np.testing.assert_allclose(f.z, z, rtol=1e-3, atol=1e-3)
    # norms are those of the stored values, so ask-time cosines are exact for what it loads
    np.testing.assert_allclose(f.x_norm, np.linalg.norm(f.x, axis=1), rtol=1e-6)
    np.testing.assert_allclose(f.z_norm, np.linalg.norm(f.z, axis=1), rtol=1e-6)


def test_plain_tables_wal_and_version(tmp_path):
    with Store(tmp_path / "i.db") as s:
        _put(s)
        assert s.db.journal_mode == "wal"
    db = sqlite_utils.Database(tmp_path / "i.db")  # what `sqlite-utils tables` / datasette see
    assert {"meta", "videos", "features"} <= set(db.table_names())
    assert db["videos"].count == 1 and db["features"].count == 1
    meta = {r["key"]: r["value"] for r in db["meta"].rows}
    assert meta["schema_version"] == str(SCHEMA_VERSION) and meta["encoder_id"] == "enc-A"


def test_find_video_by_any_spelling_of_the_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with Store("i.db") as s:
        row = _put(s, path="clips/../a.mp4")
        assert s.find_video(tmp_path / "a.mp4").id == row.id
        assert s.find_video("a.mp4").id == row.id
        assert s.find_video("b.mp4") is None
        assert [v.id for v in s.videos(status="indexed")] == [row.id] and s.videos(status="failed") == []


def test_encoder_binding_refuses_another_encoder(tmp_path):
    with Store(tmp_path / "i.db") as s:
        _put(s, encoder_id="enc-A")
        with pytest.raises(IndexMismatchError) as e:
            s.check_encoder("enc-B")
        assert "enc-A" in str(e.value) and "enc-B" in str(e.value)
        with pytest.raises(IndexMismatchError):
            _put(s, path="/videos/b.mp4", encoder_id="enc-B")
        assert s.find_video("/videos/b.mp4") is None  # the refused write left nothing
        s.check_encoder("enc-A")
        with pytest.raises(IndexMismatchError):
            s.load_features(s.find_video("/videos/a.mp4").id, encoder_id="enc-B")


def test_index_without_indexed_videos_may_be_rebound(tmp_path):
    with Store(tmp_path / "i.db") as s:
        s.bind_encoder("enc-A")
        s.put_failed(path="/v/bad.mp4", size=0, mtime=0.0, fingerprint=None, error="empty", encoder_id="enc-A")
        s.bind_encoder("enc-B")
        assert s.encoder_id == "enc-B"


def test_newer_schema_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "i.db"
    with Store(path) as s:
        _put(s)
    with sqlite3.connect(path) as c:
        c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        Store(path)
    with pytest.raises(StoreError, match="newer"):
        Store(path, readonly=True)


@pytest.mark.parametrize("content", [b"", b"hello, this is text\n" * 50])
def test_non_index_files_are_refused(tmp_path, content):
    other = tmp_path / "other.db"
    if content:
        other.write_bytes(content)
        with pytest.raises(StoreError, match="not a tspo-edge index"):
            Store(other)
    else:
        with sqlite3.connect(other) as c:  # a real SQLite file with someone else's tables
            c.execute("CREATE TABLE people (name TEXT)")
        with pytest.raises(StoreError, match="not a tspo-edge index"):
            Store(other)
    with pytest.raises(StoreError, match="no index"):
        Store(tmp_path / "missing.db", readonly=True)


def test_readonly_never_writes(tmp_path):
    with Store(tmp_path / "i.db") as s:
        row = _put(s)
    with Store(tmp_path / "i.db", readonly=True) as s:
        assert s.load_features(row.id).x.shape == (50, 16)
        with pytest.raises(StoreError, match="read-only"):
            _put(s, path="/videos/b.mp4")


def test_a_video_is_one_transaction(tmp_path, monkeypatch):
    with Store(tmp_path / "i.db") as s:
        first = _put(s)
        real_upsert = sqlite_utils.db.Table.upsert

        def interrupted(self, record, **kw):
            if self.name == "features":
                raise KeyboardInterrupt  # Ctrl-C after the video row was written, before its features
            return real_upsert(self, record, **kw)

        monkeypatch.setattr(sqlite_utils.db.Table, "upsert", interrupted)
        with pytest.raises(KeyboardInterrupt):
            _put(s, path="/videos/b.mp4", seed=1)
        with pytest.raises(KeyboardInterrupt):  # a re-index of a stored video keeps the old one whole
            _put(s, path="/videos/a.mp4", seed=2, t=7)
        monkeypatch.undo()
    with Store(tmp_path / "i.db") as s:
        assert [v.path for v in s.videos()] == ["/videos/a.mp4"]
        assert s.get_video(first.id).frame_count == 50
        assert s.load_features(first.id).x.shape == (50, 16)


def test_failed_and_updated_events(tmp_path):
    with Store(tmp_path / "i.db") as s:
        row = _put(s)
        z2 = np.ones((50, 16), np.float32)
        s.update_events(row.id, z2, "agent-2")
        f = s.load_features(row.id)
        assert f.video.agent_id == "agent-2"
        np.testing.assert_array_equal(f.z, z2)
        np.testing.assert_allclose(f.z_norm, 4.0)
        with pytest.raises(StoreError, match="cannot update"):
            s.update_events(row.id, np.ones((49, 16), np.float32), "agent-3")
        failed = s.put_failed(path="/videos/a.mp4", size=5, mtime=2.0, fingerprint="x", error="truncated")
        assert failed.id == row.id and failed.status == "failed" and failed.error == "truncated"
        with pytest.raises(StoreError, match="not indexed.*truncated"):
            s.load_features(row.id)


def test_non_finite_float16_is_refused(tmp_path):
    with Store(tmp_path / "i.db") as s:
        times, x, z = _features()
        x[3, 2] = 1e6  # beyond float16's range
        with pytest.raises(StoreError, match="float16"):
            s.put_video(path="/v.mp4", size=1, mtime=0.0, fingerprint="f", times=times, x=x, z=z,
                        encoder_id="e", agent_id="a")
        assert s.videos() == []


def test_fingerprint_sees_start_middle_end_and_size(tmp_path):
    rng = np.random.default_rng(0)
    data = bytearray(rng.integers(0, 256, 8 << 20, dtype=np.uint8).tobytes())  # 8 MiB: sampled blocks
    p = tmp_path / "big.bin"
    p.write_bytes(data)
    base = fingerprint(p)
    assert fingerprint(p) == base
    for pos in (10, len(data) // 2 + 10, len(data) - 10):
        changed = bytearray(data)
        changed[pos] ^= 0xFF
        p.write_bytes(changed)
        assert fingerprint(p) != base, pos
    p.write_bytes(data + b"\0")
    assert fingerprint(p) != base
    small = tmp_path / "small.bin"
    small.write_bytes(b"abc")
    assert fingerprint(small) != fingerprint(tmp_path / "big.bin")


def test_sqlite_error_codes_are_read_from_the_message_where_python_gives_none(tmp_path):
    """Python 3.10's sqlite3 errors carry no code (`sqlite_errorcode` came in 3.11): the store reads
    it from SQLite's message, so locks are retried and faults named there too."""
    from tspo_edge.storage import store

    def provoke(fn):
        try:
            fn()
        except sqlite3.Error as e:
            return e
        raise AssertionError("no sqlite3 error")

    notadb = tmp_path / "notadb.db"
    notadb.write_bytes(b"not a database at all " * 200)
    locked = tmp_path / "locked.db"
    holder = sqlite3.connect(locked, timeout=0)
    holder.execute("CREATE TABLE t (x)")
    holder.commit()
    holder.execute("BEGIN IMMEDIATE")
    readonly = tmp_path / "ro.db"
    sqlite3.connect(readonly).execute("CREATE TABLE t (x)").connection.commit()
    cases = {
        store.NOTADB: lambda: sqlite3.connect(notadb).execute("SELECT * FROM sqlite_master").fetchall(),
        store.CANTOPEN: lambda: sqlite3.connect(tmp_path / "no" / "such.db"),
        store.BUSY: lambda: sqlite3.connect(locked, timeout=0).execute("BEGIN IMMEDIATE"),
        store.READONLY: lambda: sqlite3.connect(f"file:{readonly}?mode=ro", uri=True).execute("INSERT INTO t VALUES (1)"),
    }
    for code, fn in cases.items():
        e = provoke(fn)
        if hasattr(e, "sqlite_errorcode"):  # Python 3.11+: the code itself, and the message agrees
            assert store._primary(e) == e.sqlite_errorcode & 0xFF == code, str(e)
        bare = type(e)(str(e))  # as Python 3.10 raises it: the message alone
        assert not hasattr(bare, "sqlite_errorcode")
        assert store._primary(bare) == code, str(e)
    holder.rollback()
    assert isinstance(store.storage_error(locked, type(e)("database is locked"), "writing"), store.StoreLockedError)


def _as_version_2(path):
    """Rewrite an index as release 2 wrote it: no views, and search tables with the old columns
    that the old search.py made itself (beside its unversioned `<db>.search/` folder)."""
    with sqlite3.connect(path) as c:
        c.execute("DROP VIEW videos_readable")
        c.execute("DROP VIEW blobs")
        for name in ("insert", "update", "delete"):
            c.execute(f"DROP TRIGGER search_segments_{name}")
        c.execute("DROP TABLE search_segments")
        c.execute("DROP TABLE search_state")
        c.execute("CREATE TABLE search_segments (video_id INTEGER PRIMARY KEY, indexed_at TEXT, agent_id TEXT, "
                  "frames INTEGER, dim INTEGER, digest TEXT, row0 INTEGER, gen INTEGER, max_inv FLOAT)")
        c.execute("CREATE TABLE search_state (key TEXT PRIMARY KEY, value TEXT)")
        c.execute("INSERT INTO search_state VALUES ('gen', '0'), ('dim', '16'), ('end', '50')")
        c.execute("INSERT INTO search_segments VALUES (1, 'x', 'a', 50, 16, 'd', 0, 0, 1.0)")
        c.execute("CREATE TRIGGER search_segments_insert AFTER INSERT ON features "
                  "BEGIN DELETE FROM search_segments WHERE video_id = NEW.video_id; END")
        c.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")


def _as_version_1(path):
    """Rewrite an index as the first release wrote it: no identity columns, schema_version 1."""
    _as_version_2(path)
    with sqlite3.connect(path) as c:
        c.execute("DROP TRIGGER search_segments_insert")
        for name in ("search_segments", "search_state"):
            c.execute(f"DROP TABLE {name}")
        for col in ("dev", "inode", "container"):
            c.execute(f"ALTER TABLE videos DROP COLUMN {col}")
        c.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")


def test_an_index_of_schema_1_is_upgraded_in_place_and_keeps_its_videos(tmp_path):
    path = tmp_path / "i.db"
    with Store(path) as s:
        _put(s)
    _as_version_1(path)
    with Store(path, readonly=True) as s:  # read-only: read as it is, nothing written
        assert s.meta("schema_version") == "1"
        row = s.find_video("/videos/a.mp4")
        assert row.status == "indexed" and row.inode is None
        assert s.load_features(row.id).x.shape == (50, 16)
    with Store(path) as s:
        assert s.meta("schema_version") == str(SCHEMA_VERSION)
        assert {"dev", "inode", "container"} <= {c.name for c in s.db["videos"].columns}
        assert s.load_features(s.find_video("/videos/a.mp4").id).x.shape == (50, 16)
        _assert_schema_3(s)


def _assert_schema_3(s):
    """The search tables with their checksum column, the triggers and the views are there, and a
    search works (its cache built anew from the features)."""
    assert "crc" in {c.name for c in s.db["search_segments"].columns}
    assert {"videos_readable", "blobs"} <= set(s.db.view_names())
    triggers = {t.name for t in s.db.triggers}
    assert {"search_segments_insert", "search_segments_update", "search_segments_delete"} <= triggers
    res = S.search(s, np.ones(16, np.float32), top=3)
    assert res.direct == 0 and res.frames == 50 and res.moments


def test_an_index_of_schema_2_with_the_old_search_tables_is_upgraded(tmp_path):
    path = tmp_path / "i.db"
    with Store(path) as s:
        _put(s)
    _as_version_2(path)
    with Store(path, readonly=True) as s:  # read-only: read as it is; searched from the index file
        assert s.meta("schema_version") == "2"
        res = S.search(s, np.ones(16, np.float32), top=3)
        assert res.direct == 1 and res.frames == 50
    with Store(path) as s:
        assert s.meta("schema_version") == str(SCHEMA_VERSION)
        assert s.db.execute("SELECT COUNT(*) FROM search_segments WHERE crc IS NULL").fetchone()[0] == 0
        _assert_schema_3(s)


def test_views_name_each_blob_and_show_times_as_text(tmp_path):
    path = tmp_path / "i.db"
    with Store(path) as s:
        _put(s)
    db = sqlite_utils.Database(path)
    row = next(db["videos_readable"].rows)
    assert row["mtime"] == "1970-01-01T00:00:01.500Z" and row["path"] == "/videos/a.mp4"
    blobs = {r["column"]: r for r in db["blobs"].rows}
    assert {k: (v["dtype"], v["shape"]) for k, v in blobs.items()} == {
        "times": ("float64", "[50]"), "x": ("float16", "[50, 16]"), "z": ("float16", "[50, 16]"),
        "x_norm": ("float32", "[50]"), "z_norm": ("float32", "[50]")}
    assert all(r["bytes"] == r["expected_bytes"] for r in blobs.values())
    # sqlite-utils' own command line reads them as well
    cli = shutil.which("sqlite-utils")
    cmd = [cli] if cli else [sys.executable, "-m", "sqlite_utils"]
    out = subprocess.run(cmd + ["rows", str(path), "blobs"], capture_output=True, text=True, check=True).stdout
    assert {r["column"] for r in json.loads(out)} == set(blobs)
    out = subprocess.run(cmd + ["rows", str(path), "videos_readable"], capture_output=True, text=True, check=True).stdout
    assert json.loads(out)[0]["mtime"] == "1970-01-01T00:00:01.500Z"


@pytest.mark.parametrize("sql, cause", [
    ("UPDATE features SET frames = 49", "times holds 400 bytes, 49 frames x 1 float64 need 392"),
    ("UPDATE features SET dim = 0", "frames 50 and dim 0 are not a shape"),
    ("UPDATE features SET x_norm = x'00'", "x_norm holds 1 bytes"),
    ("UPDATE features SET z_norm = NULL", "z_norm holds a NoneType"),
    ("UPDATE features SET times = zeroblob(400)", None),   # finite: a shape that agrees passes
])
def test_stored_arrays_are_checked_on_read(tmp_path, sql, cause):
    path = tmp_path / "i.db"
    with Store(path) as s:
        vid = _put(s).id
        s.db.execute(sql)
        if cause is None:
            assert s.load_features(vid).times.shape == (50,) and s.check().ok
            return
        with pytest.raises(StoreDamagedError, match=cause) as e:
            s.load_features(vid)
        assert "repair: tspo-edge index --force /videos/a.mp4" in str(e.value)
        report = s.check()
        assert not report.ok and report.damaged[0]["path"] == "/videos/a.mp4" and not report.integrity


@pytest.mark.parametrize("version", ["two", "²", "-1", ""])
def test_a_schema_version_that_is_no_whole_number_is_one_line(tmp_path, version):
    path = tmp_path / "i.db"
    with Store(path) as s:
        _put(s)
    with sqlite3.connect(path) as c:
        c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [version])
    with pytest.raises(StoreError, match="not a tspo-edge index"):
        Store(path)


def test_the_identity_of_an_indexed_file_is_recorded(tmp_path):
    f = tmp_path / "a.mp4"
    f.write_bytes(b"x" * 123)
    st = f.stat()
    with Store(tmp_path / "i.db") as s:
        times, x, z = _features()
        row = s.put_video(path=f, size=st.st_size, mtime=st.st_mtime, fingerprint="fp", times=times, x=x, z=z,
                          encoder_id="e", agent_id="a", container="mov,mp4,m4a,3gp,3g2,mj2")
        assert (row.dev, row.inode, row.container) == (st.st_dev, st.st_ino, "mov,mp4,m4a,3gp,3g2,mj2")
        # a file that changed between its stat and the write gets no identity (never a wrong one)
        row = s.put_video(path=f, size=st.st_size + 1, mtime=st.st_mtime, fingerprint="fp", times=times, x=x,
                          z=z, encoder_id="e", agent_id="a")
        assert row.inode is None
