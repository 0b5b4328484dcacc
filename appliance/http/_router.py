"""Map (method, path) to a handler, with {name} path parameters.

Pattern syntax, one segment at a time:

    /api/v1/machines/{machine_id}   {name} matches one non-empty segment
    /ipxe/{mac}.ipxe                 literal text around a parameter is allowed
    /boot/{path:*}                   {name:*} matches the rest, slashes included;
                                     only as the last segment

Literal-only paths are looked up in a dict; patterns are tried in the order they
were added, as one combined regular expression (one C-level match per request
instead of one Python call per pattern). A path that matches some route but not
the method is a 405 with an Allow header; a GET route also answers HEAD (the
server sends no body). The router never does I/O and never logs.
"""

import re

from appliance.http._types import HttpError

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:\*)?\}")


class RouteError(ValueError):
    """A pattern given to Router.add is malformed."""


class Router:
    def __init__(self):
        self._static = {}
        self._patterns = []
        self._by_pattern = {}
        self._combined = None

    def add(self, method, pattern, handler):
        """Route `method` requests for `pattern` to `async def handler(request)`."""
        method = method.upper()
        if not pattern.startswith("/"):
            raise RouteError(f"route pattern must start with '/', got {pattern!r}")

        if "{" not in pattern:
            methods = self._static.setdefault(pattern, {})
        else:
            methods = self._by_pattern.get(pattern)
            if methods is None:
                methods = {}
                self._by_pattern[pattern] = methods
                self._patterns.append((_compile(pattern), methods))
                self._combined = None

        if method in methods:
            raise RouteError(f"{method} {pattern} is already routed")
        methods[method] = handler

    def resolve(self, method, path):
        """Return (handler, path_params) or raise HttpError 404 / 405."""
        methods = self._static.get(path)
        params = {}
        if methods is None:
            methods, params = self._match_pattern(path)
        if methods is None:
            raise HttpError(404, "not_found", f"no resource at {path!r}")

        handler = methods.get(method)
        if handler is None and method == "HEAD":
            handler = methods.get("GET")
        if handler is None:
            allow = _allow(methods)
            raise HttpError(
                405,
                "method_not_allowed",
                f"{method} is not allowed on {path!r}; allowed: {allow}",
                headers=[("allow", allow)],
            )
        return handler, params

    def routes(self):
        """Yield (method, pattern) for every route, for docs and tests."""
        for pattern, methods in self._static.items():
            for method in methods:
                yield method, pattern
        for pattern, methods in self._by_pattern.items():
            for method in methods:
                yield method, pattern

    def _match_pattern(self, path):
        if self._combined is None:
            self._combined = _combine(self._patterns)
        regex, alternatives = self._combined
        match = regex.fullmatch(path)
        if match is None:
            return None, {}
        methods, groups = alternatives[match.lastgroup]
        return methods, {name: match.group(group) for group, name in groups}


def _combine(patterns):
    """One regex `(?P<r0>...)|(?P<r1>...)` whose outer group names the route that matched."""
    parts = []
    alternatives = {}
    for index, (regex, methods) in enumerate(patterns):
        groups = []
        renamed = regex.pattern
        for name in regex.groupindex:
            group = f"r{index}_{name}"
            renamed = renamed.replace(f"(?P<{name}>", f"(?P<{group}>", 1)
            groups.append((group, name))
        parts.append(f"(?P<r{index}>{renamed})")
        alternatives[f"r{index}"] = (methods, groups)
    return re.compile("|".join(parts)), alternatives


def _allow(methods):
    names = set(methods)
    if "GET" in names:
        names.add("HEAD")
    return ", ".join(sorted(names))


def _compile(pattern):
    segments = pattern.split("/")
    parts = []
    for index, segment in enumerate(segments):
        parts.append(_compile_segment(pattern, segment, last=index == len(segments) - 1))
    return re.compile("/".join(parts))


def _compile_segment(pattern, segment, last):
    regex = []
    position = 0
    for param in _PARAM.finditer(segment):
        regex.append(re.escape(segment[position : param.start()]))
        if param.group(2):
            if not last or param.end() != len(segment):
                raise RouteError(f"{{name:*}} must end the pattern: {pattern!r}")
            regex.append(f"(?P<{param.group(1)}>.+)")
        else:
            regex.append(f"(?P<{param.group(1)}>[^/]+)")
        position = param.end()

    rest = segment[position:]
    if "{" in rest or "}" in rest:
        raise RouteError(f"malformed parameter in route pattern {pattern!r}")
    regex.append(re.escape(rest))
    return "".join(regex)
