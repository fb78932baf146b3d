"""The OpenAI-compatible generator against a small chat-completions server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from curation.importers import ImportOptions, import_jsonl
from curation.store import find_image, open_store
from curation.views import image_captions
from scorer.generation import (
    GenerationSettings,
    GeneratorError,
    GeneratorUnavailableError,
    OpenAICompatibleGenerator,
    generate_hard_negatives,
)
from scorer.generation.cli import main as generate_main

MODEL = "qwen-vl-test"


class ChatServer(ThreadingHTTPServer):
    """Speaks ``POST /v1/chat/completions``; ``failures`` queues error statuses to answer first."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ChatHandler)
        self.requests: list[dict] = []
        self.failures: list[int] = []
        self.max_choices = 16
        self.answer = None  # callable(body) -> str, or None for "caption <k>"
        self.counter = 0
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        with server.lock:
            server.requests.append({"path": self.path, "body": body,  # header names: any case on the wire
                                    "headers": {k.title(): v for k, v in self.headers.items()}})
            failure = server.failures.pop(0) if server.failures else None
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        if failure is not None:
            return self._send(failure, {"error": {"message": "try later" if failure >= 429 else "bad key"}})
        choices = []
        for index in range(min(body.get("n", 1), server.max_choices)):
            with server.lock:
                server.counter += 1
                text = server.answer(body) if server.answer else f"caption {server.counter}"
            choices.append({"index": index, "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop"})
        self._send(200, {"id": "x", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                         "choices": choices, "usage": {"prompt_tokens": 1, "completion_tokens": 1}})


@pytest.fixture
def server():
    chat = ChatServer()
    thread = threading.Thread(target=chat.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield chat
    chat.shutdown()
    chat.server_close()


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, size in enumerate([(60, 40), (32, 48)]):
        Image.new("RGB", size, (200, 40 * i, 10)).save(folder / f"{i}.png")
    return folder


def quick(base_url: str, **kwargs) -> OpenAICompatibleGenerator:
    options = dict(api_key="sk-test", timeout=2.0, retries=2) | kwargs
    return OpenAICompatibleGenerator(base_url, MODEL, **options)


def test_captions_come_back_and_requests_follow_the_protocol(server, images):
    paths = sorted(str(p) for p in images.iterdir())
    with quick(server.base_url, settings=GenerationSettings(max_new_tokens=40, temperature=0.7)) as generator:
        captions = generator.generate_captions(paths, n=3, language="zh")
    assert [len(texts) for texts in captions] == [3, 3]
    assert len({text for texts in captions for text in texts}) == 6
    assert len(server.requests) == 2
    for request, path in zip(server.requests, paths):
        assert request["path"] == "/v1/chat/completions"
        assert request["headers"]["Authorization"] == "Bearer sk-test"
        body = request["body"]
        assert body["model"] == MODEL and body["n"] == 3 and body["max_tokens"] == 40 and body["temperature"] == 0.7
        image_part, text_part = body["messages"][0]["content"]
        prefix = "data:image/png;base64,"
        assert image_part["type"] == "image_url" and image_part["image_url"]["url"].startswith(prefix)
        sent = Image.open(io.BytesIO(base64.b64decode(image_part["image_url"]["url"][len(prefix):])))
        assert sent.size == Image.open(path).size
        assert "遥感图像" in text_part["text"]


def test_a_server_that_ignores_n_is_asked_again(server, images):
    server.max_choices = 1  # as Ollama does
    captions = quick(server.base_url).generate_captions([str(images / "0.png")], n=3)
    assert len(captions[0]) == 3 and len(server.requests) == 3


def test_busy_server_is_retried_with_back_off(server, images):
    server.failures = [503, 429]
    captions = quick(server.base_url).generate_captions([str(images / "0.png")], n=1)
    assert len(captions[0]) == 1 and len(server.requests) == 3


def test_server_that_stays_down_or_refuses_fails_clearly(server, images):
    server.failures = [500] * 3
    with pytest.raises(GeneratorUnavailableError, match=r"127\.0\.0\.1.*3 attempts.*HTTP 500"):
        quick(server.base_url).generate_captions([str(images / "0.png")], n=1)
    server.failures = [401]
    with pytest.raises(GeneratorError, match="HTTP 401") as info:
        quick(server.base_url).generate_captions([str(images / "0.png")], n=1)
    assert not isinstance(info.value, GeneratorUnavailableError) and len(server.requests) == 4  # no retry


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_unreachable_endpoint_names_the_url(images):
    url = closed_port_url()
    with pytest.raises(GeneratorUnavailableError, match=rf"{url}/chat/completions is unavailable after 2 attempts"):
        quick(url, retries=1).generate_captions([str(images / "0.png")], n=1)


def test_hard_negatives_from_the_endpoint_are_validated_then_topped_up(server):
    source = "Two red cars are parked left of a white house."
    proposals = [{"caption": "Three blue cars are parked left of a white house.", "edits": ["count", "colour"]},
                 {"caption": source, "edits": ["count"]},
                 {"caption": "A lake.", "edits": ["object"]}]
    server.answer = lambda body: "```json\n" + json.dumps(proposals) + "\n```"
    negatives = generate_hard_negatives(source, 3, generator=quick(server.base_url))
    assert negatives[0].text == proposals[0]["caption"] and negatives[0].method == f"llm:openai:{MODEL}"
    assert [n.method for n in negatives[1:]] == ["rule", "rule"]
    assert len({n.text for n in negatives} | {source}) == 4
    assert source in server.requests[0]["body"]["messages"][0]["content"]


def test_cli_writes_jsonl_the_store_imports(server, images, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    out = tmp_path / "candidates.jsonl"
    argv = ["--generator", "openai", "--openai-model", MODEL, "--images", str(images), "--image-root", str(tmp_path),
            "--n", "2", "--output", str(out)]
    assert generate_main(argv) == 0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [line["image"] for line in lines] == ["imgs/0.png"] * 2 + ["imgs/1.png"] * 2
    assert {(line["source"], line["generator"]) for line in lines} == {(f"model:{MODEL}", f"openai:{MODEL}")}
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-env"

    conn = open_store(tmp_path / "store.db")
    report = import_jsonl(conn, out, ImportOptions(image_root=tmp_path, check_files=True))
    assert report.captions_added == 4 and not report.skipped
    stored = image_captions(conn, find_image(conn, "imgs/1.png"))
    assert [(c.text, c.source, c.author) for c in stored] == [
        (line["caption"], f"model:{MODEL}", f"openai:{MODEL}") for line in lines[2:]]


def test_cli_reports_an_unreachable_endpoint(images, tmp_path, capsys):
    url = closed_port_url()
    argv = ["--generator", "openai", "--openai-base-url", url, "--openai-model", MODEL, "--images", str(images),
            "--output", str(tmp_path / "c.jsonl"), "--retries", "0", "--timeout", "2"]
    assert generate_main(argv) == 1
    assert f"{url}/chat/completions is unavailable" in capsys.readouterr().err
    assert not (tmp_path / "c.jsonl").exists()  # nothing half-written to trip up a rerun
