"""``openai-compatible``: a judge behind any OpenAI-compatible chat-completions endpoint, over httpx.

- HTTP with one ``httpx.Client`` per judge: connections are kept alive and
  pooled (at most ``max_concurrency``), proxies come from the environment
  (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``), and every request has a
  timeout. Failures that can pass (timeouts, connection errors, HTTP
  408/409/425/429/5xx, a reply that is not the expected JSON) are retried at
  most ``max_retries`` times with exponential backoff (and the server's
  ``Retry-After``, capped); 401/403/404 stop at once with an error that says
  what to fix (a :class:`~mmalign_core.errors.MmalignError`, so the CLI prints
  it without a traceback).
- At most ``max_concurrency`` requests are in flight (a thread pool sharing the client).
- Every reply is cached on disk, one JSON line per request in
  ``<cache>/judge-cache/openai-<identity hash>.jsonl``, keyed by the SHA-256
  of the judge identity and the request (messages, with images by their key),
  and appended as soon as it arrives, so a rerun asks only what is missing.
- The API key is read from the environment variable ``api_key_env`` at call
  time and only ever placed in the ``Authorization`` header. It is not part of
  the config, ``describe()``, the cache or any log line; server text that is
  logged or raised is scrubbed of it.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional, Sequence

from mmalign_core.errors import MmalignError
from mmalign_core.protocols import Context
from mmalign_core.types import GenerationRequest

from .config import OpenAICompatibleConfig
from .verdict import Comparison, Verdict, pairwise_request, verdict_from_text

RETRY_STATUS = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))
CACHE_FOLDER = "judge-cache"


class JudgeHTTPError(MmalignError, RuntimeError):
    """A judge request failed for good (after retries, or at once for authentication/not-found errors).

    An :class:`~mmalign_core.errors.MmalignError`: the CLI prints the message (which names the endpoint and
    the fix, never the key) instead of a traceback, and exits with 1 (the spec was valid; the endpoint refused).
    """

    exit_code = 1


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: Optional[float] = None):
        super().__init__(message)
        self.retry_after = retry_after


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


class OpenAICompatibleJudge:
    """Component ``openai-compatible`` (see the module docstring).

    Attributes:
        requests_sent: HTTP attempts made (retries included).
        retries: attempts that were retries.
        failures: requests that failed for good (empty replies with ``on_error="empty"``).
        cache_hits: replies served from the cache.
    """

    max_answers: Optional[int] = 2

    def __init__(self, config: OpenAICompatibleConfig):
        self.config = config
        self.requests_sent = 0
        self.retries = 0
        self.failures = 0
        self.cache_hits = 0
        self._lock = threading.Lock()
        self._cache: Optional[dict[str, str]] = None
        self._cache_path: Optional[Path] = None
        self._identity = _canonical(self.describe())
        self._client: Any = None

    def _http(self) -> Any:
        """The judge's ``httpx.Client`` (made on first use; closed when the judge is garbage-collected)."""
        with self._lock:
            if self._client is None:
                import httpx

                n = self.config.max_concurrency
                self._client = httpx.Client(
                    timeout=httpx.Timeout(self.config.timeout_s),
                    limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
                    trust_env=True,  # proxies and CA bundles from the environment, as curl and requests do
                    headers={"Accept": "application/json"},
                )
                weakref.finalize(self, self._client.close)
            return self._client

    def close(self) -> None:
        """Close the HTTP connections now (they are closed with the judge otherwise)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # ---------------------------------------------------------------- identity
    def describe(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "judge": "openai-compatible",
            "base_url": cfg.base_url,
            "model": cfg.model,
            "temperature": cfg.temperature,
            "max_tokens": cfg.max_tokens,
            "send_images": cfg.send_images,
            "system_prompt_sha256": hashlib.sha256((cfg.system_prompt or "").encode()).hexdigest()[:16],
            "extra_body_sha256": hashlib.sha256(_canonical(cfg.extra_body).encode()).hexdigest()[:16],
        }

    def _key(self) -> Optional[str]:
        name = self.config.api_key_env
        value = os.environ.get(name) if name else None
        return value or None

    def _scrub(self, text: str) -> str:
        key = self._key()
        return text.replace(key, "***") if key else text

    # ------------------------------------------------------------------- cache
    def _cache_file(self, ctx: Context) -> Path:
        root = Path(self.config.cache_dir) if self.config.cache_dir else Path(ctx.cache_dir)
        digest = hashlib.sha256(self._identity.encode()).hexdigest()[:16]
        return root / CACHE_FOLDER / f"openai-{digest}.jsonl"

    def _load_cache(self, ctx: Context) -> dict[str, str]:
        path = self._cache_file(ctx)
        if self._cache is not None and self._cache_path == path:
            return self._cache
        cache: dict[str, str] = {}
        if path.is_file():
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        row = json.loads(line)
                        cache[row["key"]] = row["reply"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a torn last line
        self._cache, self._cache_path = cache, path
        return cache

    def _store(self, key: str, reply: str) -> None:
        assert self._cache_path is not None and self._cache is not None
        line = (json.dumps({"key": key, "reply": reply}, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            self._cache[key] = reply
            self._cache_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._cache_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    # ---------------------------------------------------------------- requests
    def _messages(self, request: GenerationRequest, *, with_pixels: bool) -> list[dict[str, Any]]:
        cfg = self.config
        messages: list[dict[str, Any]] = []
        if cfg.system_prompt:
            messages.append({"role": "system", "content": cfg.system_prompt})
        content: list[dict[str, Any]] = []
        if cfg.send_images:
            for image in request.images:
                url = _data_url(image.load()) if with_pixels else f"image-key:{image.key}"
                content.append({"type": "image_url", "image_url": {"url": url}})
        content.append({"type": "text", "text": request.prompt})
        messages.append({"role": "user", "content": content})
        if request.answer_prefix:
            messages.append({"role": "assistant", "content": request.answer_prefix})
        return messages

    def request_key(self, request: GenerationRequest) -> str:
        """Cache key: identity + messages, images by key (never pixels, never the API key)."""
        payload = {"judge": self._identity, "messages": self._messages(request, with_pixels=False)}
        return hashlib.sha256(_canonical(payload).encode()).hexdigest()

    def _refusal(self, status: int, detail: str) -> JudgeHTTPError:
        """The error for a status that no retry can fix, saying what to check."""
        cfg = self.config
        where = f"judge endpoint {cfg.base_url}/chat/completions answered HTTP {status}"
        if status in (401, 403):
            if not cfg.api_key_env:
                fix = "it wants an API key: set api_key_env to the name of an environment variable that holds one"
            elif self._key() is None:
                fix = f"it wants an API key, but ${cfg.api_key_env} is not set: export {cfg.api_key_env}=<your key>"
            else:
                fix = f"the key in ${cfg.api_key_env} was refused: check that it is valid for this endpoint and model {cfg.model!r}"
        elif status == 404:
            fix = f"check base_url (it should end where /chat/completions starts, e.g. .../v1) and model {cfg.model!r}"
        else:
            fix = "the request itself was refused; see the server's message"
        return JudgeHTTPError(f"{where}: {fix}. Server said: {detail or '(nothing)'}")

    def _post(self, body: bytes) -> str:
        import httpx

        cfg = self.config
        headers = {"Content-Type": "application/json"}
        key = self._key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        with self._lock:
            self.requests_sent += 1
        try:
            resp = self._http().post(cfg.base_url + "/chat/completions", content=body, headers=headers)
            raw = resp.content
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timed out after {cfg.timeout_s}s ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise _Retryable(f"connection failed: {type(exc).__name__}: {self._scrub(str(exc))}") from None
        if resp.status_code >= 400:
            detail = self._scrub(raw[:300].decode("utf-8", "replace"))
            if resp.status_code in RETRY_STATUS:
                raise _Retryable(f"HTTP {resp.status_code}: {detail}", _retry_after(resp.headers.get("Retry-After")))
            raise self._refusal(resp.status_code, detail)
        try:
            data = json.loads(raw.decode("utf-8"))
            content = data["choices"][0]["message"]["content"]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise _Retryable(f"unreadable reply ({type(exc).__name__}): {self._scrub(raw[:120].decode('utf-8', 'replace'))!r}") from None
        if isinstance(content, list):  # some servers return content parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        if not isinstance(content, str):
            raise _Retryable(f"unreadable reply: message content is {type(content).__name__}")
        return content

    def _ask(self, request: GenerationRequest, ctx: Context) -> str:
        cfg = self.config
        body_obj = {"model": cfg.model, "messages": self._messages(request, with_pixels=True), "temperature": cfg.temperature,
                    "max_tokens": cfg.max_tokens, **cfg.extra_body}
        body = json.dumps(body_obj).encode("utf-8")
        last = ""
        for attempt in range(cfg.max_retries + 1):
            if attempt:
                with self._lock:
                    self.retries += 1
            try:
                return self._scrub(self._post(body))
            except _Retryable as exc:
                last = str(exc)
                if attempt == cfg.max_retries:
                    break
                delay = min(cfg.backoff_max_s, cfg.backoff_s * (2 ** attempt)) * (1 + 0.1 * random.random())
                if exc.retry_after is not None:
                    delay = min(cfg.backoff_max_s, max(delay, exc.retry_after))
                time.sleep(delay)
        with self._lock:
            self.failures += 1
        message = f"openai-compatible judge: request failed after {cfg.max_retries + 1} attempts: {last}"
        if cfg.on_error == "raise":
            raise JudgeHTTPError(message)
        ctx.log(message)
        return ""

    def complete(self, requests: Sequence[GenerationRequest], ctx: Context) -> list[str]:
        cache = self._load_cache(ctx) if self.config.cache else {}
        keys = [self.request_key(r) for r in requests]
        replies: list[Optional[str]] = [cache.get(k) for k in keys]
        todo = [i for i, r in enumerate(replies) if r is None]
        self.cache_hits += len(requests) - len(todo)

        def work(i: int) -> None:
            reply = self._ask(requests[i], ctx)
            replies[i] = reply
            if reply and self.config.cache:
                self._store(keys[i], reply)

        if todo:
            with ThreadPoolExecutor(max_workers=min(self.config.max_concurrency, len(todo))) as pool:
                for future in [pool.submit(work, i) for i in todo]:
                    future.result()  # re-raises a fatal error
        return [r or "" for r in replies]

    def compare(self, items: Sequence[Comparison], ctx: Context, *, policy: Any = None) -> list[Verdict]:
        cfg = self.config
        if any(len(c.answers) != 2 for c in items):
            raise ValueError("openai-compatible compares exactly two answers")
        reqs = [pairwise_request(c.request, c.answers[0], c.answers[1], instructions=cfg.instructions, template=cfg.template) for c in items]
        return [verdict_from_text(r) for r in self.complete(reqs, ctx)]


def _retry_after(value: Optional[str]) -> Optional[float]:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _data_url(image: Any) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def make_openai_judge(config: OpenAICompatibleConfig) -> OpenAICompatibleJudge:
    """Factory of ``openai-compatible``."""
    return OpenAICompatibleJudge(config)


__all__ = ["JudgeHTTPError", "OpenAICompatibleJudge", "make_openai_judge"]
