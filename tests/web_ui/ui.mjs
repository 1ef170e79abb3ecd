// The web UI in a real browser: Debian's Chromium driven by Playwright (playwright-core, no
// browser download), against a cluster of two API replicas started by tests/web_ui.rs.
// Every scenario prints `ok <name>` and leaves a screenshot `<name>.png` in $SHOTS; a failing
// one leaves `<name>-failed.png` and exits 1. Console errors (CSP violations among them) fail
// the run.
//
// Env: CHATD_A, CHATD_B (replica URLs), CHATD_C (a replica with 4-message snapshots), CHATD_TOKEN (an admin's token), CHATD_USER_TOKEN (an
// ordinary user's), SHOTS (screenshot folder), CHROMIUM (the browser binary).
// The test answers `restart-api-0` on stdout by restarting replica A and writing `restarted`.

import { createRequire } from "node:module";
import { createInterface } from "node:readline";
import { deflateSync } from "node:zlib";
import { mkdirSync } from "node:fs";

// NODE_PATH names the node_modules holding playwright-core (ES modules ignore NODE_PATH).
const { chromium } = createRequire(process.env.NODE_PATH + "/")("playwright-core");

const A = process.env.CHATD_A;
const B = process.env.CHATD_B;
const C = process.env.CHATD_C; // stream snapshots of 4 messages
const TOKEN = process.env.CHATD_TOKEN;
const USER_TOKEN = process.env.CHATD_USER_TOKEN;
const SHOTS = process.env.SHOTS;
mkdirSync(SHOTS, { recursive: true });

const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function ask(command, answer) {
  process.stdout.write(`${command}\n`);
  const { value } = await stdinLines.next();
  if (value !== answer) throw new Error(`asked ${command}, got ${value}`);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function api(method, path, body, token = TOKEN, base = A) {
  const response = await fetch(`${base}/api/v1${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function until(what, check, timeout = 20000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const texts = (message) => message.content.filter((p) => p.type === "text").map((p) => p.text).join("");
/** The chat's history, oldest first (the API pages newest first). */
async function stored(chatId) {
  return (await api("GET", `/chats/${chatId}/messages?limit=100`)).items.reverse();
}
async function lastAnswer(chatId) {
  const messages = await stored(chatId);
  const answers = messages.filter((m) => m.role === "assistant");
  return answers.length ? texts(answers[answers.length - 1]) : null;
}
const chatIdOf = (page) => new URL(page.url()).hash.match(/#\/chat\/([0-9a-f-]{36})/)?.[1];
const mock = (text, directive) => `${text}\n@mock ${JSON.stringify(directive)}`;

/** A valid PNG of `size`×`size` pixels of one colour. */
function png(size, [r, g, b]) {
  const table = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (bytes) => {
    let c = 0xffffffff;
    for (const byte of bytes) c = table[(c ^ byte) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    out.write(type, 4, "ascii");
    data.copy(out, 8);
    out.writeUInt32BE(crc(out.subarray(4, 8 + data.length)), 8 + data.length);
    return out;
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(size, 0);
  header.writeUInt32BE(size, 4);
  header[8] = 8; // bit depth
  header[9] = 2; // truecolour
  const rows = Buffer.alloc(size * (1 + 3 * size));
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) rows.set([r, g, b], y * (1 + 3 * size) + 1 + 3 * x);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header), chunk("IDAT", deflateSync(rows)), chunk("IEND", Buffer.alloc(0)),
  ]);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const consoleErrors = [];
function watchConsole(page, name) {
  page.on("console", (message) => {
    if (message.type() !== "error") return;
    const text = message.text();
    // Expected: the bad-token sign-in (401), the stream of a restarting replica, a deleted chat.
    if (/status of 401|status of 404|status of 503|ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE|ERR_INCOMPLETE_CHUNKED_ENCODING|net::ERR_/.test(text)) return;
    consoleErrors.push(`${name}: ${text}`);
  });
  page.on("pageerror", (error) => consoleErrors.push(`${name}: uncaught ${error.message}`));
  // What the UI sent, for the failure report (stderr).
  page.on("request", (request) => {
    if (request.method() !== "GET") console.error(`${name} ${request.method()} ${request.url()} ${request.postData() ?? ""}`.slice(0, 300));
  });
}

async function newPage(base, token, viewport = { width: 1280, height: 800 }, name = "page") {
  const context = await browser.newContext({ viewport });
  if (token) await context.addInitScript((value) => localStorage.setItem("chatd.token", value), token);
  const page = await context.newPage();
  watchConsole(page, name);
  await page.goto(base + "/");
  return page;
}

let current = null;
async function scenario(name, run) {
  try {
    await run();
    if (current) await current.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
    console.log(`ok ${name}`);
  } catch (error) {
    if (current) await current.screenshot({ path: `${SHOTS}/${name}-failed.png`, fullPage: true }).catch(() => {});
    console.log(`FAILED ${name}: ${error.stack || error}`);
    await browser.close();
    process.exit(1);
  }
}

const statusOf = (page) => page.locator(".chat-head .badge").textContent();
async function waitStatus(page, status, timeout = 20000) {
  await until(`status ${status}`, async () => (await statusOf(page)) === status, timeout);
}

// ---------------------------------------------------------------------------------------------
let page;

await scenario("sign_in", async () => {
  page = await newPage(A, null, undefined, "A");
  current = page;
  await page.getByLabel("API token").fill("chatd_not_a_real_token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("That token is not valid").waitFor();
  await page.screenshot({ path: `${SHOTS}/sign_in-refused.png` });
  await page.getByLabel("API token").fill(TOKEN);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("link", { name: "New chat" }).first().waitFor();
  await page.getByRole("link", { name: "Admin" }).waitFor();
  check(!page.url().includes("chatd_"), "the token is in the URL");
  check((await page.evaluate(() => localStorage.getItem("chatd.token"))) === TOKEN, "the token was not kept");
});

await scenario("stream", async () => {
  await page.getByRole("link", { name: "New chat" }).first().click();
  await page.getByLabel("Message", { exact: true }).fill(mock("hello stream", { tokens: 40, tokens_per_second: 20 }));
  await page.getByRole("button", { name: "Send", exact: true }).click();
  await page.waitForURL(/#\/chat\//);
  const chatId = chatIdOf(page);
  // Part of the answer shows while the turn still runs: it streams.
  const partial = await until("a partial answer", async () => {
    const text = (await page.locator(".message.preview").textContent()) || "";
    const words = text.trim().split(/\s+/).filter(Boolean).length;
    return words > 0 && words < 40 ? text : null;
  });
  check(partial.length > 0, "no partial answer");
  await waitStatus(page, "waiting");
  const answer = await until("the stored answer", () => lastAnswer(chatId));
  const shown = await page.locator(".message.assistant:not(.preview) .text").last().textContent();
  check(shown.trim() === answer.trim(), `shown ${JSON.stringify(shown)} != stored ${JSON.stringify(answer)}`);
  check((await page.locator(".message.preview").textContent()) === "", "the preview stayed after the answer");
  // The chat is in the list, live from the watch stream.
  await page.locator(`.chat-list a[href="#/chat/${chatId}"]`).waitFor();
  const cost = await page.locator(".chat-head .cost").textContent();
  check(cost.startsWith("Cost"), `no cost shown: ${cost}`);
});

await scenario("keyboard", async () => {
  const box = page.getByLabel("Message", { exact: true });
  await box.click();
  await page.keyboard.type("first line");
  await page.keyboard.press("Shift+Enter");
  await page.keyboard.type("second line");
  check((await box.inputValue()) === "first line\nsecond line", "Shift+Enter did not add a line");
  const before = await page.locator(".message.user").count();
  await page.keyboard.press("Enter");
  await until("the sent message", async () => (await page.locator(".message.user").count()) === before + 1);
  check((await box.inputValue()) === "", "the composer was not cleared");
  await waitStatus(page, "waiting");
});

await scenario("queue_and_interrupt", async () => {
  const chatId = chatIdOf(page);
  const queue = page.getByRole("region", { name: "Queued messages" });
  const box = page.getByLabel("Message", { exact: true });
  const long = (text) => mock(text, { tokens: 300, tokens_per_second: 10 });
  await box.fill(long("a long answer"));
  await page.keyboard.press("Enter");
  await waitStatus(page, "running");
  await page.locator(".message.preview").filter({ hasText: /\w/ }).waitFor();
  // While busy the composer queues; the queue is shown and a queued message can be deleted.
  await page.getByRole("button", { name: "Queue the message (the chat is busy)" }).waitFor();
  await box.fill("queued one");
  await page.keyboard.press("Enter");
  await box.fill("queued to delete");
  await page.keyboard.press("Enter");
  await queue.getByText("queued to delete").waitFor();
  check((await queue.locator("li").count()) === 2, "the queue does not show both");
  await current.screenshot({ path: `${SHOTS}/queue.png` });
  await queue.getByRole("button", { name: "Delete queued message: queued to delete" }).click();
  await queue.getByText("queued to delete").waitFor({ state: "detached" });
  // Esc interrupts: what streamed so far is kept, and the queue's head runs next.
  await page.keyboard.press("Escape");
  await until("the queued message run after the interrupt", async () => {
    const messages = await stored(chatId);
    const at = messages.findIndex((m) => m.role === "user" && texts(m) === "queued one");
    return at > 0 && messages[at - 1].role === "assistant" && messages[at + 1]?.role === "assistant";
  });
  const messages = await stored(chatId);
  const at = messages.findIndex((m) => m.role === "user" && texts(m) === "queued one");
  const words = texts(messages[at - 1]).trim().split(/\s+/).length;
  check(words > 0 && words < 300, `the interrupted answer has ${words} words`);
  await waitStatus(page, "waiting");
  check(await queue.isHidden(), "the queue is still shown");
  await page.locator(".message.user").filter({ hasText: "queued one" }).waitFor();
  // Send now: a queued message jumps in, stopping the running answer.
  await box.fill(long("another long answer"));
  await page.keyboard.press("Enter");
  await waitStatus(page, "running");
  await page.locator(".message.preview").filter({ hasText: /\w/ }).waitFor();
  await box.fill("promoted");
  await page.keyboard.press("Enter");
  await queue.getByRole("button", { name: "Send now: promoted" }).click();
  await until("the promoted message run", async () => {
    const all = await stored(chatId);
    const last = all[all.length - 1];
    return all.some((m) => m.role === "user" && texts(m) === "promoted") && last.role === "assistant" && texts(all[all.length - 2]) === "promoted";
  });
  await waitStatus(page, "waiting");
  await page.locator(".message.user").filter({ hasText: "promoted" }).waitFor();
});

await scenario("edit_and_rerun", async () => {
  const chatId = chatIdOf(page);
  const first = page.locator(".message.user").first();
  check((await first.textContent()).includes("hello stream"), "the first message is not the first sent");
  await first.getByRole("button", { name: "Edit this message and rerun" }).click();
  await page.getByLabel("Edited message").fill("an edited question");
  await page.getByRole("button", { name: "Save and rerun" }).click();
  await until("the edited history", async () => {
    const messages = await stored(chatId);
    return messages.length === 2 && texts(messages[0]) === "an edited question" && messages[1].role === "assistant";
  });
  await waitStatus(page, "waiting");
  await until("the page to show the edited history", async () =>
    (await page.locator(".message:not(.preview)").count()) === 2);
  check((await page.locator(".message.user").first().textContent()).includes("an edited question"), "the edit is not shown");
  check((await page.getByText("queued one").count()) === 0, "messages after the edit are still shown");
});

await scenario("tool_call", async () => {
  const created = await api("POST", "/chats", {
    message: mock("look it up", { tool_calls: [{ name: "lookup", arguments: { q: "rust" } }] }),
    dynamic_tools: [{ name: "lookup", description: "Search the catalogue", schema: { type: "object", properties: { q: { type: "string" } } } }],
  }, TOKEN, B);
  const chatId = created.chat.id;
  await page.goto(`${A}/#/chat/${chatId}`);
  const form = page.getByRole("form", { name: "Tool calls waiting for you" });
  await form.waitFor();
  check((await form.textContent()).includes("rust"), "the call's arguments are not shown");
  await form.getByLabel("Result for lookup").fill("3 results about rust");
  await current.screenshot({ path: `${SHOTS}/tool_call-form.png` });
  await form.getByRole("button", { name: "Send tool results" }).click();
  await page.locator(".message.assistant").filter({ hasText: "Tool results: lookup: 3 results about rust" }).waitFor();
  await waitStatus(page, "waiting");
  check(await form.isHidden(), "the form stayed after the answer");
  await page.locator(".tool-card").first().waitFor();
});

await scenario("attachments", async () => {
  await page.getByRole("link", { name: "New chat" }).first().click();
  const chooser = page.waitForEvent("filechooser");
  await page.getByRole("button", { name: "Attach files" }).click();
  await (await chooser).setFiles({ name: "red.png", mimeType: "image/png", buffer: png(16, [220, 30, 30]) });
  // A second image dropped onto the page.
  const blue = [...png(12, [30, 30, 220])];
  await page.locator(".chat-view").evaluate((zone, bytes) => {
    const data = new DataTransfer();
    data.items.add(new File([new Uint8Array(bytes)], "blue.png", { type: "image/png" }));
    zone.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
  }, blue);
  await until("two uploaded thumbnails", async () => (await page.locator(".tray .pending-file.ready").count()) === 2);
  await page.getByLabel("Message", { exact: true }).fill(mock("what are these", { echo: "attachments" }));
  await page.getByRole("button", { name: "Send", exact: true }).click();
  await page.waitForURL(/#\/chat\//);
  const answer = page.locator(".message.assistant").filter({ hasText: "image/png" });
  await answer.waitFor();
  const text = await answer.textContent();
  check((text.match(/image\/png \d+ inline/g) || []).length === 2, `the mock did not see both images: ${text}`);
  // The user message shows both as thumbnails, loaded with the token (blob: URLs).
  await until("loaded thumbnails", () => page.locator(".message.user img.thumb").evaluateAll((images) =>
    images.length === 2 && images.every((img) => img.complete && img.naturalWidth > 0 && img.src.startsWith("blob:"))));
});

await scenario("safe_markdown", async () => {
  const created = await api("POST", "/chats", {
    system_prompt: 'Hi <img src="x" onerror="window.pwnedByModel = 1"> **bold** <script>window.pwnedByModel = 2</script> [link](javascript:alert(1))',
    message: mock("show the system prompt", { echo: "system" }),
  });
  await page.goto(`${A}/#/chat/${created.chat.id}`);
  const answer = page.locator(".message.assistant .md").filter({ hasText: "onerror" });
  await answer.waitFor();
  check((await answer.locator("img, script").count()) === 0, "HTML from the model became elements");
  check((await answer.locator("strong").textContent()) === "bold", "Markdown was not rendered");
  check((await answer.locator("a").count()) === 0, "a javascript: link was rendered");
  check((await page.evaluate(() => window.pwnedByModel)) === undefined, "script from the model ran");
});

await scenario("reasoning_retry_and_error", async () => {
  const created = await api("POST", "/chats", { title: "reasoning and failures" });
  const chatId = created.chat.id;
  await page.goto(`${A}/#/chat/${chatId}`);
  const box = page.getByLabel("Message", { exact: true });
  // Reasoning streams into a collapsible block, kept in the answer.
  await box.fill(mock("think first", { reasoning_tokens: 8, tokens: 5 }));
  await page.keyboard.press("Enter");
  await page.locator(".message.assistant:not(.preview) details.reasoning").waitFor();
  check((await page.locator(".message.assistant:not(.preview) details.reasoning").getAttribute("open")) === null, "reasoning is not collapsed");
  await waitStatus(page, "waiting");
  // A provider failure that is retried is shown while the worker waits to try again.
  await box.fill(mock("flaky provider", { error_status: 503, fail_times: 1, retry_after_s: 2 }));
  await page.keyboard.press("Enter");
  await page.locator(".notice.retry").filter({ hasText: "503" }).waitFor();
  await page.screenshot({ path: `${SHOTS}/retry.png` });
  await waitStatus(page, "waiting");
  await page.locator(".notice.retry").waitFor({ state: "detached" });
  // A failure that is not retried ends the turn in error, said plainly.
  await box.fill(mock("broken request", { error_status: 400 }));
  await page.keyboard.press("Enter");
  await waitStatus(page, "error");
  await page.getByRole("alert").filter({ hasText: "The turn failed" }).waitFor();
});

await scenario("paging", async () => {
  // Replica C sends 4 messages on connect; the rest are paged in on request.
  const created = await api("POST", "/chats", { title: "a long history" }, TOKEN, C);
  const chatId = created.chat.id;
  for (let i = 1; i <= 4; i++) {
    await api("POST", `/chats/${chatId}/messages`, { content: `turn ${i}` }, TOKEN, C);
    await until(`turn ${i} answered`, async () => (await stored(chatId)).length === 2 * i);
  }
  const pageC = await newPage(C, TOKEN, undefined, "C");
  current = pageC;
  await pageC.goto(`${C}/#/chat/${chatId}`);
  const older = pageC.getByRole("button", { name: "Load earlier messages" });
  await older.waitFor();
  check((await pageC.locator(".message:not(.preview)").count()) === 4, "the snapshot is not 4 messages");
  check((await pageC.getByText("turn 1", { exact: true }).count()) === 0, "the oldest message came without paging");
  await older.click();
  await pageC.getByText("turn 1", { exact: true }).waitFor();
  await until("all 8 messages in order", async () => {
    const ids = await pageC.locator(".message:not(.preview)").evaluateAll((all) => all.map((m) => Number(m.dataset.id)));
    return ids.length === 8 && ids.every((id, i) => i === 0 || id > ids[i - 1]);
  });
  check(await older.isHidden(), "paging is offered past the first message");
  await pageC.screenshot({ path: `${SHOTS}/paging.png` });
  current = page;
  await pageC.context().close();
});

await scenario("chat_list", async () => {
  await page.goto(`${A}/#/usage`);
  // A labelled chat, answered while another screen is open: it arrives unread.
  const labelled = await api("POST", "/chats", { message: "label me", labels: { team: "ui" }, title: "Searchable labelled chat" });
  const item = page.locator(`.chat-list a[href="#/chat/${labelled.chat.id}"]`);
  await item.waitFor();
  await until("the unread mark", async () => (await item.getAttribute("aria-label")).includes("(unread)"));
  // Search by title.
  await page.getByLabel("Search chats by title").fill("searchable");
  await until("search results", async () => (await page.locator(".chat-list .chat-item").count()) === 1);
  await page.getByLabel("Search chats by title").fill("");
  // Filter by label.
  await page.getByLabel("Filter by label (key:value)").fill("team:ui");
  await page.getByLabel("Filter by label (key:value)").press("Enter");
  await until("the label filter", async () => (await page.locator(".chat-list .chat-item").count()) === 1);
  await current.screenshot({ path: `${SHOTS}/chat_list-filtered.png` });
  await page.getByLabel("Filter by label (key:value)").fill("");
  await page.getByLabel("Filter by label (key:value)").press("Enter");
  await until("the full list", async () => (await page.locator(".chat-list .chat-item").count()) > 1);
  // Opening it marks it read; pinning puts it first.
  await item.click();
  await until("read", async () => !(await item.getAttribute("aria-label")).includes("(unread)"));
  await page.getByRole("button", { name: "Pin", exact: true }).click();
  await until("pinned first", async () =>
    (await page.locator(".chat-list .chat-item a").first().getAttribute("href")) === `#/chat/${labelled.chat.id}`);
  await page.getByRole("button", { name: "Unpin" }).waitFor();
});

await scenario("archive", async () => {
  const chatId = chatIdOf(page);
  await page.getByRole("button", { name: "Archive", exact: true }).click();
  await page.getByRole("button", { name: "Unarchive" }).waitFor();
  await until("gone from the list", async () => (await page.locator(`.chat-list a[href="#/chat/${chatId}"]`).count()) === 0);
  await page.getByLabel("Show archived chats").check();
  await page.locator(`.chat-list a[href="#/chat/${chatId}"]`).waitFor();
  check((await api("GET", `/chats/${chatId}`)).chat.archived === true, "not archived on the server");
  await page.getByLabel("Show archived chats").uncheck();
});

await scenario("other_replica_live", async () => {
  // The same chat open on replica B while replica A's page sends: B streams it live.
  const pageB = await newPage(B, TOKEN, undefined, "B");
  const created = await api("POST", "/chats", { title: "two replicas" });
  const chatId = created.chat.id;
  await page.goto(`${A}/#/chat/${chatId}`);
  await pageB.goto(`${B}/#/chat/${chatId}`);
  await pageB.getByRole("log", { name: "Messages" }).waitFor();
  await page.getByLabel("Message", { exact: true }).fill(mock("seen everywhere", { tokens: 30, tokens_per_second: 15 }));
  await page.keyboard.press("Enter");
  await until("B streaming", async () => {
    const words = ((await pageB.locator(".message.preview").textContent()) || "").trim().split(/\s+/).filter(Boolean).length;
    return words > 0 && words < 30;
  });
  current = pageB;
  await waitStatus(pageB, "waiting");
  const answer = await lastAnswer(chatId);
  check((await pageB.locator(".message.assistant:not(.preview) .text").last().textContent()).trim() === answer.trim(), "B shows another answer");
  await pageB.screenshot({ path: `${SHOTS}/other_replica_live-B.png` });
  current = page;
  await pageB.context().close();
});

await scenario("reconnect", async () => {
  const created = await api("POST", "/chats", { title: "reconnecting" }, TOKEN, B);
  const chatId = created.chat.id;
  await page.goto(`${A}/#/chat/${chatId}`);
  await page.getByRole("log", { name: "Messages" }).waitFor();
  await api("POST", `/chats/${chatId}/messages`, { content: mock("survive a restart", { tokens: 60, tokens_per_second: 10 }) }, TOKEN, B);
  await page.locator(".message.preview").filter({ hasText: /\w/ }).waitFor();
  // Replica A (this page's origin) drains and restarts; the page says so and resumes.
  const restarted = ask("restart-api-0", "restarted");
  await page.locator(".banner").filter({ hasText: /reconnect/i }).waitFor({ timeout: 20000 });
  await page.screenshot({ path: `${SHOTS}/reconnect-banner.png` });
  await restarted;
  await page.locator(".banner").waitFor({ state: "hidden", timeout: 20000 });
  await waitStatus(page, "waiting", 30000);
  const answer = await lastAnswer(chatId);
  const shown = await page.locator(".message.assistant:not(.preview) .text").last().textContent();
  check(shown.trim() === answer.trim(), `after the reconnect: shown ${JSON.stringify(shown)} != stored ${JSON.stringify(answer)}`);
  check((await page.locator(".message.assistant:not(.preview)").count()) === 1, "the answer is shown twice");
});

await scenario("usage", async () => {
  // With limits on, the page shows this user's limit beside the chart.
  await api("PUT", "/usage-limits", { enabled: true, period: "month", default_limit_micros: 5000000 });
  await page.goto(`${A}/#/usage`);
  await page.locator("svg[role=img]").first().waitFor();
  await page.locator(".limit-block").filter({ hasText: "$5" }).waitFor();
  await api("PUT", "/usage-limits", { enabled: false, period: "month", default_limit_micros: null });
});

await scenario("admin_model_config", async () => {
  await page.goto(`${A}/#/admin/models`);
  const form = page.getByRole("form", { name: "New model config" });
  await form.waitFor();
  await form.getByLabel("Model", { exact: true }).fill("ui-made-model");
  await form.getByLabel("Display name").fill("Made in the UI");
  await form.getByLabel("Context limit").fill("32000");
  await form.getByRole("button", { name: "Create model config" }).click();
  await page.getByRole("table").getByText("Made in the UI").waitFor();
  const configs = (await api("GET", "/model-configs")).items;
  check(configs.some((c) => c.model === "ui-made-model" && c.display_name === "Made in the UI"), "the model config was not created");
});

await scenario("admin_and_tokens", async () => {
  // A provider (keys are write-only; this cluster has no encryption key, so none is set).
  await page.goto(`${A}/#/admin/providers`);
  const provider = page.getByRole("form", { name: "New provider" });
  await provider.getByLabel("Kind", { exact: true }).selectOption("openai-compatible");
  await provider.getByLabel("Display name", { exact: true }).fill("Local vLLM");
  await provider.getByLabel("Base URL", { exact: true }).fill("http://127.0.0.1:9/v1");
  await provider.getByRole("button", { name: "Create provider" }).click();
  await page.getByRole("table").getByText("Local vLLM").waitFor();
  check((await api("GET", "/providers")).items.some((p) => p.display_name === "Local vLLM" && p.kind === "openai-compatible"), "the provider was not created");
  // A user.
  await page.goto(`${A}/#/admin/users`);
  const user = page.getByRole("form", { name: "New user" });
  await user.getByLabel("Username", { exact: true }).fill("carol");
  await user.getByRole("button", { name: "Create user" }).click();
  await page.getByRole("rowheader", { name: "carol", exact: true }).waitFor();
  // The deployment system prompt reaches the model: the mock echoes it.
  await page.goto(`${A}/#/admin/system-prompt`);
  await page.getByRole("textbox", { name: "System prompt", exact: true }).fill("Answer like a pirate.");
  await page.getByRole("button", { name: "Save", exact: true }).click();
  await until("the saved system prompt", async () => (await api("GET", "/config/system-prompt")).system_prompt === "Answer like a pirate.");
  await page.screenshot({ path: `${SHOTS}/admin_system_prompt.png` });
  const echoed = await api("POST", "/chats", { message: mock("what are your instructions", { echo: "system" }) });
  await until("the echoed system prompt", async () => (await lastAnswer(echoed.chat.id))?.includes("Answer like a pirate."));
  await api("PUT", "/config/system-prompt", { system_prompt: "", include_default: false });
  // A token made on the Usage page works, and its secret is shown once.
  await page.goto(`${A}/#/usage`);
  const tokens = page.getByRole("form", { name: "New token" });
  await tokens.getByLabel("Name", { exact: true }).fill("from the browser");
  await tokens.getByRole("button", { name: "Create token" }).click();
  const secret = await page.getByLabel("New token secret").inputValue();
  check(secret.startsWith("chatd_"), `not a token: ${secret}`);
  const me = await api("GET", "/users/me", undefined, secret);
  check((me.user || me).username === "alice", "the new token is not alice's");
  await page.screenshot({ path: `${SHOTS}/token_created.png` });
});

await scenario("not_admin", async () => {
  const userPage = await newPage(A, USER_TOKEN, undefined, "user");
  current = userPage;
  await userPage.getByRole("link", { name: "New chat" }).first().waitFor();
  check((await userPage.getByRole("link", { name: "Admin" }).count()) === 0, "an ordinary user sees Admin");
  await userPage.goto(`${A}/#/admin/models`);
  await userPage.getByText("Pick a chat or start a new one").waitFor();
  // Sign out forgets the token.
  await userPage.getByRole("button", { name: "Sign out" }).click();
  await userPage.getByLabel("API token").waitFor();
  check((await userPage.evaluate(() => localStorage.getItem("chatd.token"))) === null, "sign out kept the token");
  current = page;
  await userPage.context().close();
});

await scenario("phone", async () => {
  const phone = await newPage(A, TOKEN, { width: 390, height: 844 }, "phone");
  current = phone;
  await phone.getByRole("link", { name: "New chat" }).first().waitFor();
  await phone.screenshot({ path: `${SHOTS}/phone-list.png` });
  await phone.locator(".chat-list .chat-item a").first().click();
  await phone.getByRole("log", { name: "Messages" }).waitFor();
  check(await phone.locator(".sidebar").isHidden(), "the list covers the chat on a phone");
  await phone.getByRole("link", { name: "Back to the chat list" }).click();
  await phone.locator(".sidebar").waitFor();
  await phone.locator(".chat-list .chat-item a").first().click();
  await phone.getByLabel("Message", { exact: true }).waitFor();
  const width = await phone.evaluate(() => document.documentElement.scrollWidth);
  check(width <= 390, `the page is ${width}px wide on a 390px screen`);
});

check(consoleErrors.length === 0, `console errors:\n${consoleErrors.join("\n")}`);
console.log("ok console_clean");
await browser.close();
process.exit(0);
