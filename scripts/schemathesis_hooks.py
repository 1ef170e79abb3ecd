"""Schemathesis hooks: the few input rules of chatd's API that no JSON Schema can state.

The OpenAPI document names each of them in its description ("Rules no schema states"). This
`before_call` hook makes every generated request obey them before it is sent (in every phase,
coverage and stateful included), so a 400 for any other reason is still a failure:
- dynamic tool names unique within a chat, and no NUL inside a tool's free-form JSON Schema
  (in any of the accepted shapes);
- tool call ids unique within one submission;
- `from` not after `to` in `GET /users/me/usage` (each defaults to the current UTC month's bound);
- a new token's `expires_at` in the future.
"""

import importlib
import inspect
from datetime import datetime, timedelta, timezone

import schemathesis


def _warm_lambda_sources():
    """Works around a fault of the fuzzer's own stack, not of chatd: Hypothesis parses a
    module's source the first time it describes one of its lambdas, and CPython 3.11's AST
    conversion fails ("AST constructor recursion depth mismatch") when that happens deep in
    schemathesis' recursive coverage walk — which depends on thread timing. Parsing those
    modules once here, at a shallow stack, fills Hypothesis' cache so it never parses them
    there."""
    try:
        from hypothesis.internal import lambda_sources
    except ImportError:
        return
    for name in (
        "schemathesis.specs.openapi.coverage._schema",
        "schemathesis.specs.openapi.coverage._operation",
    ):
        try:
            path = inspect.getsourcefile(importlib.import_module(name))
            # A lambda "of" that file: describing it parses (and caches) the whole file.
            probe = eval(compile("lambda value: value", path, "eval"))  # noqa: S307
            lambda_sources.lambda_description(probe)
        except Exception:  # noqa: BLE001 — a missing module or a changed internal: no warm-up
            continue


_warm_lambda_sources()


def _tolerate_lambda_description_faults():
    """The warm-up above is not enough on its own: Hypothesis keeps the parsed modules in a
    bounded cache (100 files), so a long run can evict one and parse it again deep in the walk
    (seen in CI: the same "recursion depth mismatch" in `coverage/_schema.py`). A lambda's
    description only names a strategy in reprs, so when describing fails that way, a generic
    one is used instead of aborting the run."""
    try:
        from hypothesis.internal import lambda_sources
    except ImportError:
        return
    describe = lambda_sources.lambda_description

    def lambda_description(f):
        try:
            return describe(f)
        except (SystemError, RecursionError):
            return "lambda: <source not parsed>"

    lambda_sources.lambda_description = lambda_description


_tolerate_lambda_description_faults()


def _without_nul(value):
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    return value


def _make_unique(items, key, limit):
    seen = set()
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get(key), str):
            continue
        value = item[key]
        if value in seen:
            suffix = f"_{index}"
            value = value[: max(0, limit - len(suffix))] + suffix
            item[key] = value
        seen.add(value)


def _timestamp(text):
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


@schemathesis.hook
def before_call(context, case, kwargs):
    method, path = case.method.upper(), case.operation.path
    body = case.body if isinstance(case.body, dict) else None
    if (method, path) == ("POST", "/chats") and body is not None:
        tools = body.get("dynamic_tools")
        if isinstance(tools, list):
            # A tool's name and schema sit at the top, or in `function` (OpenAI's shape).
            declarations = [
                tool["function"] if isinstance(tool, dict) and isinstance(tool.get("function"), dict)
                else tool
                for tool in tools
            ]
            _make_unique(declarations, "name", 64)
            for tool in declarations:
                for key in ("schema", "parameters", "input_schema"):
                    if isinstance(tool, dict) and key in tool:
                        tool[key] = _without_nul(tool[key])
    elif (method, path) == ("POST", "/chats/{chat_id}/tool-results") and body is not None:
        results = body.get("results")
        if isinstance(results, list):
            _make_unique(results, "tool_call_id", 256)
    elif (method, path) == ("GET", "/users/me/usage") and isinstance(case.query, dict):
        now = datetime.now(timezone.utc)
        month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        next_month = (month_start + timedelta(days=32)).replace(day=1)
        start = _timestamp(case.query["from"]) if "from" in case.query else month_start
        end = _timestamp(case.query["to"]) if "to" in case.query else next_month
        if start is not None and end is not None and start > end:
            if "from" in case.query and "to" in case.query:
                case.query["from"], case.query["to"] = case.query["to"], case.query["from"]
            elif "from" in case.query:
                case.query["to"] = case.query["from"]
            else:
                case.query["from"] = case.query["to"]
    elif method == "POST" and path in ("/users/me/tokens", "/users/{user_id}/tokens") \
            and body is not None:
        expires_at = _timestamp(body.get("expires_at"))
        if expires_at is not None and expires_at <= datetime.now(timezone.utc):
            body["expires_at"] = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
