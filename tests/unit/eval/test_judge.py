"""The LLM judge against a real OpenAI-shaped HTTP server on loopback (``http.server`` in a thread).

The stand-in judge computes its verdict from the request it receives: it reads the reference answer and
the model response out of the user message and compares the response's *last* number (number words
included) with the reference. So a prompt that drops or garbles either field, or a client that sends the
wrong model or key, gets wrong verdicts and these tests fail.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from visent.data.schema import Example
from visent.eval import cli
from visent.eval.harness import PREDICTIONS, EvalConfigError, EvalSettings, read_predictions, run_eval
from visent.eval.judge import (
    Judge,
    JudgeUnavailable,
    chat_url,
    parse_verdict,
)
from visent.eval.sources import Benchmark, write_examples_jsonl

WORDS = {
    w: str(i)
    for i, w in enumerate(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    )
}
_FIELDS = re.compile(
    r"Reference answer:\n(?P<ref>.*?)\n\nModel response:\n(?P<resp>.*?)\n\nIs the final", re.DOTALL
)


def _last_number(text: str) -> Fraction | None:
    for word, digit in WORDS.items():
        text = re.sub(rf"\b{word}\b", digit, text, flags=re.IGNORECASE)
    numbers = re.findall(r"-?\d+(?:/\d+|\.\d+)?", text)
    return Fraction(numbers[-1]) if numbers else None


class FakeJudge:
    """Server state: behaviour knobs and a log of what arrived."""

    def __init__(self) -> None:
        self.model = "judge-7b"
        self.key: str | None = None
        self.fail_first = 0  # answer the first N requests with ``fail_status``
        self.fail_status = 429
        self.fail_after: int | None = None  # answer 503 from request N on (a judge that dies)
        self.delay = 0.0
        self.garbage: str | None = None  # "not-json", "no-verdict", "no-choices"
        self.requests: list[dict] = []
        self.headers: list[dict] = []

    def reply(self, body: dict) -> tuple[int, str]:
        n = len(self.requests)
        self.requests.append(body)
        if n < self.fail_first or (self.fail_after is not None and n >= self.fail_after):
            return (self.fail_status if n < self.fail_first else 503), '{"error": "busy"}'
        if body.get("model") != self.model:
            return 404, json.dumps({"error": {"message": f"The model `{body.get('model')}` does not exist."}})
        if self.garbage == "not-json":
            return 200, "<html>502 upstream</html>"
        if self.garbage == "no-choices":
            return 200, json.dumps({"object": "error"})
        user = body["messages"][-1]["content"]
        match = _FIELDS.search(user)
        if self.garbage == "no-verdict" or match is None:
            text = "I am not sure what you are asking."
        else:
            try:
                same = _last_number(match["resp"]) == Fraction(match["ref"].strip())
            except (ValueError, ZeroDivisionError):
                same = False
            text = (
                f"The response ends with the reference value.\nVERDICT: {'CORRECT' if same else 'INCORRECT'}"
            )
        return 200, json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})


@pytest.fixture
def server():
    state = FakeJudge()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.headers.append(dict(self.headers))
            if self.path != "/v1/chat/completions":
                status, text = 404, "{}"
            elif state.key is not None and self.headers.get("Authorization") != f"Bearer {state.key}":
                state.requests.append(body)
                status, text = 401, '{"error": "bad key"}'
            else:
                status, text = state.reply(body)
            if state.delay:
                time.sleep(state.delay)
            data = text.encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up (timeout test)
                pass

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()


def _judge(server, **kw) -> Judge:
    kw.setdefault("backoff", 0.01)
    return Judge(url=server.url + kw.pop("suffix", "/v1"), model=kw.pop("model", server.model), **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


EXAMPLES = [
    Example(id="rule-ok", task="counting", prompt="How many cats?", answer="3"),  # verifier accepts
    Example(id="words", task="counting", prompt="How many dogs?", answer="5"),  # only a judge accepts
    Example(id="wrong", task="math", prompt="What is 1/2 + 1/6?", answer="2/3"),  # wrong: both reject
    Example(id="box", task="grounding", prompt="Where is the cat?", answer="[0, 0, 10, 10]"),  # never judged
]
RESPONSES = {
    "rule-ok": "<answer>3</answer>",
    "words": "I count them one by one: the answer is five.",
    "wrong": "Adding gives one half. \\boxed{1/2}",
    "box": "<answer>[0, 0, 10, 10]</answer>",
}


class Scripted:
    """A stand-in model: a fixed response per example id; counts generated examples."""

    def __init__(self, responses=RESPONSES):
        self.responses, self.generated = responses, 0

    def __call__(self, examples):
        self.generated += len(examples)
        return [self.responses[ex.id] for ex in examples]


def _run(tmp_path, judge, examples=EXAMPLES, **kw):
    settings = EvalSettings(model="scripted")
    bench = Benchmark("mix", list(examples), "test")
    return run_eval(
        [bench], kw.pop("generate", Scripted()), tmp_path, settings, progress=False, judge=judge, **kw
    )


def test_chat_url_accepts_root_v1_and_full_urls():
    assert chat_url("http://h:8000") == "http://h:8000/v1/chat/completions"
    assert chat_url("http://h:8000/v1/") == "http://h:8000/v1/chat/completions"
    assert chat_url("https://x.org/api/v1") == "https://x.org/api/v1/chat/completions"
    assert chat_url("http://h/v1/chat/completions") == "http://h/v1/chat/completions"
    with pytest.raises(ValueError, match="http"):
        chat_url("localhost:8000")


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("VERDICT: CORRECT", "correct"),
        ("verdict: incorrect", "incorrect"),
        ("The final answer matches.\n**Verdict:** Correct", "correct"),
        ("<think>maybe VERDICT: CORRECT</think>\nVERDICT: INCORRECT", "incorrect"),
        ("VERDICT: INCORRECT\nOn reflection:\nVERDICT: CORRECT", "correct"),
        ("Correct.", "correct"),
        ("  INCORRECT ", "incorrect"),
        ("Reply with VERDICT: CORRECT or VERDICT: INCORRECT", None),  # an echo of the instructions
        ("It looks correct to me but I am unsure", None),
        ("", None),
        (None, None),
        ("VERDICT: NOT CORRECT", None),
    ],
)
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_fallback_judges_only_what_the_rule_rejected(tmp_path, server):
    judge = _judge(server)
    outcome = _run(tmp_path, judge)
    rows = {r["id"]: r for r in read_predictions(tmp_path / PREDICTIONS)}
    # Only "words" and "wrong" lacked full credit among the text tasks: two requests, no more.
    assert len(server.requests) == 2 and judge.calls == 2 and judge.failures == 0
    sent = [r["messages"][-1]["content"] for r in server.requests]
    assert "How many dogs?" in sent[0] and "answer is five" in sent[0] and "Reference answer:\n5\n" in sent[0]
    assert all(r["model"] == "judge-7b" and r["temperature"] == 0 for r in server.requests)

    assert rows["rule-ok"]["score"] == 1.0 and rows["rule-ok"]["judge"] is None
    assert rows["rule-ok"]["decided_by"] == "rule"
    words = rows["words"]
    assert words["score_rule"] == 0.0 and words["score"] == 1.0 and words["score_clean"] == 1.0
    assert words["decided_by"] == "judge" and words["judge"]["verdict"] == "correct"
    assert "VERDICT: CORRECT" in words["judge"]["reply"] and words["judge"]["error"] is None
    wrong = rows["wrong"]
    assert (
        wrong["score"] == 0.0 and wrong["judge"]["verdict"] == "incorrect" and wrong["decided_by"] == "rule"
    )
    assert rows["box"]["judge"] is None and rows["box"]["score"] == 1.0
    assert outcome.summary["mix"]["accuracy_clean"] == pytest.approx(3 / 4)
    run = json.loads((tmp_path / "run.json").read_text())["settings"]["judge"]
    assert run == {
        "url": server.url + "/v1/chat/completions",
        "model": "judge-7b",
        "mode": "fallback",
        "prompt_version": 1,
    }


def test_always_mode_lets_the_verdict_override_the_rule(tmp_path, server):
    # The rule reads the boxed 5; the response then changes its mind to 6, which the judge notices.
    examples = [Example(id="turn", task="math", prompt="2+3?", answer="5"), EXAMPLES[0]]
    responses = {"turn": "\\boxed{5} ... no wait, it is 6", "rule-ok": "<answer>3</answer>"}
    _run(tmp_path, _judge(server, mode="always"), examples, generate=Scripted(responses))
    rows = {r["id"]: r for r in read_predictions(tmp_path / PREDICTIONS)}
    assert len(server.requests) == 2  # every text response is judged
    assert rows["turn"]["score_rule"] == 1.0 and rows["turn"]["score"] == 0.0
    assert rows["turn"]["decided_by"] == "judge" and rows["rule-ok"]["score"] == 1.0


def test_noisy_and_clean_labels_are_judged_separately(tmp_path, server):
    ex = Example(id="n", task="counting", prompt="How many?", answer="4", clean_answer="5", is_noisy=True)
    _run(tmp_path, _judge(server), [ex], generate=Scripted({"n": "there are five"}))
    (row,) = read_predictions(tmp_path / PREDICTIONS)
    assert len(server.requests) == 2
    assert row["score"] == 0.0 and row["score_clean"] == 1.0
    assert row["judge"]["verdict"] == "incorrect" and row["judge_clean"]["verdict"] == "correct"


def test_429_is_retried_with_backoff_then_gives_up(server):
    server.fail_first = 2
    assert _judge(server, retries=2).probe() == "correct"
    assert len(server.requests) == 3
    server.requests.clear()
    server.fail_first, server.fail_status = 10, 500
    with pytest.raises(JudgeUnavailable, match="after 3 attempts: HTTP 500"):
        _judge(server, retries=2).probe()
    assert len(server.requests) == 3


def test_timeout_is_a_clear_failure(server):
    server.delay = 1.0
    with pytest.raises(JudgeUnavailable, match="no reply within 0.2 s"):
        _judge(server, timeout=0.2, retries=1).probe()


def test_unreachable_port_and_unknown_model_and_bad_key(server, monkeypatch):
    with pytest.raises(JudgeUnavailable, match="cannot connect"):
        Judge(url=f"http://127.0.0.1:{_free_port()}", model="m", retries=1, backoff=0.01).probe()
    with pytest.raises(JudgeUnavailable, match="404.*does not exist.*unknown --judge-model"):
        _judge(server, model="no-such-model").probe()
    assert len(server.requests) == 1  # a 404 is not retried
    server.key = "s3cret-key"
    monkeypatch.setenv("MY_JUDGE_KEY", "wrong-key")
    with pytest.raises(JudgeUnavailable, match="401") as info:
        _judge(server, key_env="MY_JUDGE_KEY").probe()
    assert "wrong-key" not in str(info.value)
    monkeypatch.setenv("MY_JUDGE_KEY", "s3cret-key")
    assert _judge(server, key_env="MY_JUDGE_KEY").probe() == "correct"


@pytest.mark.parametrize("garbage", ["not-json", "no-choices", "no-verdict"])
def test_garbage_replies_are_recorded_on_the_row_never_raised(tmp_path, server, garbage):
    server.garbage = garbage
    judge = _judge(server)
    with pytest.raises(JudgeUnavailable, match="probe"):
        judge.probe()  # the CLI refuses such a judge before generating
    outcome = _run(tmp_path, judge)
    rows = {r["id"]: r for r in read_predictions(tmp_path / PREDICTIONS)}
    assert judge.failures == 2
    for key in ("words", "wrong"):
        assert rows[key]["judge"]["verdict"] is None and rows[key]["judge"]["error"]
        assert rows[key]["decided_by"] == "rule" and rows[key]["score"] == rows[key]["score_rule"] == 0.0
    assert outcome.summary["mix"]["accuracy_clean"] == pytest.approx(2 / 4)


def test_a_judge_dying_mid_run_keeps_written_batches_and_resumes(tmp_path, server):
    examples = [Example(id=f"q{i}", task="counting", prompt=f"Count {i}", answer=str(i)) for i in range(6)]
    responses = {f"q{i}": f"that makes {list(WORDS)[i]}" for i in range(6)}
    server.fail_after = 3  # requests 0..2 answered, then 503 forever
    with pytest.raises(JudgeUnavailable):
        _run(tmp_path, _judge(server, retries=1), examples, generate=Scripted(responses), batch_size=2)
    written = read_predictions(tmp_path / PREDICTIONS)
    assert [r["id"] for r in written] == ["q0", "q1"]  # the batch of q2/q3 was never written half
    server.fail_after = None
    again = Scripted(responses)
    outcome = _run(tmp_path, _judge(server), examples, generate=again, batch_size=2)
    rows = read_predictions(tmp_path / PREDICTIONS)
    assert again.generated == 4 and sorted(r["id"] for r in rows) == [f"q{i}" for i in range(6)]
    assert outcome.summary["mix"]["accuracy_clean"] == 1.0


def test_resume_with_another_judge_or_without_one_is_refused(tmp_path, server):
    _run(tmp_path, _judge(server), EXAMPLES[:1])
    with pytest.raises(EvalConfigError, match="judge"):
        _run(tmp_path, _judge(server, mode="always"), EXAMPLES[:1])
    with pytest.raises(EvalConfigError, match="judge"):
        _run(tmp_path, None, EXAMPLES[:1])
    # A folder written before judges existed (no "judge" key in run.json) still resumes without one,
    # and is refused with one.
    _run(tmp_path / "plain", None, EXAMPLES[:1])
    run_file = tmp_path / "plain" / "run.json"
    run = json.loads(run_file.read_text())
    assert run["settings"].pop("judge") is None
    run_file.write_text(json.dumps(run))
    assert _run(tmp_path / "plain", None, EXAMPLES[:1]).reused == 1
    run_file.write_text(json.dumps(run))
    with pytest.raises(EvalConfigError, match="judge"):
        _run(tmp_path / "plain", _judge(server), EXAMPLES[:1])


def _cli_argv(tmp_path, url, *extra):
    data = tmp_path / "q.jsonl"
    write_examples_jsonl(data, EXAMPLES)
    return [
        "--model",
        "tiny:qwen2_5_vl",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "out"),
        "--no-progress",
        "--judge",
        url,
        *extra,
    ]


def test_cli_judge_end_to_end_key_never_written(tmp_path, server, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_make_backend", lambda args, max_images: Scripted())
    server.key = "s3cret-key"
    monkeypatch.setenv("VISENT_JUDGE_API_KEY", "s3cret-key")
    assert cli.main(_cli_argv(tmp_path, server.url, "--judge-model", server.model)) == 0
    captured = capsys.readouterr()
    assert "| q | counting, grounding, math | 4 | 75.0 [" in captured.out
    assert "judge: 2 request(s) this run, 0 without a usable verdict" in captured.err
    assert len(server.requests) == 3  # probe + the two rows without rule credit
    for name in ("run.json", "results.json", PREDICTIONS):
        assert "s3cret" not in (tmp_path / "out" / name).read_text()


def test_cli_unusable_judge_is_one_line_exit_2_before_generation(tmp_path, server, monkeypatch, capsys):
    def no_model(*args):
        raise AssertionError("no model may be built when the judge is unusable")

    monkeypatch.setattr(cli, "_make_backend", no_model)
    dead = f"http://127.0.0.1:{_free_port()}"
    cases = [
        ([dead, "--judge-model", "m", "--judge-retries", "0"], "cannot connect"),
        ([server.url, "--judge-model", "no-such-model"], "does not exist"),
        ([server.url], "--judge-model"),
        (["ftp://x", "--judge-model", "m"], "http"),
        ([server.url, "--judge-model", "m", "--judge-key-env", "VISENT_TEST_UNSET_VAR"], "not set"),
    ]
    for extra, message in cases:
        assert cli.main(_cli_argv(tmp_path, *extra)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) <= 2 and message in err[-1], err  # the count line, then the one-line reason
        assert not (tmp_path / "out" / PREDICTIONS).exists()


def test_k_samples_keep_every_verdict(server):
    # How a K-sample harness combines reviewed samples: rule scores averaged, verdicts kept per sample.
    from visent.eval.harness import score_example
    from visent.eval.judge import combine_samples

    judge = _judge(server)
    ex = Example(id="k", task="counting", prompt="How many?", answer="4")
    samples = ["<answer>4</answer>", "four of them", "it is 3", "<answer>7</answer>"]
    rows = [score_example(ex, s, {}, judge) for s in samples]
    fields = combine_samples(rows)
    assert [r["score"] for r in rows] == [1.0, 1.0, 0.0, 0.0] and len(server.requests) == 3
    assert fields["scores_rule"] == [1.0, 0.0, 0.0, 0.0] and fields["score_rule"] == 0.25
    assert fields["decided_by"] == ["rule", "judge", "rule", "rule"]
    assert [b and b["verdict"] for b in fields["judge"]] == [None, "correct", "incorrect", "incorrect"]
    assert combine_samples([score_example(ex, s, {}) for s in samples]) == {}


def test_sampled_run_eval_sends_every_sample_to_the_judge(tmp_path, server):
    # run_eval with K > 1 goes through score_samples: each sample must be reviewed, and the row must carry
    # the judged mean score beside the rule's mean and one verdict per sample.
    judge = _judge(server)
    ex = Example(id="k", task="counting", prompt="How many?", answer="4")
    samples = ["<answer>4</answer>", "four of them", "it is 3"]
    settings = EvalSettings(model="scripted", samples=3, temperature=1.0)
    run_eval(
        [Benchmark("k", [ex], "test")], lambda exs: [samples for _ in exs], tmp_path, settings,
        progress=False, judge=judge,
    )
    (row,) = read_predictions(tmp_path / PREDICTIONS)
    assert row["k"] == 3 and row["scores"] == [1.0, 1.0, 0.0] and row["score"] == pytest.approx(2 / 3)
    assert row["scores_rule"] == [1.0, 0.0, 0.0] and row["score_rule"] == pytest.approx(1 / 3)
    assert row["decided_by"] == ["rule", "judge", "rule"] and row["pass"] == 1.0
