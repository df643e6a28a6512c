#!/usr/bin/env python3
"""A stand-in for the `ollama` binary of ollama/ollama v0.12.6, to run the Ollama pod's own commands.

Standard library only (it runs inside the pod emulation, drill/ollama_pod.py, with the system
python3). What it keeps from the real one, with the upstream file it follows:
- the on-disk layout under $OLLAMA_MODELS: `manifests/<host>/<namespace>/<model>/<tag>` and
  `blobs/sha256-<hex>`; a model's digest is the sha256 of its manifest file (server/manifest.go);
- `serve` on $OLLAMA_HOST (envconfig/config.go Host), with /api/tags, /api/show, /api/pull,
  /api/create, /api/generate, /api/chat, /api/embed, /api/embeddings, /api/ps, /api/version
  (server/routes.go), each request logged as a `[GIN]` line with its status, method and path;
- capabilities (server/images.go Model.Capabilities): a model whose weights carry `pooling_type`
  (a GGUF key) is an embedding model, any other a completion model. /api/generate and /api/chat ask
  for completion after their unload branch and before loading (GenerateHandler, ChatHandler via
  scheduleRunner): an embedding model gets 400 `"<name>" does not support generate` (or chat) and
  nothing loads; /api/embed and /api/embeddings ask for none, and with no input only load the model
  (EmbedHandler: `embeddings: []`; EmbeddingsHandler: `embedding: []`);
- `pull` asks the registry for the manifest first, even when the model is present, then fetches the
  missing blobs, verifies them and writes the manifest last (server/images.go PullModel);
- `create` FROM a local model pulls nothing, and merges PARAMETERs over the base model's
  (server/create.go, server/model.go parseFromModel, setParameters);
- the scheduler: a request loads the runner with the model's parameters under the request's options
  (server/routes.go modelOptions); a runner loaded with other runner options (num_thread, num_ctx,
  num_batch, num_gpu, main_gpu, use_mmap) is reloaded (server/sched.go needsReload); without
  num_thread the runner takes one thread per host core, whatever the container's CPU quota
  (llm/server.go); keep_alive: the request's, else OLLAMA_KEEP_ALIVE, else 5m; negative is forever;
  0 unloads once idle; an empty prompt only loads, and with keep_alive 0 unloads (GenerateHandler);
  at most OLLAMA_MAX_LOADED_MODELS runners, unset meaning 3 for the one CPU device
  (processPending, defaultModelsPerGPU): a model beyond that unloads the runner with the shortest
  keep-alive, then the lowest model path (findRunnerToUnload, ByDurationAndName); `ps` lists every
  loaded runner, embedding models too (PsHandler);
- the CLI: `list`, `ps`, `show`, `pull`, `run`, `stop`, `create` as cmd/cmd.go prints and exits;
  `run` reads stdin when it is not a terminal and joins it before the arguments with spaces
  (RunHandler), so `ollama run m ""` in a probe sends the prompt " "; `run` has no embedding path
  in 0.12.6 (RunHandler always calls /api/generate), and no command calls /api/embed.
Where it differs: a runner load takes $OLLAMA_STANDIN_LOAD_SECONDS (default 0.5) instead of reading
a GGUF, and every model fits in memory (the real scheduler also unloads one when the node's free
memory, /proc/meminfo, cannot hold the next); a runner is never busy when it is picked to unload;
an answer is a few words, an embedding four numbers; each runner load is logged as `runner loaded model=… threads=…`
(a test reads the thread count there, as an operator reads the real runner's command line in the
log); registry.ollama.ai is $OLLAMA_STANDIN_REGISTRY (an http://127.0.0.1:<port> URL inside the
pod's own network namespace), served by `registry <store> <port>` from a directory of
`<namespace>/<model>/<tag>.json` manifests and `blobs/sha256-<hex>` files. It never listens
beyond loopback: an OLLAMA_HOST of 0.0.0.0 is served on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VERSION = "0.12.6"
DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG = "registry.ollama.ai", "library", "latest"
RUNNER_OPTIONS = ("num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread")
DEFAULT_RUNNER = {"num_ctx": 4096, "num_batch": 512, "num_gpu": -1, "main_gpu": 0, "use_mmap": None, "num_thread": 0}
INT_PARAMETERS = {"num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "num_keep", "seed", "num_predict"}
FLOAT_PARAMETERS = {"temperature", "top_p", "min_p", "typical_p", "repeat_penalty", "top_k"}
PARAMS_MEDIA = "application/vnd.ollama.image.params"
MODEL_MEDIA = "application/vnd.ollama.image.model"
POOLING_KEY = b"pooling_type"  # in a GGUF's key-values: an embedding model (server/images.go Capabilities)
MODELS_PER_DEVICE = 3  # server/sched.go defaultModelsPerGPU; a CPU is one device (discover/gpu.go)


# ---- names and files (types/model/name.go, server/modelpath.go, server/manifest.go) ----
def parse_name(name: str) -> tuple[str, str, str, str]:
    rest, tag = name, DEFAULT_TAG
    if rest.rfind(":") > rest.rfind("/"):
        rest, tag = rest.rsplit(":", 1)
    parts = rest.split("/")
    model = parts[-1]
    namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NAMESPACE
    host = parts[-3].split("://", 1)[-1] if len(parts) >= 3 else DEFAULT_HOST
    return host, namespace, model, tag


def short_name(name: str) -> str:
    host, namespace, model, tag = parse_name(name)
    if host != DEFAULT_HOST:
        return f"{host}/{namespace}/{model}:{tag}"
    return f"{model}:{tag}" if namespace == DEFAULT_NAMESPACE else f"{namespace}/{model}:{tag}"


def models_dir() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models")


def manifest_file(name: str) -> Path:
    return models_dir() / "manifests" / Path(*parse_name(name))


def blob_file(digest: str) -> Path:
    return models_dir() / "blobs" / digest.replace(":", "-")


def read_manifest(name: str) -> tuple[dict, str] | None:
    """(manifest, hex digest of the file) or None when the model is not on disk."""
    path = manifest_file(name)
    if not path.is_file():
        return None
    data = path.read_bytes()
    return json.loads(data), hashlib.sha256(data).hexdigest()


def model_parameters(manifest: dict) -> dict:
    for layer in manifest["layers"]:
        if layer["mediaType"] == PARAMS_MEDIA:
            return json.loads(blob_file(layer["digest"]).read_bytes())
    return {}


def capabilities(manifest: dict) -> list[str]:
    """Model.Capabilities, from the weights alone: embedding with a pooling type, else completion."""
    weights = next(layer for layer in manifest["layers"] if layer["mediaType"] == MODEL_MEDIA)
    return ["embedding"] if POOLING_KEY in blob_file(weights["digest"]).read_bytes() else ["completion"]


def write_blob(data: bytes) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = blob_file(digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": digest, "size": len(data)}


def host_and_port(default_port: int = 11434) -> tuple[str, int]:
    """envconfig.Host: OLLAMA_HOST as [scheme://]host[:port], 127.0.0.1:11434 by default."""
    raw = os.environ.get("OLLAMA_HOST", "").strip() or "127.0.0.1"
    raw = raw.split("://", 1)[-1]
    host, _, port = raw.rpartition(":") if ":" in raw else (raw, "", str(default_port))
    return host or "127.0.0.1", int(port or default_port)


def go_duration_seconds(value) -> float:
    """keep_alive as api.Duration takes it: a number of seconds, or a Go duration string."""
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"-?[0-9.]+", text):
        return float(text)
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    sign = -1 if text.startswith("-") else 1
    total = sum(float(n) * units[u] for n, u in re.findall(r"([0-9.]+)(ns|us|ms|s|m|h)", text))
    return sign * total


# ---- the registry stand-in (registry.ollama.ai's /v2 API, from a directory) ----
class RegistryHandler(BaseHTTPRequestHandler):
    store: Path

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        match = re.fullmatch(r"/v2/([^/]+)/([^/]+)/(manifests|blobs)/([^/]+)", self.path)
        path = None
        if match and match[3] == "manifests":
            path = self.store / match[1] / match[2] / f"{match[4]}.json"
        elif match:
            path = self.store / "blobs" / match[4].replace(":", "-")
        if path is None or not path.is_file():
            self.send_response(404)
            self.end_headers()
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def registry_get(mp: tuple[str, str, str, str], kind: str, ref: str) -> bytes:
    base = (
        os.environ.get("OLLAMA_STANDIN_REGISTRY", "https://" + mp[0]) if mp[0] == DEFAULT_HOST else "https://" + mp[0]
    )
    url = f"{base}/v2/{mp[1]}/{mp[2]}/{kind}/{ref}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()
    except urllib.error.HTTPError as error:
        raise RuntimeError("file does not exist" if error.code == 404 else f"{error.code}") from error
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise RuntimeError(f'Get "{url}": {reason}') from error


# ---- the server ----
class Runner:
    def __init__(self, name: str, digest: str, options: dict, threads: int) -> None:
        self.name, self.digest, self.options, self.threads = name, digest, options, threads
        self.session = 300.0
        self.expires_at: float | None = None
        self.timer: threading.Timer | None = None


class Scheduler:
    """server/sched.go, reduced to one model path at a time: load, reuse, reload, expire."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loaded: dict[str, Runner] = {}  # by model blob path, as sched.go keys `loaded`
        self.load_seconds = float(os.environ.get("OLLAMA_STANDIN_LOAD_SECONDS", "0.5"))

    def default_session(self) -> float:
        value = os.environ.get("OLLAMA_KEEP_ALIVE")
        return go_duration_seconds(value) if value else 300.0

    @staticmethod
    def max_runners() -> int:
        """OLLAMA_MAX_LOADED_MODELS; unset or 0: 3 per device, and the CPU is one (processPending)."""
        return int(os.environ.get("OLLAMA_MAX_LOADED_MODELS") or 0) or MODELS_PER_DEVICE

    def _make_room(self) -> None:
        """findRunnerToUnload: the shortest keep-alive first (a negative one is forever), then the
        lowest model path."""
        if len(self.loaded) < self.max_runners():
            return
        forever = math.inf

        def order(item: tuple[str, Runner]) -> tuple[float, str]:
            return (item[1].session if item[1].session >= 0 else forever, item[0])

        key, _ = min(self.loaded.items(), key=order)
        self._unload(key)

    def run(self, name: str, manifest: dict, digest: str, request_options: dict, keep_alive) -> Runner:
        options = {**DEFAULT_RUNNER, **model_parameters(manifest), **(request_options or {})}
        runner_options = {key: options.get(key) for key in RUNNER_OPTIONS}
        key = next(layer["digest"] for layer in manifest["layers"] if layer["mediaType"] == MODEL_MEDIA)
        session = go_duration_seconds(keep_alive) if keep_alive is not None else self.default_session()
        with self.lock:
            runner = self.loaded.get(key)
            if runner is None:
                self._make_room()
            if runner is None or runner.options != runner_options:
                self._unload(key)
                time.sleep(self.load_seconds)
                threads = runner_options["num_thread"] or os.cpu_count() or 1  # GetOptimalThreadCount
                runner = Runner(short_name(name), digest, runner_options, threads)
                self.loaded[key] = runner
                log(f"runner loaded model={runner.name} threads={threads}")
            if runner.timer is not None:
                runner.timer.cancel()
            runner.session = session
        return runner

    def finished(self, runner: Runner) -> None:
        with self.lock:
            key = next((k for k, r in self.loaded.items() if r is runner), None)
            if key is None:
                return
            if runner.session == 0:
                self._unload(key)
            elif runner.session > 0:
                runner.expires_at = time.time() + runner.session
                runner.timer = threading.Timer(runner.session, self.expire, (key, runner))
                runner.timer.daemon = True
                runner.timer.start()
            else:
                runner.expires_at = None

    def expire(self, key: str, runner: Runner) -> None:
        with self.lock:
            if self.loaded.get(key) is runner:
                self._unload(key)

    def unload_model(self, manifest: dict) -> None:
        with self.lock:
            for layer in manifest["layers"]:
                self._unload(layer["digest"])

    def _unload(self, key: str) -> None:
        runner = self.loaded.pop(key, None)
        if runner is not None:
            if runner.timer is not None:
                runner.timer.cancel()
            log(f"runner unloaded model={runner.name}")


SCHEDULER = Scheduler()


def log(message: str) -> None:
    print(f'time={time.strftime("%Y-%m-%dT%H:%M:%S")} level=INFO msg="{message}"', file=sys.stderr, flush=True)


class ServerHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def log_request(self, code="-", size="-") -> None:
        """gin's logger, as the server prints each request: status, client, method and path."""
        when = time.strftime("%Y/%m/%d - %H:%M:%S")
        client = self.client_address[0]
        print(
            f'[GIN] {when} | {int(code):3d} | {client:>15} | {self.command:<7} "{self.path}"',
            file=sys.stderr,
            flush=True,
        )

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, lines) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for line in lines:
            data = (json.dumps(line) + "\n").encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        if self.path == "/":
            data = b"Ollama is running"
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif self.path == "/api/version":
            self._json(200, {"version": VERSION})
        elif self.path == "/api/tags":
            self._json(200, {"models": list_models()})
        elif self.path == "/api/ps":
            with SCHEDULER.lock:
                runners = list(SCHEDULER.loaded.values())
            models = [
                {
                    "name": r.name,
                    "model": r.name,
                    "digest": r.digest,
                    "size": 1,
                    "size_vram": 0,
                    "context_length": r.options["num_ctx"],
                    "expires_at": "2318-01-01T00:00:00Z"
                    if r.expires_at is None
                    else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.expires_at)),
                }
                for r in runners
            ]
            self._json(200, {"models": models})
        else:
            self._json(404, {"error": "404 page not found"})

    def do_POST(self) -> None:
        body = self._body()
        handler = {
            "/api/show": self.show,
            "/api/pull": self.pull,
            "/api/create": self.create,
            "/api/generate": self.generate,
            "/api/chat": self.chat,
            "/api/embed": self.embed,
            "/api/embeddings": self.embeddings,
        }.get(self.path)
        if handler is None:
            self._json(404, {"error": "404 page not found"})
        else:
            handler(body)

    def show(self, body: dict) -> None:
        name = body.get("model") or body.get("name") or ""
        found = read_manifest(name)
        if found is None:
            self._json(404, {"error": f"model '{name}' not found"})
            return
        parameters = model_parameters(found[0])
        text = "\n".join(f"{k:<30} {v}" for k, v in parameters.items())
        self._json(200, {"modelfile": f"FROM {name}\n", "parameters": text, "capabilities": capabilities(found[0])})

    def pull(self, body: dict) -> None:
        self._stream(pull_model(body.get("model") or body.get("name") or ""))

    def create(self, body: dict) -> None:
        self._stream(create_model(body.get("model") or body.get("name") or "", body))

    def _model(self, name: str) -> tuple[dict, str] | None:
        found = read_manifest(name)
        if found is None:
            self._json(404, {"error": f"model '{name}' not found"})
        return found

    def generate(self, body: dict) -> None:
        name, prompt = body.get("model", ""), body.get("prompt", "")
        found = self._model(name)
        if found is None:
            return
        keep_alive = body.get("keep_alive")
        if prompt == "" and keep_alive is not None and go_duration_seconds(keep_alive) == 0:
            SCHEDULER.unload_model(found[0])
            self._json(200, {"model": name, "response": "", "done": True, "done_reason": "unload"})
            return
        if "completion" not in capabilities(found[0]):  # scheduleRunner's CheckCapabilities, before any load
            self._json(400, {"error": f'"{name}" does not support generate'})
            return
        runner = SCHEDULER.run(name, found[0], found[1], body.get("options"), keep_alive)
        try:
            if prompt == "":
                self._json(200, {"model": name, "response": "", "done": True, "done_reason": "load"})
            elif body.get("stream") is False:
                self._json(200, {"model": name, "response": "[ollama] w1 w2", "done": True, "done_reason": "stop"})
            else:
                words = ["[ollama]", " w1", " w2"]
                lines = [{"model": name, "response": w, "done": False} for w in words]
                self._stream([*lines, {"model": name, "response": "", "done": True, "done_reason": "stop"}])
        finally:
            SCHEDULER.finished(runner)

    def chat(self, body: dict) -> None:
        name, messages = body.get("model", ""), body.get("messages") or []
        found = self._model(name)
        if found is None:
            return
        keep_alive = body.get("keep_alive")
        if not messages and keep_alive is not None and go_duration_seconds(keep_alive) == 0:
            SCHEDULER.unload_model(found[0])
            self._json(200, {"model": name, "message": {"role": "assistant", "content": ""}, "done": True})
            return
        if "completion" not in capabilities(found[0]):
            self._json(400, {"error": f'"{name}" does not support chat'})
            return
        runner = SCHEDULER.run(name, found[0], found[1], body.get("options"), keep_alive)
        try:
            done = {"model": name, "done": True, "done_reason": "stop" if messages else "load"}
            self._json(200, {**done, "message": {"role": "assistant", "content": "[ollama] w1 w2" if messages else ""}})
        finally:
            SCHEDULER.finished(runner)

    def embed(self, body: dict) -> None:
        """EmbedHandler: the input checked, the model loaded (no capability asked), then one vector per
        input; no input only loads."""
        name, given = body.get("model", ""), body.get("input")
        if isinstance(given, str):
            inputs = [given] if given else []
        elif isinstance(given, list) and all(isinstance(item, str) for item in given):
            inputs = given
        elif given is None:
            inputs = []
        else:
            self._json(400, {"error": "invalid input type"})
            return
        found = self._model(name)
        if found is None:
            return
        runner = SCHEDULER.run(name, found[0], found[1], body.get("options"), body.get("keep_alive"))
        try:
            self._json(200, {"model": name, "embeddings": [[0.1, 0.2, 0.3, 0.4] for _ in inputs]})
        finally:
            SCHEDULER.finished(runner)

    def embeddings(self, body: dict) -> None:
        """EmbeddingsHandler (the older endpoint): "an empty request loads the model"."""
        name, prompt = body.get("model", ""), body.get("prompt", "")
        found = self._model(name)
        if found is None:
            return
        runner = SCHEDULER.run(name, found[0], found[1], body.get("options"), body.get("keep_alive"))
        try:
            self._json(200, {"embedding": [0.1, 0.2, 0.3, 0.4] if prompt else []})
        finally:
            SCHEDULER.finished(runner)


def list_models() -> list[dict]:
    root = models_dir() / "manifests"
    models = []
    for path in sorted(root.glob("*/*/*/*")) if root.is_dir() else []:
        data = path.read_bytes()
        manifest = json.loads(data)
        host, namespace, model, tag = path.relative_to(root).parts
        name = short_name(f"{host}/{namespace}/{model}:{tag}")
        size = sum(layer["size"] for layer in [*manifest["layers"], manifest["config"]])
        models.append({"name": name, "model": name, "digest": hashlib.sha256(data).hexdigest(), "size": size})
    return models


def pull_model(name: str):
    mp = parse_name(name)
    yield {"status": "pulling manifest"}
    try:
        manifest = json.loads(registry_get(mp, "manifests", mp[3]))
        for layer in [*manifest["layers"], manifest["config"]]:
            path = blob_file(layer["digest"])
            if not path.is_file():  # downloadBlob: a blob already on disk is a cache hit
                data = registry_get(mp, "blobs", layer["digest"])
                if "sha256:" + hashlib.sha256(data).hexdigest() != layer["digest"]:
                    raise RuntimeError("digest mismatch")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            yield {"status": f"pulling {layer['digest'][7:19]}", "digest": layer["digest"], "total": layer["size"]}
    except RuntimeError as error:
        yield {"error": f"pull model manifest: {error}"}
        return
    yield {"status": "verifying sha256 digest"}
    yield {"status": "writing manifest"}
    path = manifest_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(json.dumps(manifest, separators=(",", ":")).encode())  # json.Marshal
    yield {"status": "success"}


def create_model(name: str, request: dict):
    source = request.get("from")
    if not source:
        yield {"error": "neither 'from' or 'files' was specified"}
        return
    found = read_manifest(source)
    if found is None:  # parseFromModel pulls a base model that is not on disk
        for line in pull_model(source):
            if "error" in line:
                yield line
                return
        found = read_manifest(source)
    base = found[0]
    parameters = {**model_parameters(base), **(request.get("parameters") or {})}
    layers = [layer for layer in base["layers"] if layer["mediaType"] != PARAMS_MEDIA]
    if parameters:
        layers.append({"mediaType": PARAMS_MEDIA, **write_blob(json.dumps(parameters).encode())})
    manifest = {"schemaVersion": 2, "mediaType": base["mediaType"], "config": base["config"], "layers": layers}
    path = manifest_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((json.dumps(manifest, separators=(",", ":")) + "\n").encode())
    yield {"status": "writing manifest"}
    yield {"status": "success"}


def serve() -> int:
    host, port = host_and_port()
    bind = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # never beyond loopback
    server = ThreadingHTTPServer((bind, port), ServerHandler)
    server.daemon_threads = True
    log(f"Listening on {host}:{port} (version {VERSION})")
    server.serve_forever()
    return 0


def serve_registry(store: str, port: str) -> int:
    RegistryHandler.store = Path(store)
    ThreadingHTTPServer(("127.0.0.1", int(port)), RegistryHandler).serve_forever()
    return 0


# ---- the CLI (cmd/cmd.go) ----
class CommandError(Exception):
    pass


def _connection() -> http.client.HTTPConnection:
    host, port = host_and_port()
    return http.client.HTTPConnection(host, port, timeout=600)


def request(method: str, path: str, body: dict | None = None):
    """One API call; a JSON object, or the list of streamed lines."""
    connection = _connection()
    try:
        connection.request(method, path, json.dumps(body) if body is not None else None)
        response = connection.getresponse()
        data = response.read()
    except OSError as error:
        raise CommandError("could not connect to ollama app, is it running?") from error
    finally:
        connection.close()
    lines = [json.loads(line) for line in data.splitlines() if line.strip()]
    if response.status >= 400:
        raise CommandError(lines[0].get("error", response.reason) if lines else response.reason)
    for line in lines:
        if "error" in line:
            raise CommandError(line["error"])
    return lines[0] if len(lines) == 1 else lines


def table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        print("    ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def cmd_list(args: list[str]) -> None:
    models = request("GET", "/api/tags")["models"]
    table(["NAME", "ID", "SIZE", "MODIFIED"], [[m["name"], m["digest"][:12], str(m["size"]), "now"] for m in models])


def cmd_ps(args: list[str]) -> None:
    models = request("GET", "/api/ps")["models"]
    rows = [[m["name"], m["digest"][:12], "1 B", "100% CPU", str(m["context_length"]), "Forever"] for m in models]
    table(["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"], rows)


def cmd_show(args: list[str]) -> None:
    info = request("POST", "/api/show", {"model": args[0]})
    print(info["parameters"] if "--parameters" in args else info["modelfile"])


def cmd_pull(args: list[str]) -> None:
    for line in request("POST", "/api/pull", {"model": args[0]}):
        print(line.get("status", ""), file=sys.stderr)


def cmd_create(args: list[str]) -> None:
    name, modelfile = args[0], Path(args[args.index("-f") + 1] if "-f" in args else "Modelfile")
    if not modelfile.is_file():
        raise CommandError("specified Modelfile wasn't found")
    create = {"model": name, "parameters": {}}
    for line in modelfile.read_text().splitlines():
        command, _, value = line.strip().partition(" ")
        if command.upper() == "FROM":
            if (modelfile.parent / value).exists():
                raise CommandError("the stand-in creates only FROM a model name")
            create["from"] = value
        elif command.upper() == "PARAMETER":
            key, _, text = value.partition(" ")
            text = text.strip()
            create["parameters"][key] = (
                int(text) if key in INT_PARAMETERS else (float(text) if key in FLOAT_PARAMETERS else text)
            )
    request("POST", "/api/create", create)


def cmd_run(args: list[str]) -> None:
    keep_alive = None
    if "--keepalive" in args:
        at = args.index("--keepalive")
        keep_alive, args = args[at + 1], args[:at] + args[at + 2 :]
    name, prompts = args[0], args[1:]
    if not sys.stdin.isatty():
        prompts = [sys.stdin.read(), *prompts]
    elif not prompts:
        raise CommandError("the stand-in has no interactive mode")
    try:
        request("POST", "/api/show", {"model": name})
    except CommandError as error:
        if "not found" not in str(error):
            raise
        cmd_pull([name])
    body = {"model": name, "prompt": " ".join(prompts)}
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    answer = request("POST", "/api/generate", body)
    lines = answer if isinstance(answer, list) else [answer]
    text = "".join(line.get("response", "") for line in lines)
    if text:
        print(text + "\n")


def cmd_stop(args: list[str]) -> None:
    try:
        request("POST", "/api/generate", {"model": args[0], "keep_alive": 0})
    except CommandError as error:
        raise CommandError(f'couldn\'t find model "{args[0]}" to stop') from error


COMMANDS = {
    "list": cmd_list,
    "ls": cmd_list,
    "ps": cmd_ps,
    "show": cmd_show,
    "pull": cmd_pull,
    "create": cmd_create,
    "run": cmd_run,
    "stop": cmd_stop,
}


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        return serve()
    if argv[:1] == ["registry"]:
        return serve_registry(*argv[1:3])
    if not argv or argv[0] not in COMMANDS:
        print(f"Error: unknown command {argv[:1]} for the stand-in", file=sys.stderr)
        return 1
    try:
        COMMANDS[argv[0]](argv[1:])
    except CommandError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
