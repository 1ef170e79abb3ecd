// A small form builder for the admin and usage screens, and the pieces they share (tables,
// load errors, the token manager). Forms turn what people type into the JSON types the API
// wants: numbers, booleans, `null` for an emptied nullable field, micro-dollars from dollars,
// RFC 3339 from a local date and time. An error (a value that does not convert, or the API's
// answer) shows inside the form, naming the field, and the field is marked invalid.
//
// Field spec: {name, label, type, options, hint, required, nullable, omitEmpty, min, max, step,
// maxlength, pattern, placeholder, rows, default, showIf(values) , autocomplete}
//   type: "text" | "password" | "number" | "select" | "checkbox" | "textarea" | "money" |
//         "json" | "datetime" | "list" (comma-separated strings)
//   nullable: an empty field sends `null`; omitEmpty: an empty field is left out (the default
//   for "password": secrets are write-only, never prefilled, and empty means "unchanged").
//   select options: ["a", "b"] or [{value, label}] (`value: null` is the "none" choice).
//   showIf(values): the field shows (and is sent) only while it answers true.

import { h, replace, toMicros, pretty, toast, confirmDialog, fullTime } from "./dom.js";
import { ApiError, get, post, del, token as currentToken } from "./api.js";

let counter = 0;
const uid = (prefix) => `${prefix}-${++counter}`;

/** Left out of the body (an empty optional field). */
const OMIT = Symbol("omit");

/** A problem with one field (`name`), shown inline next to the form's other errors. */
export class FieldError extends Error {
  constructor(name, message) {
    super(message);
    this.field = name;
  }
}

/** Micro-dollars → the dollars a person types ("" for null). */
export function dollars(micros) {
  if (micros === null || micros === undefined) return "";
  return String(micros / 1e6);
}

/** An ISO instant → the value of a `datetime-local` input (local time). */
function toLocalInput(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}` +
    `T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

function normalizeOptions(options) {
  return (options || []).map((option) => {
    if (option !== null && typeof option === "object") {
      const raw = option.value === undefined ? null : option.value;
      return { raw, value: raw === null ? "" : String(raw), label: option.label ?? String(raw ?? "—") };
    }
    return { raw: option, value: String(option), label: String(option) };
  });
}

function initialText(spec, value) {
  if (value === undefined || value === null) return "";
  switch (spec.type) {
    case "money": return dollars(value);
    case "datetime": return toLocalInput(value);
    case "json": return pretty(value);
    case "list": return Array.isArray(value) ? value.join(", ") : String(value);
    default: return String(value);
  }
}

function control(spec, value, describedBy) {
  const type = spec.type || "text";
  const common = {
    name: spec.name,
    id: uid(`f-${spec.name}`),
    required: spec.required || undefined,
    placeholder: spec.placeholder,
    "aria-describedby": describedBy,
  };
  if (type === "checkbox") {
    return h("input", { ...common, type: "checkbox", checked: Boolean(value) });
  }
  if (type === "select") {
    const options = normalizeOptions(spec.options);
    const current = value === undefined || value === null ? "" : String(value);
    const select = h("select", common,
      options.map((option) => h("option", { value: option.value }, option.label)));
    if (options.some((option) => option.value === current)) select.value = current;
    return select;
  }
  if (type === "textarea" || type === "json") {
    return h("textarea", {
      ...common, rows: spec.rows || (type === "json" ? 4 : 6), maxlength: spec.maxlength,
      spellcheck: type === "json" ? "false" : undefined,
      value: initialText(spec, value),
    });
  }
  if (type === "password") {
    // Write-only: never prefilled.
    return h("input", {
      ...common, type: "password", autocomplete: "new-password", maxlength: spec.maxlength,
      spellcheck: "false",
    });
  }
  const attrs = { ...common, maxlength: spec.maxlength, pattern: spec.pattern, autocomplete: spec.autocomplete || "off" };
  if (type === "number") {
    Object.assign(attrs, { type: "number", min: spec.min, max: spec.max, step: spec.step || 1, inputmode: "numeric" });
  } else if (type === "money") {
    Object.assign(attrs, { type: "text", inputmode: "decimal", placeholder: spec.placeholder || "0.00" });
  } else if (type === "datetime") {
    attrs.type = "datetime-local";
  } else {
    attrs.type = "text";
  }
  return h("input", { ...attrs, value: initialText(spec, value) });
}

function convert(spec, input) {
  const type = spec.type || "text";
  const label = spec.label || spec.name;
  if (type === "checkbox") return input.checked;
  if (type === "select") {
    const option = normalizeOptions(spec.options).find((o) => o.value === input.value);
    if (option && option.raw === null) return spec.nullable ? null : OMIT;
    if (input.value === "") return spec.nullable ? null : OMIT;
    return option ? option.raw : input.value;
  }
  const raw = input.value;
  const keepsSpaces = type === "textarea";
  const text = keepsSpaces ? raw : raw.trim();
  if (text.trim() === "") {
    if (spec.omitEmpty || type === "password") return OMIT;
    if (spec.nullable) return null;
    if (spec.required) throw new FieldError(spec.name, `${label} is required.`);
    if (type === "text" || type === "textarea") return text;
    if (type === "list") return [];
    return OMIT;
  }
  switch (type) {
    case "number": {
      const number = Number(text);
      if (!Number.isFinite(number)) throw new FieldError(spec.name, `${label}: not a number.`);
      if (spec.step !== "any" && !Number.isInteger(number)) {
        throw new FieldError(spec.name, `${label}: must be a whole number.`);
      }
      if (spec.min !== undefined && number < spec.min) throw new FieldError(spec.name, `${label}: at least ${spec.min}.`);
      if (spec.max !== undefined && number > spec.max) throw new FieldError(spec.name, `${label}: at most ${spec.max}.`);
      return number;
    }
    case "money":
      try {
        return toMicros(text);
      } catch {
        throw new FieldError(spec.name, `${label}: enter an amount in dollars, like 2.50.`);
      }
    case "json":
      try {
        return JSON.parse(text);
      } catch (error) {
        throw new FieldError(spec.name, `${label}: not valid JSON (${error.message}).`);
      }
    case "datetime": {
      const date = new Date(text);
      if (Number.isNaN(date.getTime())) throw new FieldError(spec.name, `${label}: not a date and time.`);
      return date.toISOString();
    }
    case "list":
      return text.split(/[,\n]/).map((item) => item.trim()).filter(Boolean);
    default:
      return text;
  }
}

/** The text of an error for people: the message, and the field the API refused. */
export function describeError(error) {
  if (error instanceof ApiError) {
    const name = error.details && error.details.field;
    return name && !error.message.includes(name) ? `${error.message} (field: ${name})` : error.message;
  }
  return (error && error.message) || String(error);
}

/**
 * A <form>. `onSubmit(values, form)` may be async; what it throws shows inline. Options:
 * `submitLabel`, `onSubmit`, `label` (the form's accessible name), `onCancel` / `cancelLabel`,
 * `extra` (more buttons or nodes for the button row), `class`.
 * The form gets `.values()` (throws on a bad field), `.showError(error)`, `.clearError()`,
 * `.controls` (name → element).
 */
export function buildForm(fields, initial = {}, options = {}) {
  const errorId = uid("form-error");
  const error = h("p", { class: "error form-error", role: "alert", id: errorId });
  const controls = {};
  const wrappers = {};
  const rows = fields.map((spec) => {
    const value = initial && initial[spec.name] !== undefined ? initial[spec.name] : spec.default;
    const hintId = spec.hint ? uid("hint") : undefined;
    const input = control(spec, value, hintId);
    controls[spec.name] = input;
    let wrapper;
    if (spec.type === "checkbox") {
      wrapper = h("div", { class: "field check-field" },
        h("label", { class: "check" }, input, spec.label),
        spec.hint ? h("small", { class: "hint", id: hintId }, spec.hint) : null);
    } else {
      // The <label> holds only the label text, so the control's accessible name is exactly
      // `spec.label` (the hint is its description, the required mark is outside).
      wrapper = h("div", { class: "field" },
        h("span", { class: "label-row" },
          h("label", { class: "field-label", for: input.id }, spec.label),
          spec.required ? h("span", { class: "required", "aria-hidden": "true" }, " *") : null),
        input,
        spec.hint ? h("small", { class: "hint", id: hintId }, spec.hint) : null);
      if (spec.type === "money") wrapper.classList.add("money-field");
    }
    wrapper.classList.add(`field-${spec.type || "text"}`);
    wrappers[spec.name] = wrapper;
    return wrapper;
  });

  const submit = h("button", { type: "submit" }, options.submitLabel || "Save");
  const buttons = h("div", { class: "row form-buttons" }, submit,
    options.extra || null,
    options.onCancel
      ? h("button", { type: "button", class: "secondary", onclick: () => options.onCancel() }, options.cancelLabel || "Cancel")
      : null);
  const form = h("form", {
    class: ["admin-form", options.class],
    "aria-label": options.label,
    novalidate: options.novalidate || undefined,
  }, h("div", { class: "form-fields" }, rows), error, buttons);

  /** The current raw values, for `showIf` (no conversion errors here). */
  function rawValues() {
    const values = {};
    for (const spec of fields) {
      const input = controls[spec.name];
      values[spec.name] = spec.type === "checkbox" ? input.checked : input.value;
    }
    return values;
  }

  // A field whose `showIf` answers false is taken out of the form (a comment keeps its
  // place), so it needs no CSS to disappear and is left out of validation and of the body.
  const placeholders = {};
  const hidden = new Set();
  function updateVisibility() {
    const raw = rawValues();
    for (const spec of fields) {
      if (!spec.showIf) continue;
      const shown = Boolean(spec.showIf(raw));
      const wrapper = wrappers[spec.name];
      if (!placeholders[spec.name]) placeholders[spec.name] = document.createComment(spec.name);
      const placeholder = placeholders[spec.name];
      if (shown && hidden.has(spec.name)) {
        placeholder.replaceWith(wrapper);
        hidden.delete(spec.name);
      } else if (!shown && !hidden.has(spec.name)) {
        wrapper.replaceWith(placeholder);
        hidden.add(spec.name);
      }
      controls[spec.name].disabled = !shown;
    }
  }

  function values() {
    const result = {};
    for (const spec of fields) {
      const input = controls[spec.name];
      if (hidden.has(spec.name)) continue;
      const value = convert(spec, input);
      if (value !== OMIT) result[spec.name] = value;
    }
    return result;
  }

  function clearError() {
    error.textContent = "";
    for (const input of Object.values(controls)) {
      input.removeAttribute("aria-invalid");
      const described = (input.getAttribute("aria-describedby") || "").split(" ").filter((id) => id && id !== errorId);
      if (described.length) input.setAttribute("aria-describedby", described.join(" "));
      else input.removeAttribute("aria-describedby");
    }
  }

  function showError(failure) {
    clearError();
    error.textContent = describeError(failure);
    let name = failure instanceof FieldError ? failure.field : null;
    if (!name && failure instanceof ApiError && failure.details && failure.details.field) {
      const wanted = String(failure.details.field);
      name = Object.keys(controls).find((key) => key === wanted) ||
        Object.keys(controls).find((key) => wanted.startsWith(`${key}.`) || wanted.startsWith(`${key}[`) || key.startsWith(`${wanted}_`));
    }
    const input = name && controls[name];
    if (input && !input.disabled) {
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", [input.getAttribute("aria-describedby"), errorId].filter(Boolean).join(" "));
      input.focus();
    }
  }

  let busy = false;
  form.addEventListener("input", updateVisibility);
  form.addEventListener("change", updateVisibility);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy) return;
    clearError();
    let body;
    try {
      body = values();
    } catch (failure) {
      showError(failure);
      return;
    }
    busy = true;
    submit.disabled = true;
    form.setAttribute("aria-busy", "true");
    try {
      if (options.onSubmit) await options.onSubmit(body, form);
    } catch (failure) {
      showError(failure);
    } finally {
      busy = false;
      submit.disabled = false;
      form.removeAttribute("aria-busy");
    }
  });
  updateVisibility();

  form.values = values;
  form.showError = showError;
  form.clearError = clearError;
  form.controls = controls;
  form.submitButton = submit;
  return form;
}

/**
 * A table: `columns` are `{label, cell(row) → node|text, class}`; `caption` names it for
 * screen readers (visually hidden unless `showCaption`).
 */
export function dataTable(columns, rows, { caption, empty = "Nothing here yet.", showCaption = false, rowClass } = {}) {
  if (!rows.length) return h("p", { class: "muted empty-list" }, empty);
  return h("div", { class: "table-wrap" },
    h("table", { class: "data-table" },
      caption ? h("caption", { class: showCaption ? null : "visually-hidden" }, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((column) => h("th", { scope: "col", class: column.class }, column.label)))),
      h("tbody", {}, rows.map((row) => h("tr", { class: rowClass ? rowClass(row) : null },
        columns.map((column, index) => {
          const content = column.cell(row);
          return index === 0
            ? h("th", { scope: "row", class: column.class }, content)
            : h("td", { class: column.class }, content);
        }))))));
}

/** A "could not load" notice. */
export function loadError(what, error) {
  return h("p", { class: "error load-error", role: "alert" }, `Could not load ${what}: ${describeError(error)}`);
}

/** Yes/no for a boolean cell. */
export function yesNo(value) {
  return h("span", { class: ["flag", value ? "yes" : "no"] }, value ? "yes" : "no");
}

/** A small button for a table row: visible `text`, accessible name `text subject`. */
export function rowButton(text, subject, onclick, kind = "secondary") {
  return h("button", {
    type: "button", class: [kind, "small"], "aria-label": subject ? `${text} ${subject}` : undefined, onclick,
  }, text);
}

/** Copies text to the clipboard (falls back to selecting it in `input`). */
export async function copyText(text, input) {
  try {
    await navigator.clipboard.writeText(text);
    toast("Copied to the clipboard");
  } catch {
    if (input) {
      input.focus();
      input.select();
    }
    toast("Could not copy: the text is selected, press Ctrl+C (⌘C)", "error");
  }
}

/** A token's secret, shown once: a read-only input, a Copy button and a warning. */
export function secretPanel(secret, onDone) {
  const input = h("input", {
    type: "text", readonly: true, value: secret, class: "secret-value", spellcheck: "false",
    autocomplete: "off", "aria-label": "New token secret",
  });
  input.addEventListener("focus", () => input.select());
  const panel = h("div", { class: "secret-panel card", role: "group", "aria-label": "New token" },
    h("p", { class: "warning" }, h("strong", {}, "Copy this token now. "),
      "It is shown only this once; chatd keeps only its hash and cannot show it again."),
    h("div", { class: "row secret-row" }, input,
      h("button", { type: "button", onclick: () => copyText(secret, input) }, "Copy"),
      h("button", { type: "button", class: "secondary", onclick: () => { panel.remove(); if (onDone) onDone(); } }, "Done")));
  return panel;
}

/** Whether this browser signs in with the listed token. */
function isCurrentToken(item) {
  const current = currentToken() || "";
  return Boolean(item.prefix) && current.startsWith(`chatd_${item.prefix}_`);
}

/**
 * A user's tokens: the list (name, prefix, created, last used, expires), a create form whose
 * answer's secret is shown once, and revoke with a confirmation. `basePath`:
 * `/users/me/tokens` or `/users/{id}/tokens`.
 */
export function tokenManager(basePath, { heading = "API tokens", headingLevel = "h3" } = {}) {
  const headingId = uid("tokens");
  const secretSlot = h("div", { class: "secret-slot" });
  const listSlot = h("div", { class: "token-list", "aria-live": "polite" }, h("p", { class: "muted" }, "Loading tokens…"));
  let alive = true;

  async function load() {
    try {
      const answer = await get(basePath);
      if (!alive) return;
      const items = answer.items || [];
      replace(listSlot, dataTable([
        { label: "Name", cell: (t) => [t.name || "(unnamed)", isCurrentToken(t) ? h("span", { class: "badge" }, "this browser") : null] },
        { label: "Prefix", cell: (t) => h("code", {}, t.prefix || "") },
        { label: "Created", cell: (t) => fullTime(t.created_at) },
        { label: "Last used", cell: (t) => (t.last_used_at ? fullTime(t.last_used_at) : "never") },
        { label: "Expires", cell: (t) => (t.expires_at ? fullTime(t.expires_at) : "never") },
        { label: "Actions", class: "actions", cell: (t) => rowButton("Revoke", `token ${t.name}`, () => revoke(t), "danger") },
      ], items, { caption: heading, empty: "No tokens." }));
    } catch (error) {
      if (alive) replace(listSlot, loadError("tokens", error));
    }
  }

  async function revoke(item) {
    const current = isCurrentToken(item);
    const question = `Revoke the token "${item.name}"? Programs using it stop working at once.` +
      (current ? " This browser is signed in with it: you will be signed out." : "");
    if (!(await confirmDialog(question, "Revoke"))) return;
    try {
      await del(`${basePath}/${encodeURIComponent(item.id)}`);
      toast("Token revoked");
      if (!current) load();
    } catch (error) {
      toast(describeError(error), "error");
    }
  }

  const form = buildForm([
    { name: "name", label: "Name", type: "text", required: true, maxlength: 200, placeholder: "laptop, CI, …" },
    { name: "expires_at", label: "Expires", type: "datetime", nullable: true, hint: "Local time; leave empty for a token that never expires." },
  ], {}, {
    label: "New token",
    submitLabel: "Create token",
    onSubmit: async (body) => {
      const created = await post(basePath, body);
      replace(secretSlot, secretPanel(created.secret, () => form.controls.name.focus()));
      form.controls.name.value = "";
      form.controls.expires_at.value = "";
      toast("Token created");
      secretSlot.querySelector("input").focus();
      load();
    },
  });

  const root = h("section", { class: "tokens", "aria-labelledby": headingId },
    h(headingLevel, { id: headingId }, heading),
    secretSlot,
    listSlot,
    h("h4", {}, "New token"),
    form);
  root.reload = load;
  root.close = () => { alive = false; };
  load();
  return root;
}
