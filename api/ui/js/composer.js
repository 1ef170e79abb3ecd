// The composer: a text area (Enter sends, Shift+Enter is a new line), attachments by button,
// drag-and-drop or paste (uploaded at once, shown as thumbnails), Send and Stop.

import { upload } from "./api.js";
import { h, replace, toast } from "./dom.js";

export class Composer {
  /** `onSend(content)` → a promise; `onStop()` interrupts. */
  constructor({ onSend, onStop, placeholder = "Message (Enter sends, Shift+Enter new line)" }) {
    this.onSend = onSend;
    this.onStop = onStop;
    this.files = [];
    this.input = h("textarea", {
      rows: 2, placeholder, "aria-label": "Message", name: "message",
      onkeydown: (event) => {
        if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          this.send();
        }
      },
      onpaste: (event) => {
        const files = [...(event.clipboardData?.files || [])];
        if (files.length) {
          event.preventDefault();
          this.attach(files);
        }
      },
      oninput: () => this.autosize(),
    });
    this.picker = h("input", {
      type: "file", multiple: true, class: "visually-hidden", tabindex: "-1", "aria-hidden": "true",
      onchange: () => {
        this.attach([...this.picker.files]);
        this.picker.value = "";
      },
    });
    this.tray = h("div", { class: "tray", "aria-label": "Attachments" });
    this.sendButton = h("button", { type: "button", class: "send", onclick: () => this.send() }, "Send");
    this.stopButton = h("button", {
      type: "button", class: "danger stop", hidden: true, onclick: () => this.onStop?.(),
      "aria-label": "Stop the answer (Esc)",
    }, "Stop");
    this.element = h("div", { class: "composer" },
      this.tray,
      h("div", { class: "composer-row" },
        h("button", {
          type: "button", class: "secondary icon", "aria-label": "Attach files", title: "Attach files",
          onclick: () => this.picker.click(),
        }, "Attach"),
        this.input, this.picker, this.stopButton, this.sendButton));
  }

  /** Lets files be dropped anywhere on `zone`. */
  dropZone(zone) {
    zone.addEventListener("dragover", (event) => {
      if ([...event.dataTransfer.types].includes("Files")) {
        event.preventDefault();
        zone.classList.add("dragging");
      }
    });
    zone.addEventListener("dragleave", (event) => {
      if (event.target === zone) zone.classList.remove("dragging");
    });
    zone.addEventListener("drop", (event) => {
      zone.classList.remove("dragging");
      const files = [...(event.dataTransfer?.files || [])];
      if (files.length) {
        event.preventDefault();
        this.attach(files);
      }
    });
  }

  setBusy(busy) {
    this.busy = busy;
    this.stopButton.hidden = !busy;
    this.sendButton.textContent = busy ? "Queue" : "Send";
    this.sendButton.setAttribute("aria-label", busy ? "Queue the message (the chat is busy)" : "Send");
  }

  focus() {
    this.input.focus();
  }

  autosize() {
    this.input.rows = Math.min(10, Math.max(2, this.input.value.split("\n").length));
  }

  attach(files) {
    for (const file of files) {
      const entry = { file, name: file.name || "pasted", status: "uploading", id: null };
      entry.preview = file.type.startsWith("image/") ? URL.createObjectURL(file) : null;
      this.files.push(entry);
      entry.done = upload(file).then((meta) => {
        entry.id = meta.id;
        entry.status = "ready";
      }).catch((error) => {
        entry.status = "failed";
        toast(`Could not upload ${entry.name}: ${error.message}`, "error");
      }).finally(() => this.renderTray());
    }
    this.renderTray();
  }

  renderTray() {
    replace(this.tray, this.files.map((entry) => h("div", { class: ["pending-file", entry.status] },
      entry.preview ? h("img", { src: entry.preview, alt: entry.name, class: "thumb small" }) : h("span", { class: "file-chip" }, entry.name),
      h("span", { class: "small muted" }, entry.status === "ready" ? "" : entry.status),
      h("button", {
        type: "button", class: "link small", "aria-label": `Remove ${entry.name}`,
        onclick: () => {
          this.files = this.files.filter((other) => other !== entry);
          if (entry.preview) URL.revokeObjectURL(entry.preview);
          this.renderTray();
        },
      }, "✕"))));
  }

  /**
   * Sends what is typed and attached. The composer clears at once, so the next message can be
   * typed while this one is on its way; sends go out one after another in order, and what
   * could not be sent comes back into the composer with the error.
   */
  send() {
    const text = this.input.value;
    const files = this.files;
    if (text.trim() === "" && files.length === 0) return this.chain;
    this.input.value = "";
    this.files = [];
    this.renderTray();
    this.autosize();
    this.chain = (this.chain || Promise.resolve()).then(() => this.deliver(text, files));
    return this.chain;
  }

  async deliver(text, files) {
    try {
      await Promise.all(files.map((entry) => entry.done));
      const failed = files.filter((entry) => entry.status !== "ready");
      if (failed.length) throw new Error(`remove the attachments that failed: ${failed.map((f) => f.name).join(", ")}`);
      let content = text;
      if (files.length) {
        content = [];
        if (text.trim() !== "") content.push({ type: "text", text });
        for (const entry of files) content.push({ type: "file", file_id: entry.id });
      }
      await this.onSend(content);
      files.forEach((entry) => entry.preview && URL.revokeObjectURL(entry.preview));
    } catch (error) {
      toast(`Not sent: ${error.message}`, "error");
      this.input.value = this.input.value.trim() === "" ? text : `${text}\n${this.input.value}`;
      this.files = files.concat(this.files);
      this.renderTray();
      this.autosize();
    }
  }
}
