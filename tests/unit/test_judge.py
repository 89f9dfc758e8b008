"""The PAE judge client against a real HTTP server on loopback: good, malformed and slow answers, and none."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from finetune.judge import HttpJudge
from interp.errors import UserInputError
from probes.judge import judge_prompt, parse_rating


class Handler(BaseHTTPRequestHandler):
    behaviour = "good"
    calls = 0
    seen: list[dict] = []  # per request: the headers and the JSON body

    def do_POST(self):  # noqa: N802 (http.server's naming)
        Handler.calls += 1
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Handler.seen.append({"headers": dict(self.headers), "body": request})
        assert request["messages"][0]["role"] == "user"
        if Handler.behaviour == "slow" and Handler.calls == 1:
            time.sleep(1.0)
        if Handler.behaviour == "always-slow":
            time.sleep(0.4)
        if Handler.behaviour == "unauthorized":
            return self.reply(401, json.dumps({"error": {"message": "Incorrect API key provided."}}).encode())
        if Handler.behaviour == "overloaded":
            return self.reply(503, b"busy")
        if Handler.behaviour == "huge":
            return self.reply(200, b'{"choices": [{"message": {"content": "4' + b" " * 2_000_000 + b'"}}]}')
        if Handler.behaviour == "malformed":
            body = b"<html>not json</html>"
        else:
            content = "4" if Handler.behaviour != "chatty" else "I would say it fits quite well."
            body = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.reply(200, body)

    def reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Handler.calls, Handler.seen = 0, []
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1/chat/completions"
    httpd.shutdown()
    httpd.server_close()


def test_parse_rating():
    assert parse_rating("4") == 4 and parse_rating("Rating: 5/5") == 5
    assert parse_rating("I'd give it a 2.") == 2
    assert parse_rating("10 out of 10") is None and parse_rating("") is None and parse_rating("great") is None


def test_good_answer(server):
    Handler.behaviour = "good"
    assert HttpJudge(server).rate("extraversion", "I love parties!") == 4
    assert "outgoing" in judge_prompt("extraversion", "x")


def test_unparseable_answers_give_none(server):
    Handler.behaviour = "chatty"
    assert HttpJudge(server).rate("openness", "Art is nice.") is None
    Handler.behaviour = "malformed"
    assert HttpJudge(server).rate("openness", "Art is nice.") is None
    assert Handler.calls == 2  # malformed replies are not retried


def test_slow_answer_times_out_then_retry_succeeds(server):
    Handler.behaviour = "slow"
    judge = HttpJudge(server, timeout=0.3, retries=2, backoff=0.01)
    assert judge.rate("neuroticism", "I worry a lot.") == 4
    assert Handler.calls == 2


def test_server_down_is_a_clear_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    judge = HttpJudge(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=0.5, retries=1, backoff=0.01)
    with pytest.raises(UserInputError, match="did not answer after 2 tries"):
        judge.rate("agreeableness", "Sure, happy to help.")


def test_model_name_and_key_go_to_the_server(server):
    Handler.behaviour = "good"
    assert HttpJudge(server, model="llama-3-70b", api_key="sk-test").rate("extraversion", "Parties!") == 4
    (request,) = Handler.seen
    assert request["body"]["model"] == "llama-3-70b" and request["headers"]["Authorization"] == "Bearer sk-test"
    HttpJudge(server).rate("extraversion", "Parties!")
    assert "Authorization" not in Handler.seen[-1]["headers"]  # no key, no header


def test_client_errors_are_not_retried_and_show_the_servers_message(server):
    Handler.behaviour = "unauthorized"
    with pytest.raises(UserInputError, match="refused the request: HTTP 401 Incorrect API key provided"):
        HttpJudge(server, retries=3, backoff=0.01).rate("extraversion", "Parties!")
    assert Handler.calls == 1
    Handler.behaviour = "overloaded"  # a 5xx is worth retrying
    with pytest.raises(UserInputError, match=r"did not answer after 3 tries \(HTTP 503\)"):
        HttpJudge(server, retries=2, backoff=0.01).rate("extraversion", "Parties!")
    assert Handler.calls == 4


def test_oversized_reply_counts_as_unparseable(server):
    Handler.behaviour = "huge"
    assert HttpJudge(server).rate("extraversion", "Parties!") is None and Handler.calls == 1


def test_one_deadline_bounds_the_whole_evaluation(server):
    Handler.behaviour = "always-slow"  # every answer is good but takes 0.4 s
    judge = HttpJudge(server, timeout=5.0, deadline_s=1.0)
    with pytest.raises(UserInputError, match="used up the evaluation's 1 s"):
        for _ in range(10):
            judge.rate("extraversion", "Parties!")
    assert 2 <= Handler.calls <= 4


@pytest.mark.parametrize(
    "url, key, fragment",
    [
        ("file:///etc/passwd", None, "must be an http:// or https:// URL"),
        ("judge.example.org/v1", None, "must be an http:// or https:// URL"),
        ("http://judge.example.org/v1/chat/completions", "sk-test", "plain http and would receive the API key"),
    ],
)
def test_only_http_urls_and_no_key_over_plain_http(url, key, fragment):
    with pytest.raises(UserInputError, match=fragment):
        HttpJudge(url, api_key=key)


def test_explain_scores_explanations_and_elicits_tokens(tiny_llama_dir, tmp_path):
    from cli import main
    from finetune.explain import elicited_tokens, keyword_hits

    assert elicited_tokens(["Fun 🎉 party, fun!", "🎉"]) == {"🎉": 2, "fun": 2, "party": 1}
    assert keyword_hits("I felt so EXCITED about it", ["excit"]) and not keyword_hits("calm", ["excit"])
    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"response": "Parties are the best 🎉"}\n{"response": "Plain."}\n', encoding="utf-8")
    argv = ["explain", "--model", str(tiny_llama_dir), "--base", str(tiny_llama_dir), "--trait", "extraversion",
            "--generations", str(answers), "--samples", "2", "--max-new-tokens", "5", "--out", str(tmp_path / "x"),
            "--metric-models", str(tmp_path / "none"), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((tmp_path / "x" / "explain.json").read_text())
    assert summary["answers_with_emoji"] == 1 and summary["self_explanation"]["explanations"] == 1
    assert summary["token_elicitation"]["base"]["samples"] == 2
    assert len((tmp_path / "x" / "explanations.jsonl").read_text().splitlines()) == 1
