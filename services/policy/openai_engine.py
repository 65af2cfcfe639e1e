"""The `openai` backend: any OpenAI-compatible completions endpoint (e.g. a large model behind a vLLM server),
as in the paper's bootstrap round where a large model writes the first trajectories.

Uses the plain completions API (the step format is a raw prompt, not a chat), `n` samples, the step markers as
stop strings. vLLM's server honours `include_stop_str_in_output`; for servers that drop the stop string, the
marker is restored from `stop_reason` when given.

Each HTTP call waits at most until the caller's deadline (services.common.batching.call_deadline), never the whole
`timeout_s`: the call runs in a thread that a cancelled caller cannot stop, so the timeout is what frees it.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.common.deadlines import call_deadline
from services.common.errors import DeadlineExceeded, NotReady
from services.math import stepfmt
from services.math.prompting import few_shot_prefix
from services.policy.engine import GeneratedStep, SamplingParams, StepEnd, StepPrompt, classify_end, cut_at_stop


class OpenAIEngine:
    def __init__(
        self, base_url: str, model: str, api_key_file: str = "", timeout_s: float = 300.0, few_shot: int = 0
    ) -> None:
        self.url = base_url.rstrip("/") + "/completions"
        # Worked examples before each prompt, for a teacher that does not know the step format.
        self._prefix = few_shot_prefix(few_shot)
        self.model = model
        self.timeout_s = timeout_s
        self._api_key = Path(api_key_file).read_text().strip() if api_key_file else ""

    @property
    def version(self) -> str:
        return f"openai:{self.model}"

    def _timeout(self) -> float:
        """Seconds an HTTP call may wait: `timeout_s`, or less when the caller's deadline comes first."""
        deadline = call_deadline()
        if deadline is None:
            return self.timeout_s
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the caller's deadline passed before the completions endpoint was called")
        return min(self.timeout_s, left)

    def _post(self, body: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                result: dict[str, Any] = json.loads(response.read())
                return result
        except urllib.error.HTTPError as exc:
            raise NotReady(f"completions endpoint answered {exc.code}: {exc.read()[:300]!r}") from exc
        except (urllib.error.URLError, TimeoutError) as exc:
            timed_out = isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError)
            if timed_out and timeout_s < self.timeout_s:  # the wait was cut to the caller's deadline
                raise DeadlineExceeded(
                    f"completions endpoint {self.url} did not answer within the caller's deadline ({timeout_s:.3g}s)"
                ) from exc
            raise NotReady(f"completions endpoint {self.url} unreachable: {exc}") from exc

    async def _one(self, prompt: StepPrompt, params: SamplingParams) -> list[GeneratedStep]:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": self._prefix + stepfmt.render_prompt(prompt.question, list(prompt.steps)),
            "n": params.n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "stop": list(stepfmt.STOP_STRINGS),
            "include_stop_str_in_output": True,
            "logprobs": 0,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        reply = await asyncio.to_thread(self._post, body, self._timeout())
        choices = sorted(reply.get("choices", []), key=lambda c: c.get("index", 0))
        return [self._step(choice) for choice in choices]

    @staticmethod
    def _step(choice: dict[str, Any]) -> GeneratedStep:
        text = choice.get("text", "")
        if choice.get("finish_reason") == "stop" and not text.endswith(stepfmt.STOP_STRINGS):
            marker = choice.get("stop_reason")
            text = stepfmt.close_step(text, marker if marker in stepfmt.STOP_STRINGS else stepfmt.END_OF_STEP)
        text, by_marker = cut_at_stop(text)
        logprobs = choice.get("logprobs") or {}
        token_logprobs = [lp for lp in logprobs.get("token_logprobs") or [] if lp is not None]
        end = classify_end(text, by_marker) if by_marker else StepEnd.LENGTH
        return GeneratedStep(text=text, end=end, num_tokens=len(token_logprobs), logprob=float(sum(token_logprobs)))

    async def generate(self, prompts: Sequence[StepPrompt], params: SamplingParams) -> list[list[GeneratedStep]]:
        return list(await asyncio.gather(*(self._one(prompt, params) for prompt in prompts)))

    async def close(self) -> None:
        return None
