"""An optional LLM judge for ``visent eval``: an OpenAI-compatible chat-completions endpoint, stdlib only.

    visent eval --model ckpt/ --data mathvista=testmini.json --out runs/e \\
        --judge http://127.0.0.1:8000/v1 --judge-model Qwen/Qwen2.5-7B-Instruct [--judge-mode always]

Rule-based verification (``visent.rewards``) stays the default; without ``--judge`` nothing here runs.
With a judge, :meth:`Judge.review` wraps each scored record of ``harness.score_example``:

- ``--judge-mode fallback`` (default): the judge is asked only when the rule verifier did not give full
  credit (``score < reward.high``), e.g. a free-form "two thirds" against the label ``2/3``. A CORRECT
  verdict raises the score to full credit; INCORRECT leaves the rule score (partial credit included).
- ``--judge-mode always``: every response of a judged task is judged and the verdict alone sets the
  score (``reward.high`` or ``reward.low``); the rule score is kept beside it.

Only text-answer tasks are judged (``JUDGED_TASKS``): a box or point is checked by geometry, not by
asking a language model. The judge sees the question text, the reference answer and the model's response
(its last ``MAX_RESPONSE_CHARS`` characters, where the final answer is), never the images.

Each judged record gains ``score_rule`` / ``score_clean_rule`` (the verifier's scores),
``decided_by`` / ``decided_by_clean`` (``"rule"`` or ``"judge"``), and ``judge`` / ``judge_clean``
(``{"verdict": "correct" | "incorrect" | None, "reply": <first REPLY_CHARS chars>, "error": str | None}``,
or None when the judge was not consulted for that label). A reply without a readable verdict, or a request
the server rejects as malformed (HTTP 400/413/422), is a judge *failure recorded on the row*: the rule
score stands and ``decided_by`` says ``"rule"``.

A judge that cannot be reached, refuses the key (401/403), does not know the model (404) or keeps
answering 429/5xx after ``retries`` retries with exponential backoff raises :class:`JudgeUnavailable`:
``visent eval`` probes the judge once before generating anything and stops with one line (status 2),
and a judge that dies mid-run stops the run after the last fully written batch (rerun to resume).

The API key is read from an environment variable (``--judge-key-env``, default ``VISENT_JUDGE_API_KEY``,
sent only when set) and is never logged, stored or put in an error message.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from visent.data.schema import Example

DEFAULT_KEY_ENV = "VISENT_JUDGE_API_KEY"
JUDGE_MODES = ("fallback", "always")
# Tasks whose labels are text a language model can compare; grounding/detection are geometric.
JUDGED_TASKS = frozenset({"math", "multiple_choice", "counting", "classification"})
MAX_RESPONSE_CHARS = 6000  # the tail of a long chain of thought, where the final answer sits
REPLY_CHARS = 400  # how much of the judge's reply each record keeps
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Rejections that concern one request (too long, bad parameter), not the judge as a whole.
ROW_STATUSES = frozenset({400, 413, 422})
# Bump when the prompt changes: it is stored in run.json so a resume never mixes two prompts.
PROMPT_VERSION = 1

SYSTEM_PROMPT = (
    "You grade answers to exam questions. You are given a question, its reference answer and a model's "
    "response. Decide whether the final answer in the response is equivalent to the reference answer: the "
    "same value, the same option or the same meaning. Ignore the reasoning, formatting, and equivalent ways "
    "of writing the same value (2/3 and 0.667, 50% and 0.5, 'B' and the text of option B). A response with "
    "no final answer, or with several different final answers, is incorrect.\n"
    "Reply with exactly one line: VERDICT: CORRECT or VERDICT: INCORRECT"
)
USER_PROMPT = (
    "Question:\n{question}\n\nReference answer:\n{reference}\n\nModel response:\n{response}\n\n"
    "Is the final answer in the model response equivalent to the reference answer? "
    "Reply with exactly one line: VERDICT: CORRECT or VERDICT: INCORRECT"
)

# The probe: a case every working judge gets right, so a misconfigured endpoint fails before generation.
PROBE_CASE = ("What is 2 + 3?", "5", "Adding 2 and 3 gives 5. The answer is 5.")

_THINK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_VERDICT = re.compile(r"verdict\W{0,6}(incorrect|correct)\b", re.IGNORECASE)
_BARE = re.compile(r"^\W*(incorrect|correct)\W*$", re.IGNORECASE)


class JudgeUnavailable(RuntimeError):
    """The judge endpoint cannot serve this run (unreachable, auth, unknown model, persistent 429/5xx)."""


class JudgeReplyError(ValueError):
    """One request's reply could not be used (unreadable body, no verdict, request rejected as malformed)."""

    def __init__(self, message: str, reply: str = "") -> None:
        super().__init__(message)
        self.reply = reply


def chat_url(base: str) -> str:
    """``{base}/chat/completions`` for a server root, a ``/v1`` base, or an already complete URL.

    ``http://h:8000`` -> ``http://h:8000/v1/chat/completions``; ``http://h:8000/v1`` and
    ``http://h/api/v1/`` get ``/chat/completions`` appended; a URL ending in ``/chat/completions`` is kept.
    """
    url = base.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", url):
        raise ValueError(
            f"--judge {base!r}: expected an http:// or https:// URL of an OpenAI-compatible server"
        )
    if url.endswith("/chat/completions"):
        return url
    if re.search(r"/v\d+$", url):
        return url + "/chat/completions"
    return url + "/v1/chat/completions"


def parse_verdict(reply: str) -> str | None:
    """``"correct"``, ``"incorrect"`` or None (no readable verdict) from a judge's reply text.

    Reasoning in ``<think>`` blocks is dropped. The last line holding ``VERDICT: X`` decides; a line that
    holds both verdicts (an echo of the instructions) is skipped. A reply that is only the word CORRECT or
    INCORRECT (any case, punctuation around it) is accepted too. Never raises.
    """
    if not isinstance(reply, str):
        return None
    text = _THINK.sub("", reply)
    for line in reversed(text.splitlines()):
        found = {m.lower() for m in _VERDICT.findall(line)}
        if len(found) == 1:
            return found.pop()
    bare = _BARE.match(text.strip())
    return bare.group(1).lower() if bare else None


def _message_text(body: Any) -> str:
    """The assistant text of a chat-completions reply, or JudgeReplyError when the shape is wrong."""
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise JudgeReplyError(
            "reply is not a chat completion (no choices[0].message.content)",
            json.dumps(body)[:REPLY_CHARS] if not isinstance(body, str) else body,
        ) from None
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise JudgeReplyError("reply content is not text", str(content)[:REPLY_CHARS])
    return content


@dataclass
class Judge:
    """A chat-completions judge.

    Attributes:
        url: server root, ``/v1`` base or full ``.../chat/completions`` URL (see :func:`chat_url`).
        model: the model name the server serves.
        mode: ``"fallback"`` or ``"always"`` (module docstring).
        key_env: environment variable holding the API key (read at each request; sent only when set).
        timeout: seconds per HTTP request.
        retries: extra attempts after a 429/5xx/timeout/connection error.
        backoff: seconds before the first retry; doubled each retry (``Retry-After`` wins when longer),
            capped at ``max_backoff``.
    """

    url: str
    model: str
    mode: str = "fallback"
    key_env: str = DEFAULT_KEY_ENV
    timeout: float = 60.0
    retries: int = 4
    backoff: float = 1.0
    max_backoff: float = 30.0
    calls: int = field(default=0, init=False)
    failures: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.endpoint = chat_url(self.url)
        if not self.model or not self.model.strip():
            raise ValueError("--judge needs --judge-model NAME (the model the judge server serves)")
        if self.mode not in JUDGE_MODES:
            raise ValueError(f"--judge-mode {self.mode!r}: expected one of {', '.join(JUDGE_MODES)}")
        if not self.timeout > 0 or self.retries < 0:
            raise ValueError("--judge-timeout must be > 0 and retries >= 0")

    def settings(self) -> dict[str, Any]:
        """What determines the verdicts; stored in ``run.json`` (no key, no timeout)."""
        return {
            "url": self.endpoint,
            "model": self.model,
            "mode": self.mode,
            "prompt_version": PROMPT_VERSION,
        }

    # -- transport --------------------------------------------------------------------------------------

    def _request(self, payload: dict[str, Any]) -> Any:
        data = json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        delay = self.backoff
        last = ""
        for attempt in range(self.retries + 1):
            wait = delay
            try:
                request = urllib.request.Request(self.endpoint, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
                try:
                    return json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    raise JudgeReplyError(
                        "reply body is not JSON", raw[:REPLY_CHARS].decode("utf-8", "replace")
                    ) from None
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode("utf-8", "replace").strip().replace("\n", " ")
                last = f"HTTP {exc.code} {detail}".strip()
                if exc.code in ROW_STATUSES:
                    raise JudgeReplyError(f"judge rejected the request: {last}") from None
                if exc.code not in RETRY_STATUSES:
                    hint = {
                        401: " (check the key in $" + self.key_env + ")",
                        403: " (check the key in $" + self.key_env + ")",
                        404: " (wrong URL or unknown --judge-model?)",
                    }.get(exc.code, "")
                    raise JudgeUnavailable(f"judge {self.endpoint} answered {last}{hint}") from None
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                try:
                    wait = max(delay, float(retry_after)) if retry_after else delay
                except ValueError:
                    pass
            except TimeoutError:
                last = f"no reply within {self.timeout:g} s"
            except urllib.error.URLError as exc:
                reason = exc.reason
                last = (
                    f"no reply within {self.timeout:g} s"
                    if isinstance(reason, TimeoutError)
                    else f"cannot connect ({reason})"
                )
            except (OSError, http.client.HTTPException) as exc:  # reset mid-reply, not HTTP at all
                last = f"connection failed ({type(exc).__name__}: {exc})"
            if attempt < self.retries:
                time.sleep(min(wait, self.max_backoff))
                delay *= 2
        raise JudgeUnavailable(f"judge {self.endpoint} unavailable after {self.retries + 1} attempts: {last}")

    def ask(self, question: str, reference: str, response: str) -> tuple[str | None, str]:
        """One verdict: ``(verdict or None when unreadable, reply text)``.

        Raises:
            JudgeUnavailable: the endpoint cannot serve requests (stop the run).
            JudgeReplyError: this reply is unusable (record it on the row).
        """
        tail = response if len(response) <= MAX_RESPONSE_CHARS else "..." + response[-MAX_RESPONSE_CHARS:]
        payload = {
            "model": self.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {
                    "role": "user",
                    "content": USER_PROMPT.format(
                        question=question.strip(), reference=str(reference).strip(), response=tail.strip()
                    ),
                },
            ],
        }
        reply = _message_text(self._request(payload))
        return parse_verdict(reply), reply

    def probe(self) -> str:
        """One request with an obvious case before any generation; returns the verdict.

        Raises:
            JudgeUnavailable: any failure, including a reply without a readable verdict (every row would
                fail the same way). A wrong verdict is returned for the caller to warn about.
        """
        try:
            verdict, reply = self.ask(*PROBE_CASE)
        except JudgeReplyError as exc:
            raise JudgeUnavailable(
                f"judge {self.endpoint} probe failed: {exc} (reply began {exc.reply[:80]!r})"
            ) from None
        if verdict is None:
            raise JudgeUnavailable(
                f"judge {self.endpoint} ({self.model}) replied without a readable 'VERDICT: CORRECT|INCORRECT' "
                f"line to the probe question; reply began {reply[:80]!r}"
            )
        return verdict

    # -- scoring ----------------------------------------------------------------------------------------

    def _verdict_block(self, question: str, reference: str, response: str) -> dict[str, Any]:
        self.calls += 1
        try:
            verdict, reply = self.ask(question, reference, response)
            error = None if verdict else "no readable verdict in the reply"
        except JudgeReplyError as exc:
            verdict, reply, error = None, exc.reply, str(exc)
        if error:
            self.failures += 1
        return {"verdict": verdict, "reply": reply[:REPLY_CHARS], "error": error}

    def review(self, example: Example, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` (from ``harness.score_example``) with the judge's verdicts applied (module docstring).

        Raises JudgeUnavailable when the endpoint fails; never raises on what the model or judge wrote.
        """
        from visent.rewards import get_reward

        record = dict(record)
        record["score_rule"], record["score_clean_rule"] = record["score"], record["score_clean"]
        record["decided_by"] = record["decided_by_clean"] = "rule"
        record["judge"] = record["judge_clean"] = None
        if example.task not in JUDGED_TASKS:
            return record
        reward = get_reward(record["reward"])
        response = record["response"] if isinstance(record["response"], str) else str(record["response"])
        asked: dict[str, dict[str, Any]] = {}  # reference -> block: one request when both labels agree
        for score_key, label, suffix in (
            ("score", example.answer, ""),
            ("score_clean", example.clean_answer, "_clean"),
        ):
            rule = record[score_key]
            if self.mode == "fallback" and rule >= reward.high:
                continue
            reference = str(label)
            if reference not in asked:
                asked[reference] = self._verdict_block(example.prompt, reference, response)
            block = asked[reference]
            record["judge" + suffix] = block
            if block["verdict"] == "correct":
                record[score_key] = reward.high
                record["decided_by" + suffix] = "judge"
            elif block["verdict"] == "incorrect" and self.mode == "always":
                record[score_key] = reward.low
                record["decided_by" + suffix] = "judge"
            elif block["verdict"] == "incorrect":
                # fallback: the verifier's (partial) credit stands and the judge agrees it is not full.
                record["decided_by" + suffix] = "rule"
        return record


def combine_samples(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The judge fields of one K-sample prediction record, from its K reviewed per-sample records.

    For a harness that scores K samples per example with ``score_example(..., judge)`` each and then
    averages: ``score_rule`` / ``score_clean_rule`` become the means of the rule scores (comparable with the
    averaged ``score``), ``scores_rule`` / ``scores_clean_rule`` keep all K, and ``decided_by*`` and
    ``judge*`` become lists of K. Returns ``{}`` when the records were not reviewed (no judge).
    """
    if not records or "score_rule" not in records[0]:
        return {}
    k = len(records)
    out: dict[str, Any] = {}
    for suffix in ("", "_clean"):
        rule = [float(r[f"score{suffix}_rule"]) for r in records]
        out[f"score{suffix}_rule"] = sum(rule) / k
        out[f"scores{suffix}_rule"] = rule
        out["decided_by" + suffix] = [r["decided_by" + suffix] for r in records]
        out["judge" + suffix] = [r["judge" + suffix] for r in records]
    return out


def add_judge_arguments(parser: argparse.ArgumentParser) -> None:
    """``--judge URL --judge-model NAME [--judge-mode --judge-key-env --judge-timeout --judge-retries]``."""
    g = parser.add_argument_group("LLM judge (optional; rule-based verification is the default)")
    g.add_argument(
        "--judge",
        default=None,
        metavar="URL",
        help="OpenAI-compatible server (root, /v1 base or full /chat/completions URL) that judges "
        "free-form answers the verifier did not accept",
    )
    g.add_argument("--judge-model", default=None, metavar="NAME", help="model name the judge server serves")
    g.add_argument(
        "--judge-mode",
        default="fallback",
        choices=JUDGE_MODES,
        help="fallback (default): judge only responses without full rule credit; always: the "
        "judge's verdict sets every judged score",
    )
    g.add_argument(
        "--judge-key-env",
        default=None,
        metavar="VAR",
        help=f"environment variable holding the API key (default {DEFAULT_KEY_ENV}, sent when set)",
    )
    g.add_argument("--judge-timeout", type=float, default=60.0, metavar="S", help="seconds per judge request")
    g.add_argument(
        "--judge-retries",
        type=int,
        default=4,
        metavar="N",
        help="retries on 429/5xx/timeouts, with exponential backoff from 1 s",
    )


def judge_from_args(args: argparse.Namespace) -> Judge | None:
    """The :class:`Judge` the command line asks for, or None; ValueError (status 2) on a bad combination."""
    if args.judge is None:
        if args.judge_model is not None:
            raise ValueError("--judge-model needs --judge URL")
        return None
    if args.judge_key_env is not None and not os.environ.get(args.judge_key_env):
        raise ValueError(f"--judge-key-env {args.judge_key_env}: that environment variable is not set")
    return Judge(
        url=args.judge,
        model=args.judge_model or "",
        mode=args.judge_mode,
        key_env=args.judge_key_env or DEFAULT_KEY_ENV,
        timeout=args.judge_timeout,
        retries=args.judge_retries,
    )
