// chatd's AI SDK UI message stream read by the `ai` npm package's own code, unmodified: its
// `DefaultChatTransport` (what `useChat` uses: the request, the SSE parsing, the chunk schema)
// and `readUIMessageStream` (the reducer that turns chunks into the UIMessage a UI renders).
// Run by tests/openai_sdk.rs with NODE_PATH, CHATD_A, CHATD_B (two API replicas) and CHATD_TOKEN.
import assert from "node:assert/strict";
import { createRequire } from "node:module";

const require = createRequire(process.env.NODE_PATH + "/");
const { DefaultChatTransport, readUIMessageStream } = require("ai");

const { CHATD_A: A, CHATD_B: B, CHATD_TOKEN: TOKEN } = process.env;
const headers = { Authorization: `Bearer ${TOKEN}` };
const mock = (directives, text = "hello") => `${text}\n@mock ${JSON.stringify(directives)}`;

// A transport as an app would configure it for chatd: POST to the chat's ui-stream (or the
// create variant), resume with GET on the same path.
const transport = (base, chatId) =>
  new DefaultChatTransport({
    api: `${base}/api/v1/chats/ui-stream`,
    headers,
    prepareSendMessagesRequest: ({ id, messages, trigger, messageId }) => ({
      api: chatId ? `${base}/api/v1/chats/${chatId}/ui-stream` : `${base}/api/v1/chats/ui-stream`,
      body: { id, messages, trigger, messageId },
    }),
    prepareReconnectToStreamRequest: () => ({ api: `${base}/api/v1/chats/${chatId}/ui-stream` }),
  });

const userMessage = (text) => ({ id: `u${Math.random()}`, role: "user", parts: [{ type: "text", text }] });

// Reads a chunk stream to its end with the SDK's reducer; returns the last snapshot.
async function read(stream, { stopAfterText } = {}) {
  const errors = [];
  let last = null;
  for await (const message of readUIMessageStream({ stream, onError: (error) => errors.push(error) })) {
    last = message;
    const text = textOf(message);
    if (stopAfterText && text.split(/\s+/).filter(Boolean).length >= stopAfterText) break;
  }
  assert.deepEqual(errors, [], "the SDK's reducer accepted every chunk");
  return last;
}

const textOf = (message) =>
  message.parts.filter((part) => part.type === "text").map((part) => part.text).join("");

async function api(base, method, path, body) {
  const response = await fetch(`${base}/api/v1${path}`, {
    method,
    headers: { ...headers, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: response.status === 204 ? null : await response.json() };
}

async function storedReplies(chatId) {
  const { body } = await api(A, "GET", `/chats/${chatId}/messages`);
  return body.items
    .filter((message) => message.role === "assistant")
    .sort((x, y) => x.id - y.id)
    .map((message) => message.content.filter((part) => part.type === "text").map((part) => part.text).join(""));
}

const scenarios = {
  async createAndStream() {
    const stream = await transport(A).sendMessages({
      chatId: "client-side-id",
      messages: [userMessage(mock({ tokens: 15 }))],
      trigger: "submit-message",
      messageId: undefined,
    });
    const message = await read(stream);
    const chatId = message.metadata.chatId;
    assert.ok(chatId, JSON.stringify(message));
    assert.equal(textOf(message).trim().split(/\s+/).length, 15);
    assert.deepEqual(await storedReplies(chatId), [textOf(message)]);
    // Nothing running: resume answers 204, which the transport turns into null.
    assert.equal(await transport(B, chatId).reconnectToStream({ chatId }), null);
    // The next message on the same chat, from the other replica.
    const next = await read(await transport(B, chatId).sendMessages({
      chatId, messages: [userMessage(mock({ tokens: 6 }, "more"))], trigger: "submit-message",
    }));
    assert.equal(textOf(next).trim().split(/\s+/).length, 6);
    assert.equal((await storedReplies(chatId))[1], textOf(next));
  },

  async resumeOnTheOtherReplica() {
    const { body } = await api(A, "POST", "/chats", {});
    const chatId = body.chat.id;
    const stream = await transport(A, chatId).sendMessages({
      chatId, messages: [userMessage(mock({ tokens: 60, tokens_per_second: 40 }, "slowly"))], trigger: "submit-message",
    });
    const partial = await read(stream, { stopAfterText: 10 });
    assert.ok(textOf(partial).length > 0);
    // The page reloads: useChat's resumeStream reconnects, here to the other replica, and gets
    // the turn from its start, then live.
    const resumed = await transport(B, chatId).reconnectToStream({ chatId });
    assert.ok(resumed, "a running turn resumes");
    const message = await read(resumed);
    assert.equal(textOf(message).trim().split(/\s+/).length, 60);
    assert.ok(textOf(message).startsWith(textOf(partial).trimEnd().split(" ").slice(0, -1).join(" ")));
    assert.deepEqual(await storedReplies(chatId), [textOf(message)]);
  },

  async clientToolRoundTrip() {
    const { body } = await api(A, "POST", "/chats", {
      dynamic_tools: [{ type: "function", function: { name: "lookup", parameters: { type: "object" } } }],
    });
    const chatId = body.chat.id;
    const first = await read(await transport(A, chatId).sendMessages({
      chatId,
      messages: [userMessage(mock({ tool_calls: [{ name: "lookup", arguments: { q: "rust" } }] }, "find"))],
      trigger: "submit-message",
    }));
    const call = first.parts.find((part) => part.type === "tool-lookup");
    assert.ok(call, JSON.stringify(first.parts));
    assert.equal(call.state, "input-available");
    assert.deepEqual(call.input, { q: "rust" });
    // addToolResult + sendAutomaticallyWhen: the assistant message goes back with the output.
    const answered = { ...first, parts: first.parts.map((part) =>
      part === call ? { ...part, state: "output-available", output: "3 crates" } : part) };
    const second = await read(await transport(B, chatId).sendMessages({
      chatId, messages: [userMessage("find"), answered], trigger: "submit-message",
    }));
    assert.ok(textOf(second).length > 0, JSON.stringify(second.parts));
    const { body: history } = await api(A, "GET", `/chats/${chatId}/messages`);
    const tool = history.items.find((message) => message.role === "tool");
    assert.equal(tool.content[0].result, "3 crates");
  },

  async stopButton() {
    const { body } = await api(A, "POST", "/chats", {});
    const chatId = body.chat.id;
    const stream = await transport(A, chatId).sendMessages({
      chatId, messages: [userMessage(mock({ tokens: 400, tokens_per_second: 20 }, "long"))], trigger: "submit-message",
    });
    const chunks = [];
    const reader = stream.getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      chunks.push(value);
      if (chunks.filter((chunk) => chunk.type === "text-delta").length === 3) {
        const { status } = await api(B, "POST", `/chats/${chatId}/interrupt`);
        assert.equal(status, 200);
      }
    }
    const finish = chunks.at(-1);
    assert.equal(finish.type, "finish");
    assert.equal(finish.finishReason, "interrupted");
    const text = chunks.filter((chunk) => chunk.type === "text-delta").map((chunk) => chunk.delta).join("");
    assert.deepEqual(await storedReplies(chatId), [text], "what was streamed before the stop is stored");
  },
};

for (const [name, run] of Object.entries(scenarios)) {
  await run();
  console.log(`ok ${name}`);
}
