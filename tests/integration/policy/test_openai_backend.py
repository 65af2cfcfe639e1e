"""The `openai` backend against a real HTTP server on 127.0.0.1 that speaks the completions API."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from services.common.errors import NotReady
from services.policy.engine import SamplingParams, StepEnd, StepPrompt
from services.policy.openai_engine import OpenAIEngine

RECEIVED: list[dict[str, Any]] = []


class Completions(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        RECEIVED.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        choices = [
            # vLLM-style: stop string kept in the text.
            {
                "index": 0,
                "text": "x = 1\n<end_of_step>",
                "finish_reason": "stop",
                "logprobs": {"token_logprobs": [-0.5, -0.25]},
            },
            # A server that drops the stop string but says which one matched.
            {
                "index": 1,
                "text": "print(x)\n",
                "finish_reason": "stop",
                "stop_reason": "<end_of_code>",
                "logprobs": {"token_logprobs": [-1.0]},
            },
            {"index": 2, "text": "y = 2 +", "finish_reason": "length", "logprobs": None},
        ][: body["n"]]
        payload = json.dumps({"choices": choices}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Completions)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


async def test_completions_become_steps(endpoint: str, tmp_path: Any) -> None:
    key = tmp_path / "key"
    key.write_text("secret\n")
    engine = OpenAIEngine(endpoint, "big-model", str(key))
    [steps] = await engine.generate([StepPrompt("What is 1?", ())], SamplingParams(n=3, temperature=0.8, seed=5))
    assert [s.end for s in steps] == [StepEnd.STEP, StepEnd.CODE, StepEnd.LENGTH]
    assert steps[0].text == "x = 1\n<end_of_step>" and steps[0].logprob == pytest.approx(-0.75)
    assert steps[1].text == "print(x)\n<end_of_code>"
    sent = RECEIVED[-1]
    assert sent["path"] == "/v1/completions" and sent["auth"] == "Bearer secret"
    assert sent["stop"] == ["<end_of_step>", "<end_of_code>", "<end_of_answer>"] and sent["seed"] == 5
    assert sent["prompt"].startswith("Question: What is 1?")
    assert engine.version == "openai:big-model"


async def test_a_teacher_is_shown_worked_examples_before_the_question(endpoint: str) -> None:
    from services.math import stepfmt

    engine = OpenAIEngine(endpoint, "teacher-model", few_shot=2)
    await engine.generate([StepPrompt("What is 1?", ())], SamplingParams(n=1))
    prompt = RECEIVED[-1]["prompt"]
    assert prompt.count("Question: ") == 3 and prompt.count(stepfmt.END_OF_ANSWER) == 2  # two solved examples
    assert prompt.endswith(stepfmt.render_prompt("What is 1?"))  # then the question, in the step format


async def test_an_unreachable_endpoint_is_not_ready() -> None:
    engine = OpenAIEngine("http://127.0.0.1:9/v1", "m", timeout_s=2)
    with pytest.raises(NotReady):
        await engine.generate([StepPrompt("q", ())], SamplingParams(n=1))
