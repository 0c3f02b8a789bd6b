"""Rendering untrusted chat templates (per-request `template`, alias templates) with bounded time and memory.

Jinja's sandbox stops templates from reaching Python internals, but not from looping or allocating without end,
and a render cannot be interrupted inside a thread. So untrusted templates render in small worker processes
(app.engine.template_worker) with an address-space limit; a render that passes its deadline, or whose request is
cancelled, kills its worker. A model's own template is trusted and renders in-process as before.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from app.errors import InvalidRequest
from app.settings import Settings

log = logging.getLogger(__name__)

# Start-up imports jinja2 and transformers' template helpers (about a second, more on a busy machine); it is not
# counted against a render's deadline.
_START_TIMEOUT = 60.0
_POLL = 0.05
# A template adds headers and instructions around what it is given; one that renders far more than its input is
# an amplifier (`{{ 'ab ' * 333333 }}`: 90 bytes in, 1 MB of prompt out).
_GROWTH = 4
_SLACK_CHARS = 64 * 1024


_SHARED: dict[tuple[float, int, int], TemplateSandbox] = {}
_SHARED_LOCK = threading.Lock()


class RenderCancelled(Exception):
    """The request that asked for the render went away; its worker was stopped."""


@dataclass
class RenderGuard:
    """How one request renders untrusted templates: through `sandbox`, stopping when `cancel` is set."""

    sandbox: TemplateSandbox
    cancel: threading.Event = field(default_factory=threading.Event)


class _Worker:
    def __init__(self, memory_bytes: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.engine.template_worker", str(memory_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "TRANSFORMERS_VERBOSITY": "error", "PYTHONUNBUFFERED": "1"},
        )
        self._buf = b""

    def read_line(self, deadline: float, cancel: threading.Event | None) -> bytes | None:
        """The next line, or None at the deadline or on cancel (the caller kills the worker)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            if cancel is not None and cancel.is_set():
                raise RenderCancelled()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], min(left, _POLL))
            if ready:
                data = os.read(fd, 1 << 20)
                if not data:
                    raise EOFError("the template worker exited")
                self._buf += data
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            return
        # Freeing a large address space can take a while: reap it in the background, not in the request.
        threading.Thread(target=self.proc.wait, name="template-reap", daemon=True).start()


class TemplateSandbox:
    """A few reusable worker processes; each render takes one, and a misbehaving render costs its worker."""

    def __init__(self, *, timeout: float, memory_bytes: int, max_chars: int, workers: int = 2) -> None:
        self.timeout = timeout
        self.memory_bytes = memory_bytes
        self.max_chars = max_chars
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(workers)
        self._size = workers
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> TemplateSandbox:
        """The process's sandbox for these settings: the engine and the alias check share its workers."""
        key = (settings.template_timeout_seconds, settings.template_memory_bytes, settings.max_prompt_chars)
        with _SHARED_LOCK:
            box = _SHARED.get(key)
            if box is None or box._closed:
                box = _SHARED[key] = cls(timeout=key[0], memory_bytes=key[1], max_chars=key[2])
            return box

    def prewarm(self) -> None:
        """Start one worker ahead of the first render (call from a thread: it waits for the worker's imports)."""
        with self._slots:
            worker = self._take()
            self._give(worker)

    def render(
        self,
        template: str,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None,
        kwargs: dict[str, Any],
        add_generation_prompt: bool,
        continue_final_message: bool,
        cancel: threading.Event | None = None,
        param: str = "template",
    ) -> str:
        """The rendered text; InvalidRequest (naming `param`) for an error, a timeout or oversized output."""
        given = sum(len(str(m.get("content") or "")) for m in messages) + len(json.dumps(tools or [], default=str))
        max_chars = min(self.max_chars, _GROWTH * given + _SLACK_CHARS)
        payload = json.dumps(
            {
                "template": template,
                "messages": messages,
                "tools": tools,
                "kwargs": kwargs,
                "add_generation_prompt": add_generation_prompt,
                "continue_final_message": continue_final_message,
                "max_chars": max_chars,
            },
            ensure_ascii=False,
            default=str,
        ).encode()
        while not self._slots.acquire(timeout=_POLL):
            if cancel is not None and cancel.is_set():
                raise RenderCancelled()
        try:
            worker = self._take()
            try:
                assert worker.proc.stdin is not None
                worker.proc.stdin.write(payload + b"\n")
                worker.proc.stdin.flush()
                line = worker.read_line(time.monotonic() + self.timeout, cancel)
            except BaseException:
                worker.kill()
                self._replace()
                raise
            if line is None:
                worker.kill()
                self._replace()
                raise InvalidRequest(
                    f"the template took longer than {self.timeout:g} s to render (HUGLLAMA_TEMPLATE_TIMEOUT_SECONDS)",
                    param=param,
                )
            self._give(worker)
        except (OSError, EOFError) as exc:
            # The worker died (killed by the memory limit, or it could not start).
            raise InvalidRequest(f"the template could not be rendered: {exc}", param=param) from exc
        finally:
            self._slots.release()
        answer = json.loads(line)
        if "error" in answer:
            raise InvalidRequest(f"could not render the template: {answer['error']}", param=param)
        return str(answer["text"])

    def _replace(self) -> None:
        """Start a worker in the background for the one just killed, so the next render does not wait for it."""
        threading.Thread(target=self._spare, name="template-spare", daemon=True).start()

    def _spare(self) -> None:
        try:
            with self._lock:
                if self._closed or len(self._idle) >= self._size:
                    return
            self._give(self._take())
        except Exception as exc:  # the next render starts one itself
            log.debug("could not start a spare template worker: %s", exc)

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.proc.poll() is None:
                    return worker
        worker = _Worker(self.memory_bytes)
        try:
            line = worker.read_line(time.monotonic() + _START_TIMEOUT, None)
        except BaseException:
            worker.kill()
            raise
        if line is None or b"ready" not in line:
            worker.kill()
            raise EOFError("the template worker did not start")
        return worker

    def _give(self, worker: _Worker) -> None:
        with self._lock:
            if self._closed:
                worker.kill()
            else:
                self._idle.append(worker)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            if worker.proc.stdin is not None:
                try:
                    worker.proc.stdin.close()
                except OSError:
                    pass
            worker.kill()


# What an alias template is rendered with before it is saved: a short chat and placeholder special tokens (the
# template may be used over any model).
_SAMPLE_CHAT = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hello"}]
_SAMPLE_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}


class AliasTemplateCheck:
    """Refuses an alias template that is too large, fails, times out or renders an empty prompt, at creation."""

    def __init__(self, sandbox: TemplateSandbox, max_bytes: int) -> None:
        self.sandbox = sandbox
        self.max_bytes = max_bytes

    def __call__(self, template: str) -> None:
        size = len(template.encode("utf-8", "surrogatepass"))
        if size > self.max_bytes:
            raise InvalidRequest(
                f"the template is too large: {size} bytes > {self.max_bytes} (HUGLLAMA_MAX_TEMPLATE_BYTES)",
                param="template",
            )
        text = self.sandbox.render(
            template,
            _SAMPLE_CHAT,
            tools=None,
            kwargs=dict(_SAMPLE_TOKENS),
            add_generation_prompt=True,
            continue_final_message=False,
        )
        if not text.strip():
            raise InvalidRequest("the template renders an empty prompt", param="template")
