"""Check that the teacher answers before a stage sends it thousands of requests.

A run pointed at a server that is not up, or with a wrong key, should stop in a second with one
clear line, not retry every request into the failure ledger.
"""

from __future__ import annotations

import os

from datagen.errors import TeacherError
from datagen.teacher.config import TeacherConfig


def check_teacher(config: TeacherConfig, *, timeout: float = 10.0) -> None:
    """Ask the endpoint for its model list (`GET /models`, which OpenAI, vLLM, Ollama, llama.cpp and
    DeepSeek all serve). Raise TeacherError when it cannot be reached or refuses the key; an
    endpoint without a model list (404) or an unknown model is left to the engine's own errors.
    A key that cannot be sent at all (a space, a newline, non-ASCII) raises ConfigError first."""
    import openai

    if getattr(config, "mode", "online") == "batch" and config.batch.transport == "files":
        return  # rounds go to files for a self-hosted `vllm run-batch`: no endpoint to ask
    key = config.api_key()
    client = openai.OpenAI(base_url=config.base_url, api_key=key, max_retries=1, timeout=timeout)
    try:
        client.models.list()
    except openai.APIConnectionError as exc:
        hint = (
            " Start the embedded teacher with `datagen serve-teacher` (or pass --serve-teacher to "
            "`datagen run`)."
            if "127.0.0.1" in config.base_url or "localhost" in config.base_url
            else ""
        )
        raise TeacherError(
            f"cannot reach the teacher at {config.base_url}: {type(exc.__cause__ or exc).__name__}.{hint}"
        ) from None
    except openai.AuthenticationError:
        where = (
            f"${config.api_key_env} is not set"
            if not os.environ.get(config.api_key_env)
            else f"the key in ${config.api_key_env} was refused"
        )
        raise TeacherError(f"the teacher at {config.base_url} refused the request: {where}.") from None
    except openai.PermissionDeniedError:
        raise TeacherError(
            f"the teacher at {config.base_url} denied access with the key in ${config.api_key_env}."
        ) from None
    except (openai.NotFoundError, openai.APIStatusError):
        return  # no model list here; the calls themselves will tell
    finally:
        client.close()
