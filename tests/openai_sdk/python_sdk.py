"""chatd's /v1 front door driven by the official `openai` Python package, unmodified.

Run by tests/openai_sdk.rs: `python python_sdk.py <scenario>` with CHATD_A and CHATD_B (two API
replicas of one cluster), CHATD_TOKEN, and for the 429 scenario CHATD_LIMITED (a replica that
allows one request per second). Each scenario asserts and prints `ok <scenario>`.
"""

import json
import os
import sys
import time

import openai
from openai import OpenAI

A = os.environ["CHATD_A"]
B = os.environ["CHATD_B"]
TOKEN = os.environ["CHATD_TOKEN"]


def client(base, **kwargs):
    kwargs.setdefault("max_retries", 0)
    return OpenAI(base_url=f"{base}/v1", api_key=TOKEN, timeout=60, **kwargs)


def mock(directives, text="hello"):
    return f"{text}\n@mock {json.dumps(directives)}"


def output_text(response):
    return "".join(
        part.text
        for item in response.output
        if item.type == "message"
        for part in item.content
        if part.type == "output_text"
    )


def check_grammar(events):
    """OpenAI's event grammar: created first, monotonic numbers, items announced before
    their deltas, one final event last."""
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created", kinds[:3]
    assert kinds[-1] in ("response.completed", "response.failed", "response.incomplete"), kinds[-3:]
    numbers = [event.sequence_number for event in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers), numbers
    announced = set()
    parts = set()
    for event in events:
        if event.type == "response.output_item.added":
            announced.add(event.item.id)
        if event.type == "response.content_part.added":
            assert event.item_id in announced, event
            parts.add(event.item_id)
        if event.type == "response.output_text.delta":
            assert event.item_id in parts, f"delta before its content part: {event}"
        if event.type == "response.function_call_arguments.delta":
            assert event.item_id in announced, event


def streamed_text(events):
    return "".join(event.delta for event in events if event.type == "response.output_text.delta")


def scenario_stream_helper():
    sdk = client(A)
    with sdk.responses.stream(model="mock", input=mock({"tokens": 30}, "tell me")) as stream:
        deltas = []
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert final.status == "completed", final.status
    text = "".join(deltas)
    assert len(text.split()) == 30, text
    assert final.output_text == text, (final.output_text, text)
    # Stored == streamed, on the other replica.
    stored = client(B).responses.retrieve(final.id)
    assert stored.status == "completed"
    assert output_text(stored) == text
    assert stored.usage.output_tokens == 30, stored.usage
    assert stored.model == "mock"


def scenario_create_stream():
    events = list(client(A).responses.create(model="mock", input=mock({"tokens": 12}), stream=True))
    check_grammar(events)
    assert events[-1].type == "response.completed"
    final = events[-1].response
    assert streamed_text(events) == output_text(final)
    assert final.usage.output_tokens == 12


def scenario_background_resume():
    a, b = client(A), client(B)
    started = a.responses.create(
        model="mock", input=mock({"tokens": 60, "tokens_per_second": 40}, "slowly"), background=True
    )
    assert started.status in ("queued", "in_progress"), started.status
    assert started.background is True
    # Follow it on replica A for a while, then resume on replica B after the last event seen.
    first = []
    with a.responses.retrieve(started.id, stream=True) as stream:
        for event in stream:
            first.append(event)
            if sum(1 for e in first if e.type == "response.output_text.delta") >= 10:
                break
    last = first[-1].sequence_number
    rest = list(b.responses.retrieve(started.id, stream=True, starting_after=last))
    assert rest and rest[0].sequence_number > last, (last, rest[:1])
    check_grammar(first + rest)
    assert rest[-1].type == "response.completed", rest[-1].type
    text = streamed_text(first + rest)
    assert len(text.split()) == 60, text
    assert output_text(rest[-1].response) == text
    # A whole replay on B numbers every event as A did.
    replay = list(b.responses.retrieve(started.id, stream=True))
    by_number = {event.sequence_number: event.type for event in replay}
    for event in first:
        if event.type.startswith("response.output_text.delta"):
            assert by_number.get(event.sequence_number) in (None, event.type)
    assert a.responses.retrieve(started.id).status == "completed"


def scenario_cancel():
    a, b = client(A), client(B)
    started = a.responses.create(
        model="mock", input=mock({"tokens": 400, "tokens_per_second": 20}, "long"), background=True
    )
    deadline = time.time() + 30
    while a.responses.retrieve(started.id).status != "in_progress":
        assert time.time() < deadline, "never started"
        time.sleep(0.1)
    time.sleep(0.5)
    cancelled = b.responses.cancel(started.id)
    assert cancelled.status == "cancelled", cancelled.status
    assert a.responses.retrieve(started.id).status == "cancelled"
    # What was generated before the cancel is kept.
    assert 0 < len(output_text(cancelled).split()) < 400


def scenario_function_call():
    sdk = client(A)
    tools = [{
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }]
    first = sdk.responses.create(
        model="mock",
        tools=tools,
        input=mock({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}, "weather?"),
    )
    assert first.status == "completed", first.status
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1, first.output
    call = calls[0]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}, call
    second = client(B).responses.create(
        model="mock",
        previous_response_id=first.id,
        tools=tools,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}],
    )
    assert second.status == "completed", second.status
    assert second.previous_response_id == first.id
    assert output_text(second), second.output
    items = sdk.responses.input_items.list(second.id)
    outputs = [item for item in items.data if item.type == "function_call_output"]
    assert len(outputs) == 1 and outputs[0].output == "sunny, 21 C", items.data
    # A streamed call: arguments stream as deltas and add up to the item's arguments.
    events = list(sdk.responses.create(
        model="mock", tools=tools, stream=True,
        input=mock({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}, "again"),
    ))
    check_grammar(events)
    done = [e for e in events if e.type == "response.output_item.done" and e.item.type == "function_call"]
    assert len(done) == 1 and json.loads(done[0].item.arguments) == {"city": "Oslo"}, done


def scenario_chain_and_fork():
    sdk = client(A)
    first = sdk.responses.create(model="mock", input=mock({"tokens": 5}, "one two three"))
    second = sdk.responses.create(model="mock", previous_response_id=first.id, input=mock({"tokens": 5}, "four"))
    # The model saw the history: more input tokens than for the same message alone.
    alone = sdk.responses.create(model="mock", input=mock({"tokens": 5}, "four"))
    assert second.usage.input_tokens > alone.usage.input_tokens, (second.usage, alone.usage)
    # Branching from the first response again: a fork with the same history as `second`.
    fork = client(B).responses.create(model="mock", previous_response_id=first.id, input=mock({"tokens": 5}, "four"))
    assert fork.status == "completed"
    assert fork.usage.input_tokens == second.usage.input_tokens, (fork.usage, second.usage)
    # Both branches continue independently.
    third = sdk.responses.create(model="mock", previous_response_id=second.id, input=mock({"tokens": 5}, "five"))
    on_fork = sdk.responses.create(model="mock", previous_response_id=fork.id, input=mock({"tokens": 5}, "five"))
    assert third.usage.input_tokens == on_fork.usage.input_tokens, (third.usage, on_fork.usage)
    assert third.usage.input_tokens > second.usage.input_tokens
    # instructions reach the model as a system part.
    echoed = sdk.responses.create(model="mock", instructions="Be terse.", input=mock({"echo": "system"}, "x"))
    assert "Be terse." in echoed.output_text, echoed.output_text


def scenario_chat_completions():
    sdk = client(B)
    chunks = list(sdk.chat.completions.create(
        model="mock",
        messages=[
            {"role": "system", "content": "You are a test."},
            {"role": "user", "content": mock({"tokens": 8}, "hi")},
        ],
        stream=True,
        stream_options={"include_usage": True},
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 8, text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"], finishes
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8, chunks[-1]
    whole = sdk.chat.completions.create(
        model="mock",
        messages=[{"role": "user", "content": mock({"echo": "tools"}, "x")}],
        tools=[{"type": "function", "function": {"name": "lookup", "description": "d",
                "parameters": {"type": "object"}}}],
    )
    assert "lookup" in whole.choices[0].message.content, whole
    called = sdk.chat.completions.create(
        model="mock",
        messages=[{"role": "user", "content": mock({"tool_calls": [{"name": "lookup", "arguments": {"q": 1}}]}, "x")}],
        tools=[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
    )
    assert called.choices[0].finish_reason == "tool_calls", called
    assert called.choices[0].message.tool_calls[0].function.name == "lookup"


def scenario_models():
    models = client(A).models.list()
    ids = [model.id for model in models.data]
    assert "mock" in ids, ids
    assert client(B).models.retrieve("mock").id == "mock"


def scenario_errors():
    bad = OpenAI(base_url=f"{A}/v1", api_key="chatd_nope_nope", max_retries=0)
    try:
        bad.models.list()
        raise AssertionError("a bad key was accepted")
    except openai.AuthenticationError as error:
        assert error.status_code == 401
    try:
        client(A).responses.retrieve("resp_" + "0" * 32)
        raise AssertionError("an unknown response was found")
    except openai.NotFoundError as error:
        assert error.status_code == 404
    try:
        client(A).responses.create(model="no-such-model", input="x")
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError as error:
        assert error.body["code"] == "model_not_found", error.body
    try:
        client(A).responses.create(model="mock", input=[{"type": "item_reference", "id": "x"}])
        raise AssertionError("an unsupported item was accepted")
    except openai.BadRequestError as error:
        assert error.body["param"] == "input[0].type", error.body
    limited = client(os.environ["CHATD_LIMITED"])
    saw = None
    for _ in range(5):
        try:
            limited.models.list()
        except openai.RateLimitError as error:
            saw = error
            break
    assert saw is not None, "never rate limited"
    assert saw.status_code == 429 and saw.response.headers.get("retry-after"), saw


SCENARIOS = {name[len("scenario_"):]: fn for name, fn in globals().items() if name.startswith("scenario_")}

if __name__ == "__main__":
    names = sys.argv[1:] or list(SCENARIOS)
    for name in names:
        SCENARIOS[name]()
        print(f"ok {name}", flush=True)
