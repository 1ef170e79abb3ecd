// Small DOM helpers. Every piece of text goes in through `textContent` or a text node: nothing
// here (or anywhere in the UI) parses strings as HTML, so nothing a model or user writes can
// run as script. The Content-Security-Policy forbids inline script and style besides.

/** `h("button", {class: "x", onclick: f, "aria-label": "Send"}, "Send")` */
export function h(tag, attrs, ...children) {
  const el = tag.includes(":")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.split(":")[1])
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "value" || key === "checked" || key === "selected") {
      el[key] = value;
    } else if (key === "style") {
      throw new Error("use classes, not inline style (the CSP forbids it)");
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces the children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Dollars from micro-dollars: "$0.0012"; `null` → "—". */
export function money(micros) {
  if (micros === null || micros === undefined) return "—";
  const dollars = micros / 1e6;
  if (dollars === 0) return "$0";
  if (Math.abs(dollars) < 0.01) return "$" + dollars.toPrecision(2);
  return "$" + dollars.toFixed(2);
}

/** Dollars typed by a person → micro-dollars (`null` for an empty field). */
export function toMicros(text) {
  const trimmed = String(text ?? "").trim().replace(/^\$/, "");
  if (trimmed === "") return null;
  const value = Number(trimmed);
  if (!Number.isFinite(value) || value < 0) throw new Error(`not an amount: ${text}`);
  return Math.round(value * 1e6);
}

export function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const now = new Date();
  const sameDay = date.toDateString() === now.toDateString();
  return sameDay
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleDateString([], { month: "short", day: "numeric" });
}

export function fullTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

/** A short-lived message at the bottom of the screen (errors, confirmations). */
export function toast(text, kind = "info") {
  let box = document.getElementById("toasts");
  if (!box) {
    box = h("div", { id: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(box);
  }
  const item = h("div", { class: ["toast", kind] }, text);
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}

/** Runs `action`, showing its error as a toast; returns its result or undefined. */
export async function attempt(action) {
  try {
    return await action();
  } catch (error) {
    toast(error.message || String(error), "error");
    return undefined;
  }
}

/** Pretty JSON for cards and forms. */
export function pretty(value) {
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

/** A labelled form field. */
export function field(label, input, hint) {
  return h("label", { class: "field" }, h("span", { class: "field-label" }, label), input,
    hint ? h("small", { class: "hint" }, hint) : null);
}

/** A modal confirmation (a real <dialog>, so focus and Esc behave). */
export function confirmDialog(question, yes = "Confirm") {
  return new Promise((resolve) => {
    const dialog = h("dialog", { class: "confirm", "aria-label": question },
      h("p", {}, question),
      h("div", { class: "row end" },
        h("button", { type: "button", class: "secondary", onclick: () => dialog.close("no") }, "Cancel"),
        h("button", { type: "button", class: "danger", onclick: () => dialog.close("yes") }, yes)));
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(dialog.returnValue === "yes");
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}
