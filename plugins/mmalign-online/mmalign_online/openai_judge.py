"""``openai-compatible``: a judge behind any OpenAI-compatible chat-completions endpoint (standard library only).

- HTTP with ``urllib``; each request has a timeout; failures that can pass
  (timeouts, connection errors, HTTP 408/409/425/429/5xx, a reply that is not
  the expected JSON) are retried at most ``max_retries`` times with exponential
  backoff (and the server's ``Retry-After``, capped); 401/403/404 stop at once.
- At most ``max_concurrency`` requests are in flight (a thread pool).
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
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional, Sequence

from mmalign_core.protocols import Context
from mmalign_core.types import GenerationRequest

from .config import OpenAICompatibleConfig
from .verdict import Comparison, Verdict, pairwise_request, verdict_from_text

RETRY_STATUS = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))
FATAL_STATUS = frozenset({401, 403, 404})
CACHE_FOLDER = "judge-cache"


class JudgeHTTPError(RuntimeError):
    """A judge request failed for good (after retries, or at once for authentication/not-found errors)."""


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

    def _post(self, body: bytes) -> str:
        cfg = self.config
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = self._key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(cfg.base_url + "/chat/completions", data=body, headers=headers, method="POST")
        with self._lock:
            self.requests_sent += 1
        try:
            with urllib.request.urlopen(req, timeout=cfg.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = self._scrub(exc.read(300).decode("utf-8", "replace")) if exc.fp else ""
            if exc.code in FATAL_STATUS:
                raise JudgeHTTPError(f"judge endpoint answered HTTP {exc.code} ({'check the API key in $' + str(cfg.api_key_env) if exc.code in (401, 403) else 'check base_url and model'}): {detail}") from None
            retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            if exc.code in RETRY_STATUS:
                raise _Retryable(f"HTTP {exc.code}: {detail}", retry_after) from None
            raise JudgeHTTPError(f"judge endpoint answered HTTP {exc.code}: {detail}") from None
        except (socket.timeout, TimeoutError) as exc:
            raise _Retryable(f"timed out after {cfg.timeout_s}s ({type(exc).__name__})") from None
        except urllib.error.URLError as exc:
            raise _Retryable(f"connection failed: {exc.reason}") from None
        except (ConnectionError, OSError) as exc:
            raise _Retryable(f"connection failed: {type(exc).__name__}: {exc}") from None
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
