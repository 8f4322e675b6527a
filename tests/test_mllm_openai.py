"""The OpenAI-compatible answerer against real HTTP servers started on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from tspo_edge.errors import AnswererError
from tspo_edge.models.mllm import load_answerer

KEY = "sk-test-secret-4242"


class _Server:
    """A tiny OpenAI-compatible server: GET /v1/models, POST /v1/chat/completions.

    The reply names the option whose letter matches the number of images sent (1 -> A, 2 -> B, …),
    and it decodes every JPEG it receives, so tests see exactly what crossed the wire."""

    def __init__(self, status: int = 200, models=("tiny-vlm",)):
        self.requests: list[dict] = []
        self.status = status
        srv = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output clean
                pass

            def _send(self, code, obj):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path.rstrip("/") == "/v1/models":
                    return self._send(200, {"object": "list", "data": [
                        {"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in models]})
                self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                srv.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                if srv.status != 200:
                    return self._send(srv.status, {"error": {"message": "model crashed", "type": "server_error"}})
                content = body["messages"][0]["content"]
                n_images = sum(p["type"] == "image_url" for p in content)
                reply = "ABCDEFGH"[n_images - 1] + "."
                self._send(200, {"id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": reply}}],
                                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _solid_frames(colours, h=48, w=64):
    return np.stack([np.full((h, w, 3), c, np.uint8) for c in colours])


def _decode(url: str) -> np.ndarray:
    assert url.startswith("data:image/jpeg;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("TSPO_EDGE_API_KEY", KEY)


def test_request_shape_frames_timestamps_model_and_key(api_key, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    with _Server() as srv:
        a = load_answerer(f"openai:{srv.url}", max_retries=0)  # no --mllm-model: the served one
        assert a.model == "tiny-vlm"
        ans = a.answer(_solid_frames(colours), [5.0, 65.0, 3601.0], "What colour is it?", ["red", "green", "blue"])
    assert ans.letter == "C" and ans.text == "C." and "tiny-vlm" in ans.model_id
    (req,) = srv.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["auth"] == f"Bearer {KEY}"
    body = req["body"]
    assert body["model"] == "tiny-vlm" and body["temperature"] == 0
    content = body["messages"][0]["content"]
    texts = [p["text"] for p in content if p["type"] == "text"]
    images = [_decode(p["image_url"]["url"]) for p in content if p["type"] == "image_url"]
    assert texts[:3] == ["Frame at 00:05:", "Frame at 01:05:", "Frame at 1:00:01:"]
    assert "What colour is it?" in texts[-1] and "A. red\nB. green\nC. blue" in texts[-1]
    assert len(images) == 3
    for img, c in zip(images, colours):  # the frames arrive intact (JPEG-lossy), in order
        assert img.shape == (48, 64, 3)
        assert np.abs(img.reshape(-1, 3).mean(0) - np.array(c)).max() < 8
    logged = caplog.text + "".join(capsys.readouterr())
    assert KEY not in logged and KEY not in repr(a.__dict__.get("id"))


def test_explicit_model_name_and_concurrent_batch(api_key):
    with _Server(models=("a", "b")) as srv:
        a = load_answerer(f"openai:{srv.url}", model="b", concurrency=4, max_retries=0)
        items = [(_solid_frames([(9, 9, 9)] * k), list(range(k)), "How many?", ["one", "two", "three", "four"])
                 for k in (1, 2, 3, 4, 2, 1)]
        answers = a.answer_batch(items)
    assert [x.letter for x in answers] == ["A", "B", "C", "D", "B", "A"]  # order kept
    assert len(srv.requests) == 6 and all(r["body"]["model"] == "b" for r in srv.requests)


def test_server_error_is_a_clear_answerer_error(api_key):
    with _Server(status=500) as srv:
        a = load_answerer(f"openai:{srv.url}", max_retries=0)
        with pytest.raises(AnswererError) as e:
            a.answer(_solid_frames([(1, 2, 3)]), [0.0], "Q?", ["x", "y"])
    msg = str(e.value)
    assert srv.url in msg and "HTTP 500" in msg and "\n" not in msg and KEY not in msg


def test_closed_port_is_a_clear_answerer_error(api_key):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(AnswererError, match="cannot connect") as e:
        load_answerer(f"openai:http://127.0.0.1:{port}/v1", model="m", max_retries=0, timeout=5)
    assert KEY not in str(e.value)


def test_bad_url_is_refused():
    from tspo_edge.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="http"):
        load_answerer("openai:127.0.0.1:8000", model="m")
    with pytest.raises(ModelLoadError, match="openai:"):
        load_answerer("http://127.0.0.1:8000/v1")
