"""Part of the former datagen/publish.py (see ARCHITECTURE.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from datagen.errors import PublishError
from datagen.publish.build import BUILD_FILE, REPO_ID_RE, DatasetFolder, _log, _read_json
from datagen.publish.card import split_card
from datagen.publish.redact import NOT_A_LICENSE
from datagen.publish.verify import check_dataset_folder

# ------------------------------------------------------------------------------------ upload


def _resolve_token(token: str | None) -> str:
    if token:
        return token
    from huggingface_hub import get_token

    found = get_token()
    if not found:
        raise PublishError(
            "no Hugging Face token: set HF_TOKEN or run `hf auth login` (datagen never stores it)"
        )
    return found


def publish(
    folder: str | os.PathLike | DatasetFolder,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload a checked dataset folder to the Hub dataset repo `repo_id`, in one commit; return its URL.

    Refuses (PublishError, nothing sent) a folder whose card has no license or that fails
    `check_dataset_folder`. Creates the repo if needed (`private` applies to a new repo; asking for
    a private upload to an existing public repo is refused). Files a previous publish left under
    `data/`, `moss/` or `datagen/` that this folder no longer has are deleted in the same commit, so
    the configs' globs never pick up stale shards. The token comes from `token`, HF_TOKEN or the
    user's Hugging Face login, and is never written anywhere.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from datagen import __version__

    path = folder.path if isinstance(folder, DatasetFolder) else Path(folder)
    if not repo_id or not REPO_ID_RE.match(repo_id):
        raise PublishError(f"repo id must look like ORG/NAME, got {repo_id!r}")
    card = path / "README.md"
    if not card.exists():
        raise PublishError(
            f"{path}: not a dataset folder (no README.md); build it with `datagen publish --dry-run`"
        )
    meta, _ = split_card(card.read_text(encoding="utf-8"), path=str(card))
    if not meta.get("license") or str(meta["license"]).lower() in NOT_A_LICENSE:
        raise PublishError(
            f"{card}: refusing to upload a dataset without a license. Set `publish.license` in the "
            "run config or pass --license (e.g. --license cc-by-4.0); datagen does not pick one"
        )
    problems = check_dataset_folder(path)
    if problems:
        listing = "\n  ".join(problems[:20]) + (
            f"\n  ... ({len(problems) - 20} more)" if len(problems) > 20 else ""
        )
        raise PublishError(
            f"{path}: refusing to upload, the folder failed {len(problems)} check(s):\n  {listing}"
        )
    build = _read_json(path / BUILD_FILE)
    if build.get("repo_id") and build["repo_id"] != repo_id:
        _log(f"warning: the card was written for {build['repo_id']}, uploading to {repo_id}")

    api = HfApi(token=_resolve_token(token), library_name="datagen", library_version=__version__)
    local = sorted(
        p.relative_to(path).as_posix()
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    run = build.get("run") or {}
    message = commit_message or (
        f"datagen: publish run {run.get('name')} ({run.get('fingerprint')})"
        if run
        else f"datagen: publish {build.get('source', path.name)}"
    )
    counts = build.get("counts") or {}
    description = "\n".join(
        f"- {c}: " + ", ".join(f"{s} {n}" for s, n in splits.items()) for c, splits in counts.items()
    )
    try:
        repo_url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if private and not api.repo_info(repo_id, repo_type="dataset").private:
            raise PublishError(
                f"{repo_id} already exists and is public, but a private upload was asked for; "
                "make the repo private on the Hub first, or choose another repo id"
            )
        remote = api.list_repo_files(repo_id, repo_type="dataset")
        managed = ("data/", "moss/", "datagen/")
        ops: list[Any] = [
            CommitOperationDelete(path_in_repo=p)
            for p in remote
            if p.startswith(managed) and p not in set(local)
        ]
        ops += [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(path / rel)) for rel in local]
        _log(
            f"uploading {len(local)} files to {repo_id} in one commit"
            + (f" (deleting {len(ops) - len(local)} stale)" if len(ops) > len(local) else "")
        )
        api.create_commit(
            repo_id, ops, commit_message=message, commit_description=description, repo_type="dataset"
        )
    except PublishError:
        raise
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        hint = ""
        if status in (401, 403):
            hint = (
                " Check the token (HF_TOKEN or `hf auth login`): it needs write access to "
                f"{repo_id.split('/')[0]}."
            )
        raise PublishError(f"upload to {repo_id} failed: {str(exc).splitlines()[0]}.{hint}") from exc
    except Exception as exc:  # network errors, metadata the Hub rejects: one clear line, traceback in DEBUG
        raise PublishError(f"upload to {repo_id} failed: {type(exc).__name__}: {exc}") from exc
    return str(repo_url)
