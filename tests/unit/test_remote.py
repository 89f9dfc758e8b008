"""``diff-neurons --backend nnsight --remote``: capture on NDIF-hosted models; only batch moments come back.

Nothing leaves the machine. ``FakeNDIF`` is a real HTTP server on loopback that speaks nnsight's non-blocking
protocol (``POST /request``, ``GET /response/{id}``, then the result blob) and runs each request on the tiny
LLaMA with ``interp`` made unimportable, as on a server where it is not installed. Requests it runs come from
``interp`` subprocesses: a process must not unpickle the by-value classes it pickled itself (cloudpickle would
rebind the copies onto its own classes). The hosted model's config and tokenizer lie in a Hugging Face cache
built under tmp (``test-org/tiny-llama``, no weights).
"""

from __future__ import annotations

import ast
import email.parser
import email.policy
import importlib.abc
import io
import json
import linecache
import os
import pickletools
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import zstandard

from cli import main
from interp.stats import load_stats

REPO_ID = "test-org/tiny-llama"
KEY = "test-key"


def _hide_interp() -> tuple[dict, importlib.abc.MetaPathFinder]:
    """Make ``interp`` unimportable (as on NDIF) until ``_restore``: (its modules, the blocking finder)."""

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] == "interp":
                raise ModuleNotFoundError(f"No module named {name!r} on the server")
            return None

    hidden = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] == "interp"}
    finder = Refuse()
    sys.meta_path.insert(0, finder)
    return hidden, finder


def _restore(hidden: dict, finder) -> None:
    sys.meta_path.remove(finder)
    sys.modules.update(hidden)


def run_request(model, metadata: dict, blob: bytes) -> dict:
    """What NDIF does with a request: deserialize it against the deployed model, run it, return the saves."""
    from nnsight.schema.request import RequestModel
    from nnsight.tracing import tracer as tracing

    hidden, finder = _hide_interp()
    sources = dict(linecache.cache)  # deserializing registers the request's code under the client's file names
    try:
        model._remoteable_set_env(metadata.get("env"))
        tracer = RequestModel.deserialize(blob, model._remoteable_persistent_objects(), metadata["compress"])
        tracing.inc()
        try:
            tracer.execute(tracer.info.code)
            saves = tracing._saves()
            return {name: value for name, value in tracer.info.frame.f_locals.items() if id(value) in saves}
        finally:
            tracing.dec()
    finally:
        _restore(hidden, finder)
        linecache.cache.clear()  # on NDIF that happens on another machine: the client's source stays as it is
        linecache.cache.update(sources)


class FakeNDIF:
    """A loopback NDIF. ``model``: the deployed nnsight model; ``refuse``: answer every POST with HTTP 503 and
    this detail; ``job_error``: accept requests, then report this job failure (an ERROR status); ``stall``: accept
    requests and keep them queued for ever."""

    def __init__(self, model=None, refuse: str | None = None, job_error: str | None = None, stall: bool = False):
        self.model, self.refuse, self.job_error, self.stall = model, refuse, job_error, stall
        self.requests: list[dict] = []  # path, headers, metadata of every POST
        self.saved: list[dict] = []  # per run request: name -> the saved value
        self.results: dict[str, tuple[str, object]] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def send(self, status: int, body, content_type: str = "application/json") -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
                form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
                parts = {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
                         for part in form.iter_parts()}  # fmt: skip
                metadata = json.loads(parts["data"])
                server.requests.append({"path": self.path, "headers": dict(self.headers), "metadata": metadata})
                if server.refuse:
                    return self.send(503, {"detail": server.refuse})
                job = f"job-{len(server.requests)}"
                if server.stall:
                    server.results[job] = ("QUEUED", None)
                    return self.send(200, {"id": job, "status": "RECEIVED"})
                try:
                    if server.job_error:
                        raise RuntimeError(server.job_error)
                    saved = run_request(server.model, metadata, parts["blob"])
                    server.saved.append(saved)
                    server.results[job] = ("COMPLETED", saved)
                except Exception as exc:  # the job fails on the server: an ERROR status, like NDIF's
                    server.results[job] = ("ERROR", f"{type(exc).__name__}: {exc}")
                self.send(200, {"id": job, "status": "RECEIVED"})

            def do_GET(self) -> None:
                kind, _, job = self.path.strip("/").partition("/")
                status, payload = server.results[job]
                if kind == "response" and status == "QUEUED":
                    return self.send(200, {"id": job, "status": "QUEUED"})
                if kind == "response" and status == "ERROR":
                    return self.send(200, {"id": job, "status": "ERROR", "description": payload})
                if kind == "response":
                    return self.send(200, {"id": job, "status": "COMPLETED", "data": f"{server.url}/result/{job}"})
                buffer = io.BytesIO()
                torch.save(payload, buffer)
                self.send(200, zstandard.ZstdCompressor().compress(buffer.getvalue()), "application/octet-stream")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FakeNDIF:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory, tiny_llama_dir) -> Path:
    """A Hugging Face cache holding the config and tokenizer (no weights) of the tiny LLaMA as ``REPO_ID``."""
    root = tmp_path_factory.mktemp("hf-cache")
    repo = root / f"models--{REPO_ID.replace('/', '--')}"
    commit = "0" * 40
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for path in tiny_llama_dir.iterdir():
        if path.suffix != ".safetensors":
            shutil.copy(path, snapshot / path.name)
    return root


@pytest.fixture
def ndif_env(monkeypatch, hub_cache):
    """In-process runs: the tmp cache, a key, no user nnsight config; returns a function that sets the host."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("NDIF_API_KEY", KEY)
    return lambda host: monkeypatch.setenv("NDIF_HOST", host)


def diff_args(base, finetuned, out, *extra) -> list[str]:
    return ["diff-neurons", "--base", str(base), "--finetuned", str(finetuned), "--prompts", "persona-demo",
            "--out", str(out), "--device", "cpu", "--max-length", "48", "--profile-top", "0", *extra]  # fmt: skip


def refusal(capsys, argv) -> str:
    """Run the CLI in-process; it must exit 2 with one ``error:`` sentence and no traceback. Returns it."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err
    assert lines[-1].startswith("error: ") and "Traceback" not in err, err
    return lines[-1]


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
def test_request_carries_moments_not_activations(ndif_env):
    """The request built for a batch (what nnsight would send; nothing is sent) computes the moments on the
    server with NeuronStats.moments's own code, saves only ``moments`` and ``onset``, and ships no tensor
    larger than the batch's token ids."""
    from interp import remote
    from interp.prompts import load_prompts
    from interp.tokens import build_sequences, make_batches, position_mask
    from probes.emoji_tokens import emoji_onset_ids

    lm = remote.load(remote.resolve(REPO_ID))
    assert next(lm.model.parameters()).device.type == "meta" and (lm.n_layers, lm.d_mlp) == (3, 128)
    sequences = build_sequences(lm.tokenizer, load_prompts("persona-demo")[:3], raw=False, max_length=64)
    masks = [position_mask(seq, "all", []) for seq in sequences]
    batch = make_batches(sequences, masks, batch_size=3, pad_id=lm.tokenizer.pad_token_id)[0]
    backend = remote.RemoteNNsightBackend(lm, host="http://ndif.invalid", api_key=KEY)
    blob = backend.build_request(batch, [0, 1, 2], 0.1, emoji_onset_ids(lm.tokenizer))
    payload = zstandard.ZstdDecompressor().decompress(blob)
    strings = [arg for _, arg, _ in pickletools.genops(payload) if isinstance(arg, str)]
    storages = [arg for _, arg, _ in pickletools.genops(payload) if isinstance(arg, bytes)]

    (block,) = [text for text in strings if "batch_moments(stand_in, rows)" in text]
    saved = [call.args[0].id for call in ast.walk(ast.parse(block.strip()))
             if isinstance(call, ast.Call) and ast.unparse(call.func) in ("nnsight.save", "save")]  # fmt: skip
    assert saved == ["moments", "onset"] and ".save()" not in block
    assert any(text.startswith("@torch.no_grad()\ndef moments(self, x") for text in strings)  # by value
    shipped = []
    for data in storages:
        try:
            shipped.append(torch.load(io.BytesIO(data), weights_only=False).nbytes())
        except Exception:  # not a tensor storage (code, strings)
            continue
    assert shipped and max(shipped) <= batch.input_ids.numel() * 8  # token ids at most; no activations
    assert len(blob) < 4 * batch.input_ids.numel() * lm.d_mlp  # smaller than one layer's float32 activations


@pytest.fixture(scope="module")
def deployed(tiny_llama_dir):
    """The tiny LLaMA as NDIF would serve it (``REPO_ID``)."""
    import nnsight

    from interp import models

    lm = models.load(str(tiny_llama_dir), device="cpu")
    return nnsight.TransformersModel(lm.model, tokenizer=lm.tokenizer)


def test_remote_run_posts_to_ndif_and_equals_local_nnsight(deployed, hub_cache, tiny_llama_dir, planted_tiny, tmp_path):
    """A real run (``interp`` subprocess) with the base on the loopback NDIF: it POSTs every request there with
    the key, gets back only [d_mlp]-sized moments (and the [layers, d_mlp] DLA), and its statistics and ranking
    equal a local ``--backend nnsight`` run's bit for bit."""
    planted_dir, _ = planted_tiny
    env = {**os.environ, "HF_HUB_CACHE": str(hub_cache), "NDIF_API_KEY": KEY, "NNSIGHT_CONFIG": str(tmp_path / "no")}
    with FakeNDIF(deployed) as ndif:
        env["NDIF_HOST"] = ndif.url
        result = subprocess.run(
            [str(Path(sys.executable).parent / "interp"),
             *diff_args(REPO_ID, planted_dir, tmp_path / "remote", "--backend", "nnsight", "--remote")],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert ndif.requests and {request["path"] for request in ndif.requests} == {"/request"}
    assert all(request["headers"].get("ndif-api-key") == KEY for request in ndif.requests)
    assert all(f'"repo_id": "{REPO_ID}"' in request["metadata"]["model_key"] for request in ndif.requests)
    assert len(ndif.saved) == len(ndif.requests) >= 3  # the DLA, then at least one batch per base half
    for saved in ndif.saved:
        if set(saved) == {"dla"}:
            assert saved["dla"].shape == (3, 128)
            continue
        assert set(saved) == {"moments", "onset"} and saved["onset"].dim() == 0
        for n, *tensors in saved["moments"]:
            assert isinstance(n, int) and all(t.shape == (128,) for t in tensors)

    assert main(diff_args(tiny_llama_dir, planted_dir, tmp_path / "local", "--backend", "nnsight")) == 0
    remote_stats, local_stats = (load_stats(tmp_path / run / "stats.safetensors") for run in ("remote", "local"))
    for name in ("base", "base_half_a", "base_half_b", "finetuned"):
        for field in ("count", "mean", "m2", "active", "max"):
            assert torch.equal(getattr(remote_stats[name], field), getattr(local_stats[name], field)), (name, field)
    csv_remote, csv_local = ((tmp_path / run / "neurons.csv").read_text() for run in ("remote", "local"))
    assert csv_remote == csv_local
    summary = json.loads((tmp_path / "remote" / "summary.json").read_text())
    assert summary["models"]["base"]["fingerprint"] == f"ndif:{REPO_ID}" and summary["config"]["remote"]
    assert not (tmp_path / "remote" / "profiles.json").exists()


@pytest.mark.parametrize(
    "server, fragment",
    [
        (dict(refuse="model test-org/tiny-llama is not deployed"), "answered HTTP 503: model test-org/tiny-llama"),
        (dict(job_error="CUDA out of memory"), "could not run the request: RuntimeError: CUDA out of memory"),
    ],
)
def test_server_error_is_exit_2(ndif_env, capsys, tiny_llama_dir, tmp_path, server, fragment):
    with FakeNDIF(**server) as ndif:
        ndif_env(ndif.url)
        message = refusal(capsys, diff_args(REPO_ID, tiny_llama_dir, tmp_path / "run", "--backend", "nnsight",
                                            "--remote"))  # fmt: skip
    assert len(ndif.requests) == 1 and ndif.requests[0]["headers"]["ndif-api-key"] == KEY
    assert f"NDIF at {ndif.url}" in message and fragment in message
    assert not (tmp_path / "run").exists()


def test_unreachable_host_is_exit_2(ndif_env, capsys, tiny_llama_dir, tmp_path):
    with socket.socket() as sock:  # a loopback port that nobody listens on
        sock.bind(("127.0.0.1", 0))
        host = f"http://127.0.0.1:{sock.getsockname()[1]}"
    ndif_env(host)
    message = refusal(capsys, diff_args(tiny_llama_dir, REPO_ID, tmp_path / "run", "--backend", "nnsight", "--remote"))
    assert f"cannot reach NDIF at {host}" in message


def test_missing_key_is_exit_2(ndif_env, capsys, monkeypatch, tmp_path):
    from nnsight import CONFIG

    monkeypatch.delenv("NDIF_API_KEY")
    monkeypatch.setattr(CONFIG.API, "APIKEY", None)
    message = refusal(capsys, diff_args(REPO_ID, REPO_ID, tmp_path / "run", "--backend", "nnsight", "--remote"))
    assert "NDIF API key" in message and "NDIF_API_KEY" in message


@pytest.mark.parametrize(
    "extra, world, fragment",
    [([], "1", "add --backend nnsight"), (["--backend", "nnsight"], "2", "without torchrun")],
)
def test_remote_needs_nnsight_in_one_process(ndif_env, capsys, monkeypatch, tmp_path, extra, world, fragment):
    monkeypatch.setenv("WORLD_SIZE", world)
    message = refusal(capsys, diff_args(REPO_ID, REPO_ID, tmp_path / "run", "--remote", *extra))
    assert fragment in message


@pytest.mark.parametrize(
    "sides, extra, fragment",
    [
        (("test-org/not-cached", "local"), [], "not in the local Hugging Face cache"),
        (("local", "local"), [], "neither --base nor --finetuned"),
        (("local", REPO_ID), ["--generate", "1"], "needs a local --finetuned"),
        ((REPO_ID, "adapter"), [], "NDIF cannot apply a local adapter"),
    ],
)
def test_sides_that_cannot_run_remotely(ndif_env, capsys, tiny_llama_dir, tmp_path, sides, extra, fragment):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": REPO_ID}))
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    base, finetuned = ({"local": tiny_llama_dir, "adapter": adapter}.get(side, side) for side in sides)
    ndif_env("https://ndif.invalid")  # never contacted: refused before any request
    argv = diff_args(base, finetuned, tmp_path / "run", "--backend", "nnsight", "--remote", *extra)
    assert fragment in refusal(capsys, argv)


def test_a_request_that_never_finishes_meets_the_deadline(ndif_env, capsys, tiny_llama_dir, tmp_path):
    with FakeNDIF(stall=True) as ndif:
        ndif_env(ndif.url)
        argv = diff_args(REPO_ID, tiny_llama_dir, tmp_path / "run", "--backend", "nnsight", "--remote",
                         "--remote-timeout", "1.5")  # fmt: skip
        started = time.monotonic()
        message = refusal(capsys, argv)
    assert f"NDIF at {ndif.url} did not finish a request within 1.5 s (--remote-timeout)" in message
    assert len(ndif.requests) == 1 and time.monotonic() - started < 60  # gave up instead of polling for ever


@pytest.mark.parametrize(
    "host, fragment",
    [
        ("http://ndif.example.org", "is plain http and would receive the API key unencrypted"),
        ("ftp://ndif.example.org", "must be an http:// or https:// URL"),
    ],
)
def test_a_key_is_never_sent_over_plain_http_to_another_machine(ndif_env, capsys, tmp_path, host, fragment):
    ndif_env(host)
    message = refusal(capsys, diff_args(REPO_ID, REPO_ID, tmp_path / "run", "--backend", "nnsight", "--remote"))
    assert fragment in message
