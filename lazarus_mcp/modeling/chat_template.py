"""Rendering a checkpoint's chat template with bounded time, memory and output.

A chat template is code from the checkpoint. transformers renders it in Jinja's sandbox, which
blocks attribute escapes but not ``{{ 'a' * 3000000000 }}`` (it killed the server) or nested
``range(100000)`` loops (they hung the MLX worker, and every later call with it). Neither can be
stopped from inside the thread that runs it, so the template is rendered in a forked child: the
child inherits the loaded tokenizer (nothing is reloaded; a fork costs a few ms), renders with
transformers' own ``apply_chat_template`` (the text is exactly what the model would see), has its
address space capped (Linux), and is killed at the deadline. The parent reads at most the output
cap. Where ``fork`` is missing the template renders in-process and only its output is checked.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import sys
import time
from typing import Any

from lazarus_mcp.errors import InvalidRequestError
from lazarus_mcp.runtime.limits import Limits, current, interrupt

_RAW_HINT = "analyze the prompt raw instead"


def _render(tokenizer: Any, prompt: str) -> str:
    return str(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
    )


def _failure(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return f"the model's chat template needs more memory than allowed; {_RAW_HINT}"
    detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return f"the model's chat template failed ({detail}); {_RAW_HINT}"


def _vm_bytes() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _detach(keep: int, seconds: float) -> None:
    """Make the child harmless whatever happens to its parent: it holds none of the parent's
    descriptors (a client waiting for EOF on the server's pipes must get it when the server
    exits), dies with the parent (Linux), and the kernel stops it past its CPU time."""
    import resource

    null = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):
        os.dup2(null, std)
    top = min(int(os.sysconf("SC_OPEN_MAX")), 65536)
    os.closerange(3, keep)
    os.closerange(keep + 1, top)
    cpu = math.ceil(seconds) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _child(tokenizer: Any, prompt: str, limits: Limits, fd: int, seconds: float) -> None:
    try:
        import resource

        _detach(fd, seconds)
        vm = _vm_bytes()
        if vm is not None:
            cap = vm + limits.template_memory
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        text = _render(tokenizer, prompt)
        if len(text) > limits.max_template_output:
            payload = (
                b"E"
                + (
                    f"the model's chat template produced more than {limits.max_template_output:,} "
                    f"characters; {_RAW_HINT}"
                ).encode()
            )
        else:
            payload = b"T" + text.encode("utf-8", "surrogatepass")
    except BaseException as exc:
        payload = b"E" + _failure(exc).encode("utf-8", "replace")
    view = memoryview(payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os._exit(0)  # no flush of the parent's copied stdio buffers, no atexit handlers


def _read_until(fd: int, pid: int, seconds: float, cap: int) -> bytes | None:
    """The child's whole payload, or None past the deadline (the child is then killed)."""
    chunks: list[bytes] = []
    size = 0
    end = time.monotonic() + seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], min(left, 0.1))
        if not ready:
            job = interrupt()
            if job is not None and job.cancelled.is_set():
                return None
            continue
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > cap:
            return (
                b"E" + b"the model's chat template produced too much output; " + _RAW_HINT.encode()
            )
        chunks.append(chunk)


def render_chat(tokenizer: Any, prompt: str, limits: Limits | None = None) -> str:
    """The chat template applied to one user message plus the assistant turn's opening."""
    limits = limits or current()
    template = getattr(tokenizer, "chat_template", None) or ""
    if len(str(template)) > limits.max_template_bytes:
        raise InvalidRequestError(f"the model's chat template is too large; {_RAW_HINT}")
    if not hasattr(os, "fork"):
        try:
            text = _render(tokenizer, prompt)
        except Exception as exc:
            raise InvalidRequestError(_failure(exc)) from exc
        if len(text) > limits.max_template_output:
            raise InvalidRequestError(f"the chat template's output is too long; {_RAW_HINT}")
        return text
    job = interrupt()
    seconds = limits.template_timeout
    remaining = job.remaining() if job is not None else None
    if remaining is not None:
        seconds = min(seconds, remaining)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child leaves through os._exit)
        os.close(read_fd)
        _child(tokenizer, prompt, limits, write_fd, seconds)
    os.close(write_fd)
    try:
        cap = 4 * limits.max_template_output + 1024
        payload = _read_until(read_fd, pid, seconds, cap)
    finally:
        os.close(read_fd)
        if payload is None:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    if payload is None:
        if job is not None:
            job.check()  # cancelled or past the call's own deadline: say that
        raise InvalidRequestError(
            f"the model's chat template took longer than {seconds:g} s to render; {_RAW_HINT}"
        )
    if payload[:1] == b"T":
        return payload[1:].decode("utf-8", "surrogatepass")
    message = payload[1:].decode("utf-8", "replace") or "the chat template renderer died"
    raise InvalidRequestError(message if _RAW_HINT in message else f"{message}; {_RAW_HINT}")
