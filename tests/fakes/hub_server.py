"""A small fake of the Hugging Face Hub's HTTP API, real enough for the real clients.

It serves, on 127.0.0.1, exactly the routes `huggingface_hub` (with `HF_HUB_DISABLE_XET=1`) and
`datasets.load_dataset` call to create a repo, upload a folder in one commit (preupload, the LFS
batch/upload/verify path, the ndjson commit) and read it back (repo info, tree, paths-info,
resolve with HEAD and byte ranges):

    POST /api/repos/create
    POST /api/validate-yaml
    GET  /api/whoami-v2
    GET  /api/{type}s/{repo}[/revision/{rev}]
    GET  /api/{type}s/{repo}/tree/{rev}[/{path}]?recursive=
    POST /api/{type}s/{repo}/paths-info/{rev}
    POST /api/{type}s/{repo}/preupload/{rev}
    POST /api/{type}s/{repo}/commit/{rev}
    POST /{prefix}{repo}.git/info/lfs/objects/batch
    PUT  /_lfs/upload/{oid}          POST /_lfs/verify
    HEAD|GET /{prefix}{repo}/resolve/{rev}/{path}

Each repo keeps every commit as a full snapshot (path -> blob), so `revision=<sha>` works. Errors
carry the `X-Error-Code` header the client maps to typed exceptions. Writes need the token in
`tokens`; private repos are invisible without it. Every request is logged in `FakeHub.requests`
so tests can assert what the client did (or did not) send.
"""

from __future__ import annotations

import base64
import datetime as dt
import fnmatch
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

#: The initial `.gitattributes` the Hub commits into a new repo (abridged): these paths go to LFS.
LFS_PATTERNS = ["*.parquet", "*.arrow", "*.bin", "*.safetensors", "*.gz", "*.zst", "*.tar", "*.zip"]
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS)
#: Regular files above this size must go through LFS, like on the real Hub.
MAX_REGULAR_SIZE = 10 * 1024 * 1024

TYPE_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(slots=True)
class Blob:
    """One file at one commit. LFS files keep their sha256; content lives in the LFS store."""

    size: int
    oid: str  # git blob id (of the pointer for LFS files, as on the Hub)
    content: bytes | None = None  # regular files
    sha256: str | None = None  # LFS files


@dataclass(slots=True)
class Commit:
    oid: str
    title: str
    description: str
    date: str
    files: dict[str, Blob]


@dataclass(slots=True)
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created: str
    commits: list[Commit] = field(default_factory=list)

    @property
    def head(self) -> Commit:
        return self.commits[-1]


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class FakeHub:
    """The Hub's state plus the HTTP server serving it. `start()` serves on a daemon thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: set[str] | None = None,
        user: str = "datagen-tester",
    ):
        self.tokens = set(tokens or ())
        self.user = user
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.RLock()
        self._commit_counter = 0
        self.httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        if self._thread is None:
            self._thread = threading.Thread(target=self.httpd.serve_forever, name="fake-hub", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread = None
        self.httpd.server_close()

    def reset(self) -> None:
        """Forget every repo, LFS object and logged request."""
        with self._lock:
            self.repos.clear()
            self.lfs.clear()
            self.requests.clear()

    # ---- inspection helpers for tests ----------------------------------------------------------

    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo | None:
        return self.repos.get((repo_type, repo_id))

    def commits(self, repo_id: str, repo_type: str = "dataset") -> list[Commit]:
        repo = self.repo(repo_id, repo_type)
        return list(repo.commits) if repo else []

    def read(self, repo_id: str, path: str, repo_type: str = "dataset", revision: str = "main") -> bytes:
        repo = self._get_repo(repo_type, repo_id, authorized=True)
        return self._content(self._commit(repo, revision).files[path])

    def requests_matching(self, method: str, pattern: str) -> list[str]:
        """Logged request paths for `method` whose path matches the regex `pattern`."""
        return [p for m, p in self.requests if m == method and re.search(pattern, p)]

    # ---- model -----------------------------------------------------------------------------------

    def _get_repo(self, repo_type: str, repo_id: str, *, authorized: bool) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not authorized):
            raise HubError(404, f"Repository not found: {repo_type} {repo_id}", "RepoNotFound")
        return repo

    def _commit(self, repo: Repo, revision: str) -> Commit:
        revision = unquote(revision)
        if revision == "main":
            return repo.head
        for c in repo.commits:
            if re.fullmatch(r"[0-9a-f]{7,40}", revision) and c.oid.startswith(revision):
                return c
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _content(self, blob: Blob) -> bytes:
        if blob.content is not None:
            return blob.content
        return self.lfs[blob.sha256]

    def _new_commit(self, repo: Repo, title: str, description: str, files: dict[str, Blob]) -> Commit:
        self._commit_counter += 1
        oid = hashlib.sha1(f"{repo.repo_id}:{self._commit_counter}:{title}".encode()).hexdigest()
        commit = Commit(oid=oid, title=title, description=description, date=_now(), files=files)
        repo.commits.append(commit)
        return commit

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> tuple[Repo, bool]:
        with self._lock:
            key = (repo_type, repo_id)
            if key in self.repos:
                return self.repos[key], False
            repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created=_now())
            data = GITATTRIBUTES.encode()
            self._new_commit(
                repo,
                "initial commit",
                "",
                {".gitattributes": Blob(size=len(data), oid=git_blob_oid(data), content=data)},
            )
            self.repos[key] = repo
            return repo, True

    def repo_url(self, repo: Repo) -> str:
        return f"{self.url}/{TYPE_PREFIX[repo.repo_type]}{repo.repo_id}"

    def upload_mode(self, repo: Repo, path: str, size: int, sample: bytes) -> str:
        attrs = (
            self._content(repo.head.files[".gitattributes"]).decode()
            if ".gitattributes" in repo.head.files
            else ""
        )
        patterns = [line.split()[0] for line in attrs.splitlines() if "filter=lfs" in line]
        name = path.rsplit("/", 1)[-1]
        if any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p) for p in patterns):
            return "lfs"
        if size > MAX_REGULAR_SIZE or b"\0" in sample:
            return "lfs"
        return "regular"

    def apply_commit(self, repo: Repo, lines: list[dict[str, Any]]) -> Commit:
        with self._lock:
            if not lines or lines[0].get("key") != "header":
                raise HubError(400, "the first line of a commit must be its header")
            header = lines[0]["value"]
            if not header.get("summary"):
                raise HubError(400, "commit summary is required")
            parent = header.get("parentCommit")
            if parent and not repo.head.oid.startswith(parent):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(repo.head.files)
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value") or {}
                path = value.get("path", "")
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise HubError(400, f"unsupported encoding for {path}")
                    data = base64.b64decode(value["content"])
                    files[path] = Blob(size=len(data), oid=git_blob_oid(data), content=data)
                elif key == "lfsFile":
                    sha = value.get("oid")
                    if sha not in self.lfs:
                        raise HubError(422, f"LFS object {sha} for {path} was never uploaded")
                    pointer = (
                        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\n"
                        f"size {len(self.lfs[sha])}\n"
                    ).encode()
                    files[path] = Blob(size=len(self.lfs[sha]), oid=git_blob_oid(pointer), sha256=sha)
                elif key == "deletedFile":
                    if path not in files:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del files[path]
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    for p in [p for p in files if p.startswith(prefix)]:
                        del files[p]
                else:
                    raise HubError(400, f"unknown commit operation {key!r}")
            return self._new_commit(repo, header["summary"], header.get("description", ""), files)

    def entries(self, repo: Repo, commit: Commit, base: str, recursive: bool) -> list[dict[str, Any]]:
        """Tree entries under `base` (files and folders), as /tree returns them."""
        base = base.strip("/")
        prefix = f"{base}/" if base else ""
        if base and base not in commit.files and not any(p.startswith(prefix) for p in commit.files):
            raise HubError(404, f"Entry not found: {base}", "EntryNotFound")
        out: dict[str, dict[str, Any]] = {}
        for path in sorted(commit.files):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix) :]
            parts = rest.split("/")
            for i in range(1, len(parts)):
                folder = prefix + "/".join(parts[:i])
                if recursive or i == 1:
                    out.setdefault(folder, self.folder_entry(folder))
                if not recursive:
                    break
            if recursive or len(parts) == 1:
                out[path] = self.file_entry(path, commit.files[path])
        return list(out.values())

    @staticmethod
    def file_entry(path: str, blob: Blob) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "oid": blob.oid, "size": blob.size, "path": path}
        if blob.sha256 is not None:
            entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": 134}
        return entry

    @staticmethod
    def folder_entry(path: str) -> dict[str, Any]:
        return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}

    def info(self, repo: Repo, commit: Commit) -> dict[str, Any]:
        card: dict[str, Any] | None = None
        if "README.md" in commit.files:
            text = self._content(commit.files["README.md"]).decode("utf-8", "replace")
            m = re.match(r"^---\n(.*?)\n---\n", text, re.S)
            card = yaml.safe_load(m.group(1)) if m else None
        return {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "cardData": card,
            "siblings": [{"rfilename": p} for p in sorted(commit.files)],
        }


# ---- HTTP layer ------------------------------------------------------------------------------------

_REPO = r"(?P<repo>[^/]+/[^/]+|[^/]+)"
_API_REPO = re.compile(r"^/api/(?P<type>models|datasets|spaces)/" + _REPO + r"(?P<rest>/.*)?$")
_LFS_BATCH = re.compile(r"^/(?P<prefix>datasets/|spaces/)?" + _REPO + r"\.git/info/lfs/objects/batch$")
_RESOLVE = re.compile(
    r"^/(?P<prefix>datasets/|spaces/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"
)
_PREFIX_TYPE = {"datasets/": "dataset", "spaces/": "space", None: "model"}
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


def _make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr logging
            pass

        # -- plumbing --

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                return b"".join(chunks)
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _json_body(self) -> Any:
            raw = self._body()
            return json.loads(raw) if raw else {}

        def _send(
            self,
            status: int,
            body: bytes = b"",
            headers: dict[str, str] | None = None,
            content_type: str = "application/json",
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(obj).encode(), headers)

        def _authorized(self) -> bool:
            auth = self.headers.get("Authorization", "")
            return auth.startswith("Bearer ") and auth[len("Bearer ") :] in hub.tokens

        def _require_auth(self) -> None:
            if not self._authorized():
                raise HubError(401, "Invalid credentials in Authorization header", None)

        def _dispatch(self) -> None:
            split = urlsplit(self.path)
            path, query = unquote(split.path), parse_qs(split.query)
            with hub._lock:
                hub.requests.append((self.command, split.path))
            try:
                self._route(path, query)
            except HubError as err:
                headers = {"X-Error-Message": err.message}
                if err.code:
                    headers["X-Error-Code"] = err.code
                # HEAD requests must not carry a body, but the status and headers still tell the client why.
                self._send_json(err.status, {"error": err.message}, headers)
            except Exception as err:  # a bug in the fake: show it to the client instead of hanging
                self._send_json(500, {"error": f"fake hub: {type(err).__name__}: {err}"})

        do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _dispatch

        # -- routes --

        def _route(self, path: str, query: dict[str, list[str]]) -> None:
            cmd = self.command
            if cmd == "POST" and path == "/api/repos/create":
                return self._create_repo()
            if cmd == "POST" and path == "/api/validate-yaml":
                return self._validate_yaml()
            if cmd == "GET" and path == "/api/whoami-v2":
                self._require_auth()
                return self._send_json(
                    200,
                    {
                        "type": "user",
                        "name": hub.user,
                        "orgs": [],
                        "auth": {"accessToken": {"role": "write"}},
                    },
                )
            if cmd == "PUT" and path.startswith("/_lfs/upload/"):
                return self._lfs_upload(path.rsplit("/", 1)[-1])
            if cmd == "POST" and path == "/_lfs/verify":
                body = self._json_body()
                if body.get("oid") not in hub.lfs:
                    raise HubError(404, f"LFS object {body.get('oid')} not found")
                return self._send_json(200, {"success": True})
            if m := _LFS_BATCH.match(path):
                return self._lfs_batch(_PREFIX_TYPE[m["prefix"]], m["repo"])
            if m := _API_REPO.match(path):
                return self._api_repo(m["type"][:-1], m["repo"], m["rest"] or "", query)
            if cmd in ("GET", "HEAD") and (m := _RESOLVE.match(path)):
                return self._resolve(_PREFIX_TYPE[m["prefix"]], m["repo"], m["rev"], m["path"])
            raise HubError(404, f"fake hub has no route for {cmd} {path}")

        def _create_repo(self) -> None:
            self._require_auth()
            body = self._json_body()
            name, org = body.get("name"), body.get("organization")
            if not name or not re.fullmatch(r"[\w.-]+", name):
                raise HubError(400, f"invalid repo name {name!r}")
            repo_id = f"{org}/{name}" if org else f"{hub.user}/{name}"
            repo_type = body.get("type") or "model"
            private = body.get("visibility") == "private" or bool(body.get("private"))
            repo, created = hub.create_repo(repo_type, repo_id, private)
            url = hub.repo_url(repo)
            if not created:
                return self._send_json(409, {"error": "You already created this repo", "url": url})
            self._send_json(200, {"url": url, "name": repo_id, "id": repo_id})

        def _validate_yaml(self) -> None:
            body = self._json_body()
            text = body.get("content", "")
            m = re.match(r"^---\n(.*?)\n---\n", text, re.S)
            if not m:
                return self._send_json(
                    200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]}
                )
            try:
                meta = yaml.safe_load(m.group(1))
            except yaml.YAMLError as exc:
                return self._send_json(400, {"errors": [{"message": f"YAML parse error: {exc}"}]})
            errors = []
            if not isinstance(meta, dict):
                errors.append({"message": "metadata must be a YAML mapping"})
            elif "license" in meta and not isinstance(meta["license"], str | list):
                errors.append({"message": '"license" must be a string or a list of strings'})
            if errors:
                return self._send_json(400, {"errors": errors})
            self._send_json(200, {"errors": [], "warnings": []})

        def _api_repo(self, repo_type: str, repo_id: str, rest: str, query: dict[str, list[str]]) -> None:
            repo = hub._get_repo(repo_type, repo_id, authorized=self._authorized())
            cmd = self.command
            if cmd == "GET" and rest in ("", "/"):
                return self._send_json(200, hub.info(repo, repo.head))
            if cmd == "GET" and (m := re.fullmatch(r"/revision/([^/]+)", rest)):
                return self._send_json(200, hub.info(repo, hub._commit(repo, m[1])))
            if cmd == "GET" and (m := re.fullmatch(r"/tree/([^/]+)(?:/(.*))?", rest)):
                recursive = (query.get("recursive") or ["false"])[0].lower() in ("1", "true")
                commit = hub._commit(repo, m[1])
                return self._send_json(200, hub.entries(repo, commit, m[2] or "", recursive))
            if cmd == "POST" and (m := re.fullmatch(r"/paths-info/([^/]+)", rest)):
                return self._paths_info(repo, hub._commit(repo, m[1]))
            if cmd == "POST" and (m := re.fullmatch(r"/preupload/([^/]+)", rest)):
                self._require_auth()
                return self._preupload(repo, hub._commit(repo, m[1]))
            if cmd == "POST" and (m := re.fullmatch(r"/commit/([^/]+)", rest)):
                self._require_auth()
                if unquote(m[1]) != "main":
                    raise HubError(404, f"fake hub commits to main only, got {m[1]}", "RevisionNotFound")
                lines = [json.loads(x) for x in self._body().splitlines() if x.strip()]
                commit = hub.apply_commit(repo, lines)
                return self._send_json(
                    200,
                    {
                        "success": True,
                        "commitOid": commit.oid,
                        "pullRequestUrl": None,
                        "commitUrl": f"{hub.repo_url(repo)}/commit/{commit.oid}",
                    },
                )
            raise HubError(404, f"fake hub has no route for {cmd} /api/{repo_type}s/{repo_id}{rest}")

        def _paths_info(self, repo: Repo, commit: Commit) -> None:
            ctype = self.headers.get("Content-Type", "")
            raw = self._body()
            if ctype.startswith("application/json"):
                paths = json.loads(raw).get("paths", [])
            else:
                paths = parse_qs(raw.decode()).get("paths", [])
            out = []
            for p in paths:
                p = p.strip("/")
                if p in commit.files:
                    out.append(hub.file_entry(p, commit.files[p]))
                elif p == "" or any(f.startswith(p + "/") for f in commit.files):
                    out.append(hub.folder_entry(p))
            self._send_json(200, out)

        def _preupload(self, repo: Repo, commit: Commit) -> None:
            body = self._json_body()
            files = []
            for f in body.get("files", []):
                sample = base64.b64decode(f.get("sample", ""))
                mode = hub.upload_mode(repo, f["path"], int(f["size"]), sample)
                existing = commit.files.get(f["path"])
                oid = None
                if existing is not None:
                    oid = existing.sha256 if existing.sha256 is not None else existing.oid
                files.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
            self._send_json(200, {"files": files, "commitOid": commit.oid})

        def _lfs_batch(self, repo_type: str, repo_id: str) -> None:
            self._require_auth()
            hub._get_repo(repo_type, repo_id, authorized=True)
            body = self._json_body()
            if body.get("operation") != "upload":
                raise HubError(400, "fake hub only supports LFS uploads")
            objects = []
            for obj in body.get("objects", []):
                oid, size = obj["oid"], int(obj["size"])
                entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                if oid not in hub.lfs:
                    entry["actions"] = {
                        "upload": {"href": f"{hub.url}/_lfs/upload/{oid}", "header": {}},
                        "verify": {"href": f"{hub.url}/_lfs/verify", "header": {}},
                    }
                objects.append(entry)
            self._send_json(200, {"transfer": "basic", "objects": objects})

        def _lfs_upload(self, oid: str) -> None:
            data = self._body()
            if hashlib.sha256(data).hexdigest() != oid:
                raise HubError(400, f"uploaded content does not match sha256 {oid}")
            with hub._lock:
                hub.lfs[oid] = data
            self._send(200, b"", content_type="text/plain")

        def _resolve(self, repo_type: str, repo_id: str, rev: str, path: str) -> None:
            repo = hub._get_repo(repo_type, repo_id, authorized=self._authorized())
            commit = hub._commit(repo, rev)
            blob = commit.files.get(path)
            if blob is None:
                raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
            data = hub._content(blob)
            etag = blob.sha256 or blob.oid
            headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
            if blob.sha256:
                headers["X-Linked-Etag"] = f'"{blob.sha256}"'
                headers["X-Linked-Size"] = str(blob.size)
            status = 200
            rng = self.headers.get("Range")
            if rng and (m := _RANGE.match(rng.strip())):
                start_s, end_s = m.groups()
                if start_s == "":
                    start, end = max(0, len(data) - int(end_s)), len(data) - 1
                else:
                    start = int(start_s)
                    end = min(int(end_s), len(data) - 1) if end_s else len(data) - 1
                if start >= len(data) and len(data) > 0:
                    raise HubError(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "range not satisfiable")
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                data = data[start : end + 1]
                status = 206
            self._send(status, data, headers, content_type="application/octet-stream")

    return Handler
