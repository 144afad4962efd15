"""A small OpenAI-compatible chat-completions server for tests: real HTTP on 127.0.0.1, in a thread.

Each test gives a *responder* — ``fn(request_body, n) -> Reply`` (``n`` counts requests from 1) —
that decides the answer: fixed text with top log-probabilities, an HTTP error, a broken body (a
responder may also block, e.g. on an event or barrier, to hold its answer back). The server records every request (body and headers) and the most requests it ever had in
flight at once. It stops when the ``with`` block ends, or by itself after ``max_lifetime_s``.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # a dict (sent as JSON), bytes/str (sent as-is)
    headers: dict[str, str] = field(default_factory=dict)


def completion(
    text: str,
    *,
    top: dict[str, float] | None = None,
    prompt_tokens: int = 100,
    completion_tokens: int = 1,
    model: str = "test-judge",
    finish_reason: str = "stop",
    refusal: str | None = None,
) -> Reply:
    """A 200 chat-completion answering ``text``; ``top``: the first token's top log-probs."""
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": None if refusal else text, "refusal": refusal},
        "finish_reason": finish_reason,
    }
    if top is not None:
        first = text.split("\n")[0]
        choice["logprobs"] = {
            "content": [{
                "token": first,
                "logprob": top.get(first, min(top.values())),
                "bytes": list(first.encode()),
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top.items()],
            }]
        }
    else:
        choice["logprobs"] = None
    return Reply(body={
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
    })


def error(status: int, message: str = "error", headers: dict[str, str] | None = None) -> Reply:
    return Reply(status=status, body={"error": {"message": message, "type": "test", "code": status}}, headers=headers or {})


_ANSWER = re.compile(r"\[Answer ([AB])\]\n(.*?)\n\[End of answer \1\]", re.S)


def shown_answers(body: dict[str, Any]) -> dict[str, str]:
    """The outputs a pairwise judge prompt shows as A and B (from the shipped template's markers)."""
    user = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
    return {m.group(1): m.group(2) for m in _ANSWER.finditer(user)}


_SINGLE = re.compile(r"\[Answer\]\n(.*?)\n\[End of answer\]", re.S)


def prefer(keyword: str, *, confidence: float = 0.9, logprobs: bool = True, **kw: Any) -> Callable[[dict, int], Reply]:
    """A content-aware judge: picks the answer that contains ``keyword`` (A when both or neither);
    asked for a score, gives 5 to an answer with the keyword and 2 to one without."""

    def respond(body: dict[str, Any], n: int) -> Reply:
        shown = shown_answers(body)
        if not shown:
            user = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
            single = _SINGLE.search(user)
            score = "5" if single and keyword in single.group(1) else "2"
            return completion(score, top={score: 0.0} if logprobs and body.get("logprobs") else None, **kw)
        pick = "B" if keyword in shown.get("B", "") and keyword not in shown.get("A", "") else "A"
        other = "B" if pick == "A" else "A"
        top = {pick: math.log(confidence), other: math.log(1 - confidence)} if logprobs and body.get("logprobs") else None
        return completion(pick, top=top, **kw)

    return respond


class ChatServer:
    """``with ChatServer(responder) as srv:`` → ``srv.base_url`` (``http://127.0.0.1:PORT/v1``)."""

    def __init__(self, responder: Callable[[dict[str, Any], int], Reply], *, max_lifetime_s: float = 120.0) -> None:
        self.responder = responder
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._max_lifetime_s = max_lifetime_s
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(error(404, f"no route {self.path}"))
                    return
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._send(error(400, "request body is not JSON"))
                    return
                with server._lock:
                    server.requests.append(body)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    n = len(server.requests)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._send(server.responder(body, n))
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _send(self, reply: Reply) -> None:
                if isinstance(reply.body, dict | list):
                    data = json.dumps(reply.body).encode()
                    ctype = "application/json"
                else:
                    data = reply.body.encode() if isinstance(reply.body, str) else (reply.body or b"")
                    ctype = "text/plain"
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._watchdog = threading.Timer(max_lifetime_s, self.stop)
        self._watchdog.daemon = True

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> ChatServer:
        self._thread.start()
        self._watchdog.start()
        return self

    def stop(self) -> None:
        self._watchdog.cancel()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
