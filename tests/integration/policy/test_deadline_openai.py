"""The `openai` backend waits for its endpoint no longer than the caller's deadline: against a real HTTP server on
127.0.0.1 that answers too late."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.common.deadlines import within_deadline
from services.common.errors import DeadlineExceeded
from services.policy.core import Limits, PolicyCore
from services.policy.engine import SamplingParams, StepPrompt
from services.policy.openai_engine import OpenAIEngine

ANSWERS_AFTER_S = 5.0


class SlowCompletions(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(ANSWERS_AFTER_S)
        payload = b'{"choices": []}'
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            pass  # the client gave up

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def slow_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowCompletions)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


async def test_a_call_past_its_deadline_fails_on_time(slow_endpoint: str) -> None:
    core = PolicyCore(Limits(default_n=1, max_n=4, max_prompts=4, default_max_new_tokens=8, max_new_tokens=8))
    await core.slot.install(OpenAIEngine(slow_endpoint, "teacher", timeout_s=300))
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await core.generate([StepPrompt("What is 1?")], SamplingParams(n=1), timeout_s=0.5)
    assert time.monotonic() - started < 1.5


async def test_the_http_call_itself_gives_up_at_the_deadline_freeing_its_thread(slow_endpoint: str) -> None:
    # The thread a call runs in cannot be cancelled: only the HTTP timeout, cut to the deadline, frees it.
    engine = OpenAIEngine(slow_endpoint, "teacher", timeout_s=300)
    started = time.monotonic()
    async with within_deadline(5.0, "a call"):
        timeout = engine._timeout()
        assert 4.5 < timeout <= 5.0
    async with within_deadline(0.5, "a call"):
        timeout = engine._timeout()
    with pytest.raises(DeadlineExceeded, match="did not answer within the caller's deadline"):
        await asyncio.to_thread(engine._post, {"model": "teacher"}, timeout)
    assert time.monotonic() - started < ANSWERS_AFTER_S - 2
