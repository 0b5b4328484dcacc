"""Request, Response and HttpError: the values handlers take and give back.

Plain data with no I/O. The server builds a Request, the handler returns a
Response (or raises HttpError), and the server turns either into bytes on the
wire. Nothing here may touch a socket or log.
"""

import json
import mimetypes
import os
from http import HTTPStatus

_JSON_TYPE = ("content-type", "application/json")
REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


class HttpError(Exception):
    """An error a client should see, as {"error": {"code", "message", "trace_id"}}.

    `code` is a stable machine-readable word (e.g. "not_found"); `message` is for
    people and says what was expected and what arrived. `headers` are added to the
    error response (e.g. Allow on 405, Retry-After on 429).
    """

    def __init__(self, status, code, message, headers=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = list(headers or [])

    def __repr__(self):
        return f"HttpError({self.status}, {self.code!r}, {self.message!r})"


class Request:
    """One parsed HTTP request, body read in full."""

    __slots__ = (
        "method",
        "path",
        "raw_path",
        "query",
        "headers",
        "body",
        "client",
        "tls",
        "trace_id",
        "path_params",
        "state",
        "http_version",
    )

    def __init__(
        self,
        method,
        path,
        query=None,
        headers=None,
        body=b"",
        client=None,
        tls=False,
        trace_id="",
        raw_path=None,
        http_version="1.1",
    ):
        self.method = method
        self.path = path
        self.raw_path = path if raw_path is None else raw_path
        self.query = query if query is not None else {}
        self.headers = headers if headers is not None else {}
        self.body = body
        self.client = client
        self.tls = tls
        self.trace_id = trace_id
        self.path_params = {}
        self.state = {}
        self.http_version = http_version

    def json(self):
        """The body parsed as JSON; HttpError(400, "bad_json") when it is not JSON."""
        if not self.body:
            raise HttpError(400, "bad_json", "request body is empty; expected a JSON document")
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise HttpError(400, "bad_json", f"request body is not valid JSON: {e}") from None
        except RecursionError:
            raise HttpError(400, "bad_json", "request body JSON is nested too deeply") from None

    def __repr__(self):
        return f"<Request {self.method} {self.path!r} trace_id={self.trace_id}>"


class Response:
    """Status, headers (a list of (name, value) pairs) and a body.

    A file response (from Response.file) has `file_path` set and an empty body;
    the server stats and sends the file itself, with Range and HEAD support.
    """

    __slots__ = ("status", "headers", "body", "file_path")

    def __init__(self, status=200, headers=None, body=b""):
        if isinstance(body, str):
            raise TypeError("Response body must be bytes; encode text first")
        self.status = status
        self.headers = list(headers or [])
        self.body = body
        self.file_path = None

    @classmethod
    def json(cls, obj, status=200, headers=None):
        body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
        return cls(status, [_JSON_TYPE, *(headers or [])], body)

    @classmethod
    def text(cls, text, status=200, content_type="text/plain; charset=utf-8", headers=None):
        return cls(status, [("content-type", content_type), *(headers or [])], text.encode())

    @classmethod
    def file(cls, path, content_type=None, headers=None):
        if content_type is None:
            content_type = guess_content_type(path)
        response = cls(200, [("content-type", content_type), *(headers or [])])
        response.file_path = os.fspath(path)
        return response

    def __repr__(self):
        what = self.file_path if self.file_path else f"{len(self.body)} bytes"
        return f"<Response {self.status} {what}>"


def guess_content_type(path):
    guessed, _ = mimetypes.guess_type(os.fspath(path))
    return guessed or "application/octet-stream"


def error_body(status, code, message, trace_id):
    document = {"error": {"code": code, "message": message, "trace_id": trace_id}}
    return json.dumps(document, separators=(",", ":")).encode()


def error_response(error, trace_id):
    """The JSON error Response for an HttpError."""
    body = error_body(error.status, error.code, error.message, trace_id)
    return Response(error.status, [_JSON_TYPE, *error.headers], body)
