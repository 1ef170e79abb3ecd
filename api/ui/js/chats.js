// The chat list (sidebar): root chats, pinned first, then by activity; live from the watch
// stream, so a chat started or answered anywhere (another tab, the CLI, another replica)
// shows up at once. Filters: title search, one label (`key:value`), archived.

import { get, query } from "./api.js";
import { follow } from "./sse.js";
import { h, replace, when } from "./dom.js";

const BUSY = new Set(["pending", "running", "interrupting", "awaiting_agents"]);

export class ChatList {
  constructor(root, ctx) {
    this.ctx = ctx;
    this.chats = new Map();
    this.selected = null;
    this.filters = { q: "", label: "", archived: false };
    this.search = h("input", {
      type: "search", placeholder: "Search titles", "aria-label": "Search chats by title",
      oninput: () => this.setFilter({ q: this.search.value.trim() }),
    });
    this.labelInput = h("input", {
      type: "text", placeholder: "label key:value", "aria-label": "Filter by label (key:value)",
      onchange: () => this.setFilter({ label: this.labelInput.value.trim() }),
    });
    this.archivedBox = h("input", {
      type: "checkbox", "aria-label": "Show archived chats",
      onchange: () => this.setFilter({ archived: this.archivedBox.checked }),
    });
    this.list = h("ul", { class: "chat-list", "aria-label": "Chat list" });
    this.state = h("p", { class: "muted small list-state", role: "status" });
    replace(root,
      h("div", { class: "sidebar-head" },
        h("a", { class: "button new-chat", href: "#/new" }, "New chat"),
        this.search,
        h("div", { class: "row" }, this.labelInput,
          h("label", { class: "check" }, this.archivedBox, "Archived"))),
      this.state,
      this.list);
    this.reload();
    this.stream = follow("/chats/watch", {
      onEvent: (name, data) => this.onEvent(name, data),
      onState: (state) => {
        this.state.textContent = state === "reconnecting" ? "Reconnecting to live updates…" : "";
        // Events may have been missed while disconnected: list again once live.
        if (state === "live" && this.wasDown) this.reload();
        this.wasDown = state === "reconnecting";
      },
    });
  }

  close() {
    this.stream.close();
    clearTimeout(this.reloadTimer);
  }

  setFilter(change) {
    Object.assign(this.filters, change);
    clearTimeout(this.filterTimer);
    this.filterTimer = setTimeout(() => this.reload(), 150);
  }

  async reload() {
    const ticket = (this.ticket = (this.ticket || 0) + 1);
    try {
      const page = await get("/chats" + query({
        q: this.filters.q, label: this.filters.label || undefined,
        archived: this.filters.archived ? "true" : "false", limit: 100,
      }));
      if (ticket !== this.ticket) return;
      this.chats = new Map(page.items.map((chat) => [chat.id, chat]));
      this.state.textContent = page.items.length === 0 ? "No chats here yet." : "";
      this.render();
    } catch (error) {
      if (ticket === this.ticket) this.state.textContent = `Could not list chats: ${error.message}`;
    }
  }

  onEvent(name, data) {
    if (name === "resync") return this.reload();
    if (name !== "chat" || !data || !data.chat) return undefined;
    const { kind, chat } = data;
    if (kind === "deleted" || !this.matches(chat)) this.chats.delete(chat.id);
    else this.chats.set(chat.id, chat);
    this.render();
    this.ctx.onChatEvent?.(kind, chat);
    // Pinning and archiving move other chats too: list again shortly to stay exact.
    if (kind === "updated" || kind === "archived" || kind === "created") {
      clearTimeout(this.reloadTimer);
      this.reloadTimer = setTimeout(() => this.reload(), 400);
    }
    return undefined;
  }

  matches(chat) {
    if (chat.parent_chat_id) return false;
    if (chat.archived !== this.filters.archived) return false;
    if (this.filters.q && !chat.title.toLowerCase().includes(this.filters.q.toLowerCase())) return false;
    if (this.filters.label) {
      const [key, ...rest] = this.filters.label.split(":");
      if (chat.labels?.[key] !== rest.join(":")) return false;
    }
    return true;
  }

  select(id) {
    this.selected = id;
    this.render();
  }

  /** The chat as last seen (list or watch stream). */
  get(id) {
    return this.chats.get(id);
  }

  render() {
    const chats = [...this.chats.values()].sort((a, b) => {
      const pa = a.pin_order || Infinity;
      const pb = b.pin_order || Infinity;
      if (pa !== pb) return pa - pb;
      return b.updated_at.localeCompare(a.updated_at) || b.id.localeCompare(a.id);
    });
    replace(this.list, chats.map((chat) => this.item(chat)));
  }

  item(chat) {
    const labels = Object.entries(chat.labels || {});
    return h("li", { class: ["chat-item", chat.id === this.selected && "selected", chat.has_unread && "unread"] },
      h("a", {
        href: `#/chat/${chat.id}`,
        "aria-current": chat.id === this.selected ? "page" : null,
        "aria-label": `${chat.title || "Untitled chat"}${chat.has_unread ? " (unread)" : ""}${chat.pin_order ? " (pinned)" : ""}`,
      },
        h("span", { class: "chat-title" },
          chat.title || "Untitled chat"),
        h("span", { class: "chat-meta" },
          chat.pin_order ? h("span", { class: "badge pinned" }, "pinned") : null,
          BUSY.has(chat.status) ? h("span", { class: "badge busy" }, chat.status.replace("_", " ")) : null,
          chat.status === "requires_action" ? h("span", { class: "badge action" }, "needs input") : null,
          chat.status === "error" ? h("span", { class: "badge error" }, "error") : null,
          chat.has_unread ? h("span", { class: "dot", title: "Unread" }) : null,
          h("time", { datetime: chat.updated_at }, when(chat.updated_at)))),
      labels.length
        ? h("div", { class: "labels" }, labels.map(([key, value]) => h("button", {
          type: "button", class: "label-chip", title: "Filter by this label",
          onclick: () => {
            this.labelInput.value = `${key}:${value}`;
            this.setFilter({ label: this.labelInput.value });
          },
        }, `${key}: ${value}`)))
        : null);
  }
}
