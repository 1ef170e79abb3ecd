// chatd's /v1 front door driven by the official `openai` npm package, unmodified.
// Run by tests/openai_sdk.rs: `node node_sdk.mjs` with NODE_PATH naming the installed
// node_modules, CHATD_A and CHATD_B (two API replicas of one cluster) and CHATD_TOKEN.
import assert from "node:assert/strict";
import { createRequire } from "node:module";

const require = createRequire(process.env.NODE_PATH + "/");
const OpenAI = require("openai").default ?? require("openai");

const { CHATD_A: A, CHATD_B: B, CHATD_TOKEN: TOKEN } = process.env;
const client = (base) => new OpenAI({ baseURL: `${base}/v1`, apiKey: TOKEN, maxRetries: 0, timeout: 60000 });
const mock = (directives, text = "hello") => `${text}\n@mock ${JSON.stringify(directives)}`;
const outputText = (response) =>
  response.output
    .filter((item) => item.type === "message")
    .flatMap((item) => item.content)
    .filter((part) => part.type === "output_text")
    .map((part) => part.text)
    .join("");

const scenarios = {
  async streamHelper() {
    const stream = client(A).responses.stream({ model: "mock", input: mock({ tokens: 20 }) });
    let text = "";
    stream.on("response.output_text.delta", (event) => (text += event.delta));
    const final = await stream.finalResponse();
    assert.equal(final.status, "completed");
    assert.equal(text.trim().split(/\s+/).length, 20);
    assert.equal(final.output_text, text);
    const stored = await client(B).responses.retrieve(final.id);
    assert.equal(outputText(stored), text);
  },

  async backgroundResume() {
    const a = client(A);
    const started = await a.responses.create({
      model: "mock",
      input: mock({ tokens: 50, tokens_per_second: 40 }, "slowly"),
      background: true,
    });
    const first = [];
    const stream = await a.responses.retrieve(started.id, { stream: true });
    for await (const event of stream) {
      first.push(event);
      if (first.filter((e) => e.type === "response.output_text.delta").length >= 8) break;
    }
    const last = first.at(-1).sequence_number;
    const rest = [];
    for await (const event of await client(B).responses.retrieve(started.id, { stream: true, starting_after: last })) {
      rest.push(event);
    }
    assert.ok(rest[0].sequence_number > last);
    const all = [...first, ...rest];
    const numbers = all.map((e) => e.sequence_number);
    assert.deepEqual(numbers, [...numbers].sort((x, y) => x - y));
    assert.equal(rest.at(-1).type, "response.completed");
    const text = all.filter((e) => e.type === "response.output_text.delta").map((e) => e.delta).join("");
    assert.equal(text, outputText(rest.at(-1).response));
    assert.equal(text.trim().split(/\s+/).length, 50);
  },

  async functionCall() {
    const tools = [{ type: "function", name: "get_weather", parameters: { type: "object" }, strict: false }];
    const first = await client(A).responses.create({
      model: "mock",
      tools,
      input: mock({ tool_calls: [{ name: "get_weather", arguments: { city: "Rome" } }] }, "weather?"),
    });
    const call = first.output.find((item) => item.type === "function_call");
    assert.ok(call, JSON.stringify(first.output));
    assert.deepEqual(JSON.parse(call.arguments), { city: "Rome" });
    const second = await client(B).responses.create({
      model: "mock",
      previous_response_id: first.id,
      input: [{ type: "function_call_output", call_id: call.call_id, output: "rainy" }],
    });
    assert.equal(second.status, "completed");
    assert.ok(second.output_text.length > 0);
  },

  async chatCompletions() {
    const stream = await client(B).chat.completions.create({
      model: "mock",
      messages: [{ role: "user", content: mock({ tokens: 7 }) }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let usage = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? "";
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(text.trim().split(/\s+/).length, 7);
    assert.equal(usage.completion_tokens, 7);
  },

  async modelsAndErrors() {
    const models = await client(A).models.list();
    assert.ok(models.data.some((model) => model.id === "mock"));
    const bad = new OpenAI({ baseURL: `${A}/v1`, apiKey: "chatd_nope_nope", maxRetries: 0 });
    await assert.rejects(bad.models.list(), (error) => error instanceof OpenAI.AuthenticationError);
    await assert.rejects(
      client(A).responses.retrieve("resp_" + "0".repeat(32)),
      (error) => error instanceof OpenAI.NotFoundError,
    );
    await assert.rejects(
      client(A).responses.create({ model: "mock", input: [] }),
      (error) => error instanceof OpenAI.BadRequestError && error.param === "input",
    );
    // A replica that allows one request per second.
    const limited = client(process.env.CHATD_LIMITED);
    let limitedError = null;
    for (let attempt = 0; attempt < 5 && !limitedError; attempt++) {
      await limited.models.list().catch((error) => (limitedError = error));
    }
    assert.ok(limitedError instanceof OpenAI.RateLimitError, String(limitedError));
    assert.ok(limitedError.headers.get("retry-after"));
  },
};

for (const [name, run] of Object.entries(scenarios)) {
  await run();
  console.log(`ok ${name}`);
}
