// The chat view: the history (paged), the answer streaming in, the queue, forms for pending
// client tool calls, retry and error notices, and the composer. Everything arrives through the
// chat's stream (`GET /chats/{id}/stream`), read with fetch and resumed with Last-Event-ID.

import { get, post, patch, del, query } from "./api.js";
import { follow } from "./sse.js";
import { h, replace, money, toast, attempt, pretty, confirmDialog, field } from "./dom.js";
import { renderMessage, renderPart, Preview } from "./messages.js";
import { Composer } from "./composer.js";

const BUSY = new Set(["pending", "running", "interrupting", "awaiting_agents"]);
const PAGE = 50;

export function mountChat(main, chatId, ctx) {
  const view = new ChatView(main, chatId, ctx);
  return () => view.close();
}

/** `#/new`: a model picker and the composer; the first message creates the chat. */
export function mountNewChat(main, ctx) {
  const picker = h("select", { name: "model", "aria-label": "Model" }, h("option", { value: "" }, "Default model"));
  const system = h("textarea", { rows: 2, name: "system_prompt", placeholder: "Optional: instructions for this chat only" });
  const labels = h("input", { type: "text", name: "labels", placeholder: "key:value, key2:value2" });
  get("/model-configs").then((list) => {
    for (const model of list.items) {
      picker.append(h("option", { value: model.id, selected: model.is_default },
        `${model.display_name || model.model}${model.is_default ? " (default)" : ""}`));
    }
  }).catch((error) => toast(`Could not list models: ${error.message}`, "error"));
  let createdId = null;
  const composer = new Composer({
    onSend: async (content) => {
      // A second message typed before the new chat's page opened goes to that chat.
      if (createdId) {
        await post(`/chats/${createdId}/messages`, { content, busy_behavior: "queue" });
        return;
      }
      const body = { message: content };
      if (picker.value) body.model_config_id = picker.value;
      if (system.value.trim()) body.system_prompt = system.value;
      const parsed = parseLabels(labels.value);
      if (parsed) body.labels = parsed;
      const created = await post("/chats", body);
      createdId = created.chat.id;
      ctx.navigate(`#/chat/${created.chat.id}`);
    },
  });
  const view = h("section", { class: "chat-view new", "aria-label": "New chat" },
    h("header", { class: "chat-head" },
      h("a", { class: "back", href: "#/", "aria-label": "Back to the chat list" }, "←"),
      h("h2", {}, "New chat")),
    h("div", { class: "new-options" },
      field("Model", picker),
      h("details", {}, h("summary", {}, "More options"),
        field("System prompt", system), field("Labels", labels, "Comma-separated key:value pairs"))),
    h("div", { class: "messages empty-state" }, h("p", { class: "muted" }, "Say something to start.")),
    composer.element);
  composer.dropZone(view);
  replace(main, view);
  composer.focus();
  return () => {};
}

function parseLabels(text) {
  const entries = text.split(",").map((pair) => pair.trim()).filter(Boolean).map((pair) => {
    const at = pair.indexOf(":");
    if (at <= 0) throw new Error(`a label is key:value, not "${pair}"`);
    return [pair.slice(0, at).trim(), pair.slice(at + 1).trim()];
  });
  return entries.length ? Object.fromEntries(entries) : null;
}

class ChatView {
  constructor(main, chatId, ctx) {
    this.id = chatId;
    this.ctx = ctx;
    this.messages = new Map();
    this.chat = ctx.chatList?.get(chatId) || null;
    this.preview = new Preview();
    this.olderBefore = null;

    this.title = h("h2", { class: "chat-title" }, this.chat?.title || "Chat");
    this.status = h("span", { class: "badge", role: "status", "aria-label": "Chat status" });
    this.cost = h("span", { class: "cost muted small", title: "What this chat cost (sub-agents included)" });
    this.actions = h("div", { class: "chat-actions" });
    this.banner = h("div", { class: "banner", role: "status", "aria-live": "polite", hidden: true });
    this.children = h("nav", { class: "children", "aria-label": "Sub-agent chats", hidden: true });
    this.older = h("button", { type: "button", class: "secondary small older", hidden: true, onclick: () => this.loadOlder() }, "Load earlier messages");
    this.list = h("div", { class: "message-list" });
    this.log = h("div", { class: "messages", role: "log", "aria-label": "Messages" }, this.older, this.list, this.preview.element);
    this.notices = h("div", { class: "notices", "aria-live": "polite" });
    this.actionForms = h("div", { class: "action-forms" });
    this.queue = h("section", { class: "queue", "aria-label": "Queued messages", hidden: true });
    this.composer = new Composer({
      onSend: (content) => this.send(content),
      onStop: () => this.interrupt(),
    });
    this.element = h("section", { class: "chat-view", "aria-label": "Chat" },
      h("header", { class: "chat-head" },
        h("a", { class: "back", href: "#/", "aria-label": "Back to the chat list" }, "←"),
        this.title, this.status, this.cost, this.actions),
      this.banner, this.children, this.log, this.notices, this.actionForms, this.queue, this.composer.element);
    this.composer.dropZone(this.element);
    replace(main, this.element);

    this.onKey = (event) => {
      if (event.key === "Escape" && !document.querySelector("dialog[open]") && BUSY.has(this.chat?.status)) {
        event.preventDefault();
        this.interrupt();
      }
    };
    document.addEventListener("keydown", this.onKey);
    this.onVisible = () => { if (!document.hidden) this.markRead(); };
    document.addEventListener("visibilitychange", this.onVisible);

    // Title, labels, pin and archive changes made elsewhere (another tab, the API).
    ctx.onChatEvent = (kind, chat) => {
      if (chat.id === this.id && kind !== "deleted" && this.chat) this.setChat({ ...chat });
    };
    this.load();
    this.stream = follow(`/chats/${chatId}/stream`, {
      onEvent: (name, data) => this.onEvent(name, data),
      onState: (state, detail) => this.onState(state, detail),
    });
    this.composer.focus();
  }

  close() {
    this.closed = true;
    this.stream.close();
    if (this.ctx.onChatEvent) this.ctx.onChatEvent = null;
    document.removeEventListener("keydown", this.onKey);
    document.removeEventListener("visibilitychange", this.onVisible);
    clearTimeout(this.readTimer);
  }

  async load() {
    try {
      const detail = await get(`/chats/${this.id}`);
      this.setChat(detail.chat);
      this.renderChildren(detail.children || []);
      this.refreshCost();
    } catch (error) {
      this.showGone(error);
    }
  }

  showGone(error) {
    replace(this.element, h("div", { class: "empty" },
      h("h2", {}, error.status === 404 ? "This chat does not exist (or was deleted)." : "Could not open this chat"),
      h("p", { class: "muted" }, error.message),
      h("a", { class: "button", href: "#/" }, "Back to the chats")));
  }

  setChat(chat) {
    // The chat's own stream is the freshest source of its status.
    if (this.streamStatus) {
      chat.status = this.streamStatus.status;
      if (this.streamStatus.last_error) chat.last_error = this.streamStatus.last_error;
    }
    this.chat = chat;
    this.title.textContent = chat.title || "Untitled chat";
    this.status.textContent = chat.status.replace("_", " ");
    this.status.className = `badge status-${chat.status}`;
    this.composer.setBusy(BUSY.has(chat.status));
    this.renderActions();
  }

  renderActions() {
    const chat = this.chat;
    const root = !chat.parent_chat_id;
    replace(this.actions,
      chat.parent_chat_id ? h("a", { class: "button secondary small", href: `#/chat/${chat.parent_chat_id}` }, "Parent chat") : null,
      root && !chat.archived ? h("button", {
        type: "button", class: "secondary small",
        onclick: () => attempt(async () => this.setChat((await patch(`/chats/${this.id}`, { pin_order: chat.pin_order ? 0 : 1 })).chat)),
      }, chat.pin_order ? "Unpin" : "Pin") : null,
      h("button", { type: "button", class: "secondary small", onclick: () => this.editLabels() }, "Labels"),
      h("button", {
        type: "button", class: "secondary small",
        onclick: () => attempt(async () => {
          const answer = await patch(`/chats/${this.id}`, { archived: !chat.archived });
          this.setChat(answer.chat);
          toast(answer.chat.archived ? "Chat archived" : "Chat unarchived");
        }),
      }, chat.archived ? "Unarchive" : "Archive"),
      h("button", {
        type: "button", class: "danger small",
        onclick: async () => {
          if (!(await confirmDialog("Delete this chat and its sub-agents? This cannot be undone.", "Delete"))) return;
          await attempt(async () => {
            await del(`/chats/${this.id}`);
            toast("Chat deleted");
            this.ctx.navigate("#/");
          });
        },
      }, "Delete"));
  }

  async editLabels() {
    const current = Object.entries(this.chat.labels || {}).map(([k, v]) => `${k}:${v}`).join(", ");
    const input = h("input", { type: "text", value: current, "aria-label": "Labels (key:value, comma-separated)" });
    const dialog = h("dialog", { class: "confirm", "aria-label": "Edit labels" },
      h("form", { method: "dialog" },
        field("Labels", input, "Comma-separated key:value pairs; empty removes them all"),
        h("div", { class: "row end" },
          h("button", { type: "submit", value: "cancel", class: "secondary" }, "Cancel"),
          h("button", { type: "submit", value: "save" }, "Save"))));
    document.body.append(dialog);
    dialog.addEventListener("close", async () => {
      dialog.remove();
      if (dialog.returnValue !== "save") return;
      await attempt(async () => {
        const labels = parseLabels(input.value) || {};
        this.setChat((await patch(`/chats/${this.id}`, { labels })).chat);
        toast("Labels saved");
      });
    });
    dialog.showModal();
  }

  renderChildren(children) {
    this.children.hidden = children.length === 0;
    replace(this.children, children.length ? h("span", { class: "muted small" }, "Sub-agents: ") : null,
      children.map((child) => h("a", { class: "child-link", href: `#/chat/${child.id}` },
        `${child.title || "sub-agent"} (${child.status.replace("_", " ")})`)));
  }

  async refreshCost() {
    try {
      const cost = await get(`/chats/${this.id}/cost`);
      this.cost.textContent = `Cost ${money(cost.cost_micros)}`;
    } catch {
      // the cost is a nicety; the chat works without it
    }
  }

  onState(state, detail) {
    if (state === "reconnecting" && detail?.delay) {
      this.banner.hidden = false;
      this.banner.textContent = `Connection lost (${detail.error?.message || "network"}); reconnecting in ${detail.delay} s…`;
    } else if (state === "reconnecting") {
      this.banner.hidden = false;
      this.banner.textContent = "Reconnecting…";
    } else if (state === "live") {
      if (!this.banner.hidden) toast("Reconnected");
      this.banner.hidden = true;
    } else if (state === "closed") {
      this.showGone(detail);
    }
  }

  onEvent(name, data) {
    switch (name) {
      case "message":
        this.addMessage(data);
        if (data.role === "assistant") {
          this.preview.clear();
          this.notices.replaceChildren();
          this.scheduleRead();
        }
        break;
      case "message_part":
        this.preview.add(data);
        this.scrollDown();
        break;
      case "attempt_reset":
        this.preview.reset(data.attempt);
        break;
      case "status":
        this.onStatus(data);
        break;
      case "queue":
        this.renderQueue(data.queued || []);
        break;
      case "retry":
        replace(this.notices, h("div", { class: "notice retry", role: "status" },
          `The provider failed (${data.kind}${data.status_code ? ` ${data.status_code}` : ""}): ${data.message}. `,
          `Retrying in ${(data.delay_ms / 1000).toFixed(1)} s (attempt ${data.attempt}).`));
        break;
      case "error":
        this.showError(data);
        break;
      case "history_truncated":
        this.olderBefore = data.before_id;
        this.older.hidden = false;
        break;
      case "history_reset":
        this.messages.clear();
        this.list.replaceChildren();
        this.preview.clear();
        this.olderBefore = null;
        this.older.hidden = true;
        break;
      case "action_required":
        this.renderActionForms(data.tool_calls || []);
        break;
      case "title":
        this.title.textContent = data.title;
        if (this.chat) this.chat.title = data.title;
        break;
      default:
        break;
    }
  }

  onStatus(event) {
    const was = this.chat?.status;
    this.streamStatus = event;
    if (this.chat) this.setChat(this.chat);
    if (event.status !== "requires_action") this.actionForms.replaceChildren();
    if (event.status === "error" && event.last_error) this.showError(event.last_error);
    if (BUSY.has(was) && !BUSY.has(event.status)) {
      this.refreshCost();
      if (event.status !== "error") this.notices.replaceChildren();
    }
  }

  showError(error) {
    replace(this.notices, h("div", { class: "notice error", role: "alert" },
      h("strong", {}, `The turn failed (${error.kind || "error"}${error.status_code ? ` ${error.status_code}` : ""}): `),
      error.message || "",
      error.retryable ? " Send a message to try again." : ""));
  }

  addMessage(message) {
    const element = renderMessage(message, { edit: (m, bubble) => this.edit(m, bubble) });
    const existing = this.messages.get(message.id);
    this.messages.set(message.id, { message, element });
    if (existing) {
      existing.element.replaceWith(element);
      return;
    }
    // Keep id order (older pages are prepended).
    const later = [...this.messages.values()].filter((entry) => entry.message.id > message.id && entry.element.isConnected)
      .sort((a, b) => a.message.id - b.message.id)[0];
    if (later) this.list.insertBefore(element, later.element);
    else this.list.append(element);
    this.scrollDown();
  }

  scrollDown() {
    const log = this.log;
    const nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 200;
    if (nearBottom || !this.scrolledOnce) {
      log.scrollTop = log.scrollHeight;
      this.scrolledOnce = true;
    }
  }

  async loadOlder() {
    if (!this.olderBefore) return;
    this.older.disabled = true;
    await attempt(async () => {
      const page = await get(`/chats/${this.id}/messages${query({ before_id: this.olderBefore, limit: PAGE })}`);
      const items = [...page.items].sort((a, b) => a.id - b.id);
      const height = this.log.scrollHeight;
      for (const message of items) this.addMessage(message);
      this.log.scrollTop += this.log.scrollHeight - height;
      this.olderBefore = page.has_more && items.length ? items[0].id : null;
      this.older.hidden = !this.olderBefore;
    });
    this.older.disabled = false;
  }

  scheduleRead() {
    clearTimeout(this.readTimer);
    this.readTimer = setTimeout(() => this.markRead(), 300);
  }

  markRead() {
    if (this.closed || document.hidden) return;
    post(`/chats/${this.id}/read`, {}).catch(() => {});
  }

  async send(content) {
    const busy = BUSY.has(this.chat?.status);
    // 201: it runs now; 202: queued. Either way the stream shows it (message or queue event).
    await post(`/chats/${this.id}/messages`, { content, busy_behavior: busy ? "queue" : "interrupt" });
  }

  interrupt() {
    attempt(async () => {
      const answer = await post(`/chats/${this.id}/interrupt`);
      if (answer?.chat) this.setChat(answer.chat);
    });
  }

  edit(message, bubble) {
    const text = (message.content || []).filter((part) => part.type === "text").map((part) => part.text).join("\n");
    const files = (message.content || []).filter((part) => part.type === "file");
    const input = h("textarea", { rows: Math.min(10, text.split("\n").length + 1), "aria-label": "Edited message" });
    input.value = text;
    const restore = () => replace(bubble, (message.content || []).map((part) => renderPart(part, "user")));
    const save = () => attempt(async () => {
      let content = input.value;
      if (files.length) {
        content = [];
        if (input.value.trim()) content.push({ type: "text", text: input.value });
        for (const file of files) {
          content.push(file.file_id ? { type: "file", file_id: file.file_id } : { type: "file", data: file.data, media_type: file.media_type });
        }
      }
      await patch(`/chats/${this.id}/messages/${message.id}`, { content });
      toast("Edited: the chat reruns from this message");
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        save();
      } else if (event.key === "Escape") {
        event.stopPropagation();
        restore();
      }
    });
    replace(bubble, input, h("div", { class: "row end" },
      h("button", { type: "button", class: "secondary small", onclick: restore }, "Cancel"),
      h("button", { type: "button", class: "small", onclick: save }, "Save and rerun")));
    input.focus();
  }

  renderQueue(queued) {
    this.queue.hidden = queued.length === 0;
    replace(this.queue, queued.length ? h("h3", {}, `Queued (${queued.length})`) : null,
      h("ol", {}, queued.map((item) => {
        const text = (item.content || []).map((part) => (part.type === "text" ? part.text : `[${part.type}]`)).join(" ");
        return h("li", { class: "queued" },
          h("span", { class: "queued-text" }, text),
          h("button", {
            type: "button", class: "secondary small", "aria-label": `Send now: ${text.slice(0, 40)}`,
            onclick: () => attempt(() => post(`/chats/${this.id}/queue/${item.id}/promote`)),
          }, "Send now"),
          h("button", {
            type: "button", class: "link small", "aria-label": `Delete queued message: ${text.slice(0, 40)}`,
            onclick: () => attempt(() => del(`/chats/${this.id}/queue/${item.id}`)),
          }, "Delete"));
      })));
  }

  renderActionForms(calls) {
    // The same calls again (a reconnect's snapshot, another replica's relay): keep what was typed.
    const key = calls.map((call) => call.tool_call_id).join(",");
    if (key === this.actionKey && this.actionForms.firstChild) return;
    this.actionKey = key;
    if (calls.length === 0) {
      this.actionForms.replaceChildren();
      return;
    }
    const inputs = calls.map((call) => ({
      call,
      output: h("textarea", { rows: 3, required: true, "aria-label": `Result for ${call.tool_name}` }),
      isError: h("input", { type: "checkbox", "aria-label": `Report ${call.tool_name} as failed` }),
    }));
    const form = h("form", { class: "action-form card", "aria-label": "Tool calls waiting for you" },
      h("h3", {}, "The model called your tools"),
      inputs.map(({ call, output, isError }) => h("fieldset", {},
        h("legend", {}, h("code", {}, call.tool_name)),
        h("pre", { class: "code" }, h("code", {}, pretty(call.args))),
        field("Result", output),
        h("label", { class: "check" }, isError, "This call failed"))),
      h("button", { type: "submit" }, "Send tool results"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      attempt(async () => {
        await post(`/chats/${this.id}/tool-results`, {
          results: inputs.map(({ call, output, isError }) => ({ tool_call_id: call.tool_call_id, output: output.value, is_error: isError.checked })),
        });
        this.actionForms.replaceChildren();
      });
    });
    replace(this.actionForms, form);
    inputs[0].output.focus();
  }
}
