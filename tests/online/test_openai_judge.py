"""openai-compatible against a fake server on 127.0.0.1: errors, slow and garbage answers, bounded retries and
concurrency, the reply cache, and an API key that never reaches a config, manifest, log or cache."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import ValidationError

from mmalign_core.protocols import Context
from mmalign_core.testing import check_judge, make_image_ref
from mmalign_core.types import GenerationRequest
from mmalign_online.config import OpenAICompatibleConfig
from mmalign_online.openai_judge import JudgeHTTPError, OpenAICompatibleJudge
from mmalign_online.verdict import Comparison

SECRET = "sk-test-SECRET-7f3a91"
OK_BODY = {"choices": [{"message": {"role": "assistant", "content": "Response 2 is better: it names only what is shown."}}]}


class FakeServer:
    """Chat-completions stub. The behaviour is chosen by a MODE:<name> word in the user text."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}
        self.bodies: list[dict] = []
        self.auth: list[str | None] = []
        self.peers: set[tuple] = set()  # client (host, port) pairs: one per TCP connection
        self.paths: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: a client may send many requests over one connection

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                text = next(p["text"] for p in body["messages"][-1]["content"] if p["type"] == "text") \
                    if isinstance(body["messages"][-1]["content"], list) else body["messages"][-1]["content"]
                mode = text.split("MODE:")[1].split()[0] if "MODE:" in text else "ok"
                with server.lock:
                    server.peers.add(self.client_address)
                    server.paths.append(self.path)
                    server.bodies.append(body)
                    server.auth.append(self.headers.get("Authorization"))
                    n = server.attempts[text] = server.attempts.get(text, 0) + 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                self._counted = True
                try:
                    self._answer(mode, n)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    self._leave()

            def _leave(self) -> None:
                # Leave the in-flight count before the reply goes out: once the client has the reply it may send
                # its next request, possibly before this handler thread gets to run again.
                if getattr(self, "_counted", False):
                    self._counted = False
                    with server.lock:
                        server.in_flight -= 1

            def _send(self, code: int, payload: bytes, headers: dict | None = None) -> None:
                self._leave()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def _answer(self, mode: str, n: int) -> None:
                ok = json.dumps(OK_BODY).encode()
                if mode == "flaky" and n <= 2:
                    return self._send(500 if n == 1 else 429, b'{"error": "busy"}', {"Retry-After": "0"})
                if mode == "slow" or (mode == "slowonce" and n == 1):
                    time.sleep(0.6)
                if mode in ("garbage",) or (mode == "garbageonce" and n == 1):
                    return self._send(200, b"<html>upstream error</html>")
                if mode == "nochoices":
                    return self._send(200, b'{"object": "chat.completion"}')
                if mode == "auth":
                    return self._send(401, b'{"error": "invalid key"}')
                if mode == "badrequest":
                    return self._send(400, b'{"error": "context too long"}')
                if mode == "hold":  # wait (bounded) for company, so overlap shows even on a loaded machine
                    deadline = time.monotonic() + 1.0
                    while server.in_flight < 3 and time.monotonic() < deadline:
                        time.sleep(0.01)
                    time.sleep(0.05)
                if mode == "echo":  # a server that leaks the key back
                    leak = {"choices": [{"message": {"content": f"Response 1 is better. (auth was {self.headers.get('Authorization')})"}}]}
                    return self._send(200, json.dumps(leak).encode())
                if mode == "echoerror":
                    return self._send(503, f"overloaded; you sent {self.headers.get('Authorization')}".encode())
                return self._send(200, ok)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    with FakeServer() as s:
        yield s


@pytest.fixture()
def lines() -> list[str]:
    return []


@pytest.fixture()
def jctx(tmp_path: Path, lines: list[str]) -> Context:
    return Context(output_dir=tmp_path / "out", cache_dir=tmp_path / "cache", log=lines.append)


def _judge(server: FakeServer, **kw) -> OpenAICompatibleJudge:
    cfg = dict(base_url=server.url, model="judge-model", api_key_env="MMALIGN_TEST_JUDGE_KEY", timeout_s=0.25,
               max_retries=3, backoff_s=0.01, backoff_max_s=0.05, max_concurrency=4)
    cfg.update(kw)
    return OpenAICompatibleJudge(OpenAICompatibleConfig(**cfg))


def _req(text: str) -> GenerationRequest:
    return GenerationRequest(prompt=text, images=[make_image_ref(0)])


@pytest.fixture(autouse=True)
def key(monkeypatch) -> None:
    monkeypatch.setenv("MMALIGN_TEST_JUDGE_KEY", SECRET)


def test_answers_and_sends_key_images_and_model(server, jctx) -> None:
    judge = _judge(server)
    assert judge.complete([_req("hello MODE:ok")], jctx) == [OK_BODY["choices"][0]["message"]["content"]]
    assert server.auth == [f"Bearer {SECRET}"]
    body = server.bodies[0]
    assert body["model"] == "judge-model" and body["temperature"] == 0.0
    image = body["messages"][-1]["content"][0]
    assert image["type"] == "image_url" and image["image_url"]["url"].startswith("data:image/png;base64,")


def test_errors_are_retried_a_bounded_number_of_times(server, jctx, lines) -> None:
    judge = _judge(server)
    t0 = time.perf_counter()
    replies = judge.complete([_req("a MODE:flaky"), _req("b MODE:slowonce"), _req("c MODE:garbageonce")], jctx)
    assert all(r.startswith("Response 2") for r in replies)
    assert server.attempts == {"a MODE:flaky": 3, "b MODE:slowonce": 2, "c MODE:garbageonce": 2}
    # Hopeless requests: exactly 1 + max_retries attempts each, then an empty reply (counted, logged).
    replies = judge.complete([_req("d MODE:slow"), _req("e MODE:garbage"), _req("f MODE:nochoices")], jctx)
    assert replies == ["", "", ""]
    assert [server.attempts[k] for k in ("d MODE:slow", "e MODE:garbage", "f MODE:nochoices")] == [4, 4, 4]
    assert judge.failures == 3 and judge.retries == 1 + 1 + 2 + 3 * 3
    assert len(lines) == 3 and all("after 4 attempts" in line for line in lines)
    assert time.perf_counter() - t0 < 10


def test_max_retries_zero_and_on_error_raise(server, jctx) -> None:
    judge = _judge(server, max_retries=0, on_error="raise")
    with pytest.raises(JudgeHTTPError, match="after 1 attempts"):
        judge.complete([_req("g MODE:garbage")], jctx)
    assert server.attempts["g MODE:garbage"] == 1


def test_authentication_errors_stop_at_once(server, jctx) -> None:
    judge = _judge(server)
    with pytest.raises(JudgeHTTPError, match="HTTP 401.*MMALIGN_TEST_JUDGE_KEY"):
        judge.complete([_req("h MODE:auth")], jctx)
    assert server.attempts["h MODE:auth"] == 1
    # A plain client error is not retried; with on_error=empty it becomes an empty reply.
    with pytest.raises(JudgeHTTPError, match="HTTP 400"):
        judge.complete([_req("i MODE:badrequest")], jctx)
    assert server.attempts["i MODE:badrequest"] == 1


def test_unreachable_server_is_retried_then_empty(jctx) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    judge = OpenAICompatibleJudge(OpenAICompatibleConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", timeout_s=0.2,
                                                         max_retries=2, backoff_s=0.01, backoff_max_s=0.02))
    assert judge.complete([_req("x")], jctx) == [""]
    assert judge.failures == 1 and judge.retries == 2


def test_concurrency_is_bounded(server, jctx) -> None:
    judge = _judge(server, max_concurrency=3, timeout_s=2.0)
    replies = judge.complete([_req(f"{i} MODE:hold") for i in range(12)], jctx)
    assert all(replies)
    assert 2 <= server.max_in_flight <= 3


def test_replies_are_cached_by_request_and_failures_are_not(server, jctx) -> None:
    judge = _judge(server)
    reqs = [_req("j MODE:ok"), _req("k MODE:garbage")]
    first = judge.complete(reqs, jctx)
    assert first[0] and first[1] == ""
    again = _judge(server)  # a new instance (a rerun) reads the cache from disk
    assert again.complete(reqs, jctx) == first
    assert server.attempts["j MODE:ok"] == 1 and server.attempts["k MODE:garbage"] == 8
    assert again.cache_hits == 1
    # The same text with another image, or another judge model, is another request.
    other = GenerationRequest(prompt="j MODE:ok", images=[make_image_ref(1)])
    again.complete([other], jctx)
    _judge(server, model="other-model").complete([reqs[0]], jctx)
    assert server.attempts["j MODE:ok"] == 3
    files = list((jctx.cache_dir / "judge-cache").glob("openai-*.jsonl"))
    assert len(files) == 2


def test_the_key_never_reaches_config_describe_cache_or_logs(server, jctx, lines, tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        OpenAICompatibleConfig(base_url=server.url, model="m", api_key=SECRET)
    with pytest.raises(ValidationError, match=r"\*name\* of an environment variable"):
        OpenAICompatibleConfig(base_url=server.url, model="m", api_key_env=SECRET)
    with pytest.raises(ValidationError, match="without credentials"):
        OpenAICompatibleConfig(base_url=f"http://user:{SECRET}@127.0.0.1:1/v1", model="m")
    judge = _judge(server, max_retries=1)
    replies = judge.complete([_req("l MODE:echo"), _req("m MODE:echoerror")], jctx)
    assert SECRET not in replies[0] and "***" in replies[0]
    assert replies[1] == ""
    assert server.auth and all(a == f"Bearer {SECRET}" for a in server.auth)  # it was sent
    texts = [json.dumps(judge.describe()), json.dumps(judge.config.model_dump(mode="json")), *lines]
    texts += [p.read_text() for p in (jctx.cache_dir / "judge-cache").glob("*.jsonl")]
    assert texts and not any(SECRET in t for t in texts)
    assert any("***" in line for line in lines)  # the server's error echo was scrubbed


def test_online_dpo_with_the_http_judge_logs_no_key(server, jctx) -> None:
    from online_helpers import PlannedPolicy

    from mmalign_online.config import OnlineDPOConfig
    from mmalign_online.source import OnlineDPOSource

    cfg = OnlineDPOConfig.model_validate({
        "prompts": {"name": "shapes-pairs", "config": {"n_pairs": 6}},
        "judge": {"name": "openai-compatible", "config": {"base_url": server.url, "model": "j", "api_key_env": "MMALIGN_TEST_JUDGE_KEY",
                                                          "backoff_s": 0.01, "timeout_s": 1.0}},
        "max_new_tokens": 8,
    })
    src = OnlineDPOSource(cfg)
    jctx.output_dir.mkdir(parents=True, exist_ok=True)
    pool = list(src.pairs(jctx))
    out, stats = src.prepare_batch(pool, PlannedPolicy({pool[0].prompt: ["a MODE:echo", "b"]}), jctx, 0)
    assert stats["kept"] == 6 and stats["judge_failures"] == 0
    for path in (jctx.output_dir / "online").glob("*.json*"):
        assert SECRET not in path.read_text(), path


def test_compare_and_contract(server, jctx) -> None:
    judge = _judge(server)
    [v] = judge.compare([Comparison(_req("Describe."), ["a red circle.", "a blue square."])], jctx)
    assert (v.best, v.worst, v.status) == (1, 0, "ok")
    from mmalign_core.manager import get_plugins

    entry = get_plugins().resolve("judge", "openai-compatible")
    check_judge(entry, {"base_url": server.url, "model": "m", "api_key_env": "MMALIGN_TEST_JUDGE_KEY", "timeout_s": 1.0},
                requests=[_req("n MODE:ok")], ctx=jctx)


def test_connections_are_kept_alive(server, jctx) -> None:
    judge = _judge(server, max_concurrency=1, timeout_s=2.0)
    for i in range(5):  # separate calls, one request each: the same pooled connection serves them all
        assert judge.complete([_req(f"{i} MODE:ok")], jctx)[0].startswith("Response 2")
    assert len(server.bodies) == 5 and len(server.peers) == 1
    judge.close()


def test_proxies_come_from_the_environment(server, jctx, monkeypatch) -> None:
    root = server.url.rsplit("/v1", 1)[0]
    monkeypatch.setenv("HTTP_PROXY", root)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    judge = _judge(server, base_url="http://judge.invalid/v1", timeout_s=2.0)
    assert judge.complete([_req("p MODE:ok")], jctx)[0].startswith("Response 2")
    assert server.paths == ["http://judge.invalid/v1/chat/completions"]  # the proxy got the absolute URL


def test_a_refused_key_is_a_clear_error_without_the_key(server, jctx, monkeypatch) -> None:
    from mmalign_core.errors import MmalignError

    judge = _judge(server)
    with pytest.raises(MmalignError) as caught:
        judge.complete([_req("q MODE:auth")], jctx)
    text = str(caught.value)
    assert "HTTP 401" in text and "$MMALIGN_TEST_JUDGE_KEY was refused" in text and SECRET not in text
    assert caught.value.exit_code == 1  # an MmalignError: the CLI prints "mmalign: error: ..." and exits 1, no traceback
    monkeypatch.delenv("MMALIGN_TEST_JUDGE_KEY")
    with pytest.raises(JudgeHTTPError, match=r"\$MMALIGN_TEST_JUDGE_KEY is not set: export MMALIGN_TEST_JUDGE_KEY="):
        _judge(server).complete([_req("r MODE:auth")], jctx)
