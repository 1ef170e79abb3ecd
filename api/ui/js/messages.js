// Rendering of messages and of the answer while it streams. Text from the model goes through
// the safe Markdown renderer (DOM nodes only); user text is shown as typed.

import { fileUrl } from "./api.js";
import { h, money, pretty, fullTime } from "./dom.js";
import { markdown } from "./markdown.js";

/** One durable message. `actions.edit(message)` is offered on user messages. */
export function renderMessage(message, actions = {}) {
  const role = message.role;
  const body = h("div", { class: "bubble" });
  for (const part of message.content || []) body.append(renderPart(part, role));
  const footer = h("div", { class: "msg-meta" },
    h("time", { datetime: message.created_at, title: fullTime(message.created_at) },
      new Date(message.created_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })),
    message.usage ? h("span", { title: "input / output tokens" },
      `${message.usage.input_tokens} in · ${message.usage.output_tokens} out`) : null,
    message.cost_micros !== null && message.cost_micros !== undefined ? h("span", {}, money(message.cost_micros)) : null,
    message.runtime_ms ? h("span", {}, `${(message.runtime_ms / 1000).toFixed(1)} s`) : null,
    role === "user" && actions.edit
      ? h("button", {
        type: "button", class: "link small", "aria-label": "Edit this message and rerun",
        onclick: () => actions.edit(message, body),
      }, "Edit")
      : null);
  return h("article", {
    class: ["message", role], "data-id": message.id,
    "aria-label": `${roleName(role)} message`,
  }, body, footer);
}

function roleName(role) {
  return { user: "Your", assistant: "Assistant", tool: "Tool result", system: "System" }[role] || role;
}

export function renderPart(part, role) {
  switch (part.type) {
    case "text":
      if (role === "user") return h("div", { class: "text plain" }, part.text);
      if (role === "system" || part.text.startsWith("[Conversation summarised]")) {
        return h("details", { class: "summary" }, h("summary", {}, "Conversation summarised"), markdown(part.text));
      }
      return h("div", { class: "text md" }, markdown(part.text));
    case "reasoning":
      return h("details", { class: "reasoning" }, h("summary", {}, "Reasoning"), h("div", { class: "plain" }, part.text));
    case "redacted-reasoning":
      return h("details", { class: "reasoning" }, h("summary", {}, "Reasoning (encrypted by the provider)"));
    case "tool-call":
    case "provider-tool-call":
      return toolCard(part.tool_name, "call", pretty(part.args), part.tool_call_id);
    case "tool-result":
      return toolResult(part);
    case "provider-tool-result":
      return toolCard(part.block_type, "result", pretty(part.content), part.tool_call_id);
    case "file":
      return attachment(part);
    case "source":
      return h("div", { class: "source" }, "Source: ",
        /^https?:\/\//i.test(part.url)
          ? h("a", { href: part.url, target: "_blank", rel: "noopener noreferrer nofollow" }, part.title || part.url)
          : part.title || part.url);
    default:
      return h("div", { class: "muted small" }, `(${part.type})`);
  }
}

function toolCard(name, kind, text, id, extra) {
  return h("details", { class: ["tool-card", kind], open: kind === "call" ? null : null, "data-tool-call-id": id },
    h("summary", {}, h("span", { class: "tool-kind" }, kind === "call" ? "Tool call" : kind === "error" ? "Tool error" : "Tool result"),
      " ", h("code", {}, name), extra || null),
    h("pre", { class: "code" }, h("code", {}, text)));
}

function toolResult(part) {
  const result = part.result;
  const childId = result && typeof result === "object" && typeof result.chat_id === "string" ? result.chat_id : null;
  const extra = childId
    ? h("a", { class: "child-link", href: `#/chat/${childId}`, onclick: (event) => event.stopPropagation() }, " → sub-agent chat")
    : null;
  return toolCard(part.tool_name, part.is_error ? "error" : "result", pretty(result), part.tool_call_id, extra);
}

function attachment(part) {
  const label = part.name || part.media_type || "attachment";
  if (part.media_type && part.media_type.startsWith("image/")) {
    const img = h("img", { class: "thumb", alt: label, loading: "lazy" });
    if (part.data) img.src = `data:${part.media_type};base64,${part.data}`;
    else if (part.file_id) fileUrl(part.file_id).then((url) => { img.src = url; }).catch(() => { img.alt = `${label} (unavailable)`; });
    return h("figure", { class: "attachment" }, img, h("figcaption", {}, label));
  }
  const chip = h("a", { class: "file-chip", href: "#", role: "button" }, `Attachment: ${label}`);
  if (part.file_id) {
    chip.addEventListener("click", async (event) => {
      event.preventDefault();
      const url = await fileUrl(part.file_id);
      const a = h("a", { href: url, download: part.name || "attachment" });
      a.click();
    });
  }
  return chip;
}

/**
 * The answer while it streams: `message_part` deltas of the current attempts, replaced by the
 * durable messages when they arrive. Reasoning and tool calls get their own blocks.
 */
export class Preview {
  constructor() {
    this.element = h("article", { class: "message assistant preview", "aria-live": "polite", "aria-label": "Answer in progress" });
    this.blocks = [];
  }

  get empty() {
    return this.blocks.length === 0;
  }

  clear() {
    this.blocks = [];
    this.element.replaceChildren();
  }

  /** Drops what `attempt` streamed (an `attempt_reset`). */
  reset(attempt) {
    this.blocks = this.blocks.filter((block) => block.attempt !== attempt);
    this.render();
  }

  add(event) {
    const part = event.part;
    const last = this.blocks[this.blocks.length - 1];
    if (part.type === "tool-call") {
      const open = this.blocks.find((block) => block.type === "tool-call" && block.id === part.tool_call_id);
      if (open) open.text += part.args_delta;
      else this.blocks.push({ type: "tool-call", attempt: event.attempt, id: part.tool_call_id, name: part.tool_name, text: part.args_delta });
    } else if (last && last.type === part.type && last.attempt === event.attempt) {
      last.text += part.text;
    } else {
      this.blocks.push({ type: part.type, attempt: event.attempt, text: part.text });
    }
    this.render();
  }

  render() {
    // Re-rendering the whole preview per delta keeps Markdown right while it streams; previews
    // are one step long, so this stays cheap.
    const bubble = h("div", { class: "bubble" });
    for (const block of this.blocks) {
      if (block.type === "text") bubble.append(h("div", { class: "text md" }, markdown(block.text)));
      else if (block.type === "reasoning") bubble.append(h("details", { class: "reasoning", open: true }, h("summary", {}, "Reasoning"), h("div", { class: "plain" }, block.text)));
      else bubble.append(toolCard(block.name, "call", block.text, block.id));
    }
    this.element.replaceChildren(bubble);
  }
}
