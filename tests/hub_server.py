"""A small local server speaking the part of the Hugging Face Hub API that pushing and loading use:
create repo, preupload, commit (files inline, base64), model info / tree, and resolve (HEAD and GET).

    server = HubServer(); server.start(); os.environ["HF_ENDPOINT"] = server.url; ...; server.stop()

Repositories live in memory: {repo_id: {path: bytes}}. Every request is logged in ``server.requests``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HubServer:
    def __init__(self):
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: dict[str, str] = {}
        self.requests: list[tuple[str, str]] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code, body=b"", headers=None, head=False):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                content_type = "application/json" if not isinstance(body, bytes) else "application/octet-stream"
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            def _body(self):
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _info(self, repo):
                files = server.repos[repo]
                return {
                    "id": repo,
                    "modelId": repo,
                    "sha": server.commits[repo],
                    "private": False,
                    "siblings": [{"rfilename": p, "size": len(b)} for p, b in sorted(files.items())],
                }

            def do_POST(self):
                server.requests.append(("POST", self.path))
                body = self._body()
                if self.path == "/api/repos/create":
                    spec = json.loads(body)
                    repo = f"{spec['organization']}/{spec['name']}" if spec.get("organization") else spec["name"]
                    if repo in server.repos:
                        return self._send(
                            409, {"error": "You already created this model repo", "url": f"{server.url}/{repo}"}
                        )
                    server.repos[repo] = {}
                    server.commits[repo] = "0" * 40
                    return self._send(200, {"url": f"{server.url}/{repo}", "name": repo})
                if self.path == "/api/validate-yaml":  # the model card's front matter must be valid YAML
                    import yaml

                    content = json.loads(body)["content"]
                    try:
                        yaml.safe_load(content.split("---")[1] if content.startswith("---") else "")
                    except yaml.YAMLError as e:
                        return self._send(400, {"error": f"invalid YAML: {e}"})
                    return self._send(200, {"errors": [], "warnings": []})
                match = re.fullmatch(r"/api/models/(.+)/preupload/([^/]+)", self.path)
                if match:
                    files = json.loads(body)["files"]
                    return self._send(
                        200,
                        {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]},
                    )
                match = re.fullmatch(r"/api/models/(.+)/commit/([^/]+)", self.path)
                if match:
                    repo = match.group(1)
                    if repo not in server.repos:
                        return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item.get("key") == "file":
                            value = item["value"]
                            server.repos[repo][value["path"]] = base64.b64decode(value["content"])
                        elif item.get("key") == "deletedFile":
                            server.repos[repo].pop(item["value"]["path"], None)
                    sha = hashlib.sha1(json.dumps(sorted(server.repos[repo])).encode() + body).hexdigest()
                    server.commits[repo] = sha
                    return self._send(
                        200,
                        {"commitUrl": f"{server.url}/{repo}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None},
                    )
                return self._send(404, {"error": f"unknown endpoint {self.path}"})

            def _get(self, head=False):
                server.requests.append(("HEAD" if head else "GET", self.path))
                path = self.path.split("?")[0]
                match = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
                if match:
                    repo = match.group(1)
                    if repo not in server.repos:
                        return self._send(
                            404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}, head
                        )
                    return self._send(200, self._info(repo), head=head)
                match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
                if match:
                    repo = match.group(1)
                    files = server.repos.get(repo, {})
                    entries = [
                        {"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                        for p, b in sorted(files.items())
                    ]
                    return self._send(200, entries, head=head)
                match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if match:
                    repo, _, filename = match.groups()
                    files = server.repos.get(repo)
                    if files is None:
                        return self._send(
                            404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}, head
                        )
                    if filename not in files:
                        return self._send(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"}, head)
                    data = files[filename]
                    headers = {"X-Repo-Commit": server.commits[repo], "ETag": f'"{hashlib.sha1(data).hexdigest()}"'}
                    return self._send(200, data, headers, head)
                return self._send(404, {"error": f"unknown endpoint {path}"}, head=head)

            def do_GET(self):
                self._get()

            def do_HEAD(self):
                self._get(head=True)

        return Handler
