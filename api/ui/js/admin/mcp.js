// The admin "MCP servers" section: list, create, edit and delete MCP servers.

import { get, post, patch, del } from "../api.js";
import { h, replace } from "../dom.js";
import { buildForm, dataTable, yesNo, rowButton, FieldError } from "../admin_forms.js";
import { openPanel, card, act, confirmThen, id, code } from "./shared.js";

const AVAILABILITY = [
  { value: "force_on", label: "force_on: every chat, cannot be turned off" },
  { value: "default_on", label: "default_on: on unless a chat turns it off" },
  { value: "default_off", label: "default_off: only chats that ask for it" },
];

function mcpFields(editing) {
  const auth = [
    ...(editing ? [{ value: "keep", label: "Keep the stored authentication" }] : []),
    { value: "none", label: "None" },
    { value: "bearer", label: "Bearer token" },
    { value: "headers", label: "Headers (JSON object)" },
  ];
  return [
    {
      name: "name", label: "Name", required: true, maxlength: 32, pattern: "[a-z0-9_\\-]{1,32}",
      hint: "Lower-case letters, digits, _ and -; tools are offered to models as <name>__<tool>.",
    },
    { name: "url", label: "URL", required: true, maxlength: 2048, placeholder: "https://mcp.example.com/mcp" },
    { name: "transport", label: "Transport", type: "select", options: ["streamable-http", "sse"], default: "streamable-http" },
    { name: "auth_type", label: "Authentication", type: "select", options: auth, default: editing ? "keep" : "none" },
    {
      name: "auth_token", label: "Bearer token", type: "password", required: true, maxlength: 4096,
      showIf: (v) => v.auth_type === "bearer", hint: "Write-only: sent as Authorization: Bearer …, never shown again.",
    },
    {
      name: "auth_headers", label: "Headers (JSON object)", type: "json", required: true, rows: 4,
      placeholder: "{\"X-Api-Key\": \"…\"}",
      showIf: (v) => v.auth_type === "headers", hint: "Write-only: 1 to 32 headers sent with every request, never shown again.",
    },
    {
      name: "tool_allowlist", label: "Tool allowlist", type: "list", nullable: true,
      hint: "Comma-separated tool names (the server's names); empty: every tool.",
    },
    { name: "tool_denylist", label: "Tool denylist", type: "list", nullable: true, hint: "Comma-separated tool names never offered." },
    { name: "availability", label: "Availability", type: "select", options: AVAILABILITY, default: "default_on" },
    { name: "enabled", label: "Enabled", type: "checkbox", default: true },
  ];
}

/** The form's values → a create or patch body (the auth fields become one `auth` object). */
function mcpBody(values) {
  const { auth_type: authType, auth_token: authToken, auth_headers: headers, ...body } = values;
  if (authType === "none") body.auth = { type: "none" };
  else if (authType === "bearer") body.auth = { type: "bearer", token: authToken };
  else if (authType === "headers") {
    if (!headers || typeof headers !== "object" || Array.isArray(headers) || !Object.keys(headers).length) {
      throw new FieldError("auth_headers", "Headers: a JSON object of header names to values, like {\"X-Api-Key\": \"…\"}.");
    }
    for (const [name, value] of Object.entries(headers)) {
      if (typeof value !== "string") throw new FieldError("auth_headers", `Headers: the value of ${name} must be a string.`);
    }
    body.auth = { type: "headers", headers };
  }
  for (const key of ["tool_allowlist", "tool_denylist"]) {
    if (Array.isArray(body[key]) && !body[key].length) body[key] = null;
  }
  return body;
}

export async function mcpSection(view) {
  const { items } = await get("/mcp-servers");
  const editor = h("div", { class: "editor-slot" });
  const path = (server) => `/mcp-servers/${id(server.id)}`;

  const edit = (server) => {
    const form = buildForm(mcpFields(true), { ...server, auth_type: "keep" }, {
      label: `Edit MCP server ${server.name}`,
      submitLabel: "Save MCP server",
      onCancel: () => replace(editor),
      onSubmit: async (values) => {
        await patch(path(server), mcpBody(values));
        await view.done(`MCP server ${values.name || server.name} saved`);
      },
    });
    openPanel(editor, `Edit MCP server ${server.name}`, form);
  };

  const list = (names) => (names && names.length ? names.join(", ") : null);
  const table = dataTable([
    { label: "Name", cell: (s) => code(s.name) },
    { label: "URL", class: "url", cell: (s) => code(s.url) },
    { label: "Transport", cell: (s) => s.transport },
    { label: "Auth", cell: (s) => `${s.auth_type}${s.auth_type !== "none" ? (s.has_auth ? " (stored)" : " (missing)") : ""}` },
    { label: "Availability", cell: (s) => code(s.availability) },
    {
      label: "Tools", cell: (s) => [
        h("div", {}, "allow: ", list(s.tool_allowlist) || h("span", { class: "muted" }, "all")),
        list(s.tool_denylist) ? h("div", {}, "deny: ", list(s.tool_denylist)) : null,
      ],
    },
    { label: "Enabled", cell: (s) => yesNo(s.enabled) },
    {
      label: "Actions", class: "actions", cell: (s) => [
        rowButton(s.enabled ? "Disable" : "Enable", s.name,
          () => act(view, () => patch(path(s), { enabled: !s.enabled }), `MCP server ${s.name} ${s.enabled ? "disabled" : "enabled"}`)),
        rowButton("Edit", s.name, () => edit(s)),
        rowButton("Delete", s.name, () => confirmThen(view,
          `Delete the MCP server "${s.name}"? Chats that named it go on without it.`, "Delete",
          () => del(path(s)), `MCP server ${s.name} deleted`), "danger"),
      ],
    },
  ], items || [], { caption: "MCP servers", empty: "No MCP servers yet." });

  const create = buildForm(mcpFields(false), {}, {
    label: "New MCP server",
    submitLabel: "Create MCP server",
    onSubmit: async (values) => {
      await post("/mcp-servers", mcpBody(values));
      await view.done(`MCP server ${values.name} created`);
    },
  });

  return h("div", {}, table, editor, card("New MCP server", create));
}
