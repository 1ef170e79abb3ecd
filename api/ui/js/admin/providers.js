// The admin "Providers" section: list, create, edit and delete LLM providers.

import { get, post, patch, del } from "../api.js";
import { h, replace } from "../dom.js";
import { buildForm, dataTable, yesNo, rowButton } from "../admin_forms.js";
import { openPanel, card, confirmThen, id, code } from "./shared.js";

const PROVIDER_KINDS = ["openai", "openai-responses", "anthropic", "openai-compatible", "mock"];
const BASE_URL_EXAMPLES = {
  openai: "https://api.openai.com/v1",
  "openai-responses": "https://api.openai.com/v1",
  anthropic: "https://api.anthropic.com",
  "openai-compatible": "http://127.0.0.1:8000/v1",
  mock: "http://127.0.0.1:9090/v1",
};

export async function providersSection(view) {
  const { items } = await get("/providers");
  const editor = h("div", { class: "editor-slot" });

  const edit = (provider) => {
    const form = buildForm([
      { name: "display_name", label: "Display name", maxlength: 200, omitEmpty: true },
      { name: "kind", label: "Kind", type: "select", options: PROVIDER_KINDS },
      { name: "base_url", label: "Base URL", required: true, maxlength: 2048 },
      { name: "enabled", label: "Enabled", type: "checkbox" },
      {
        name: "api_key", label: "New API key", type: "password", maxlength: 4096,
        hint: `has_api_key: ${provider.has_api_key ? "yes" : "no"}. Leave empty to keep the stored key.`,
      },
    ], provider, {
      label: `Edit provider ${provider.display_name}`,
      submitLabel: "Save provider",
      onCancel: () => replace(editor),
      extra: provider.has_api_key
        ? h("button", {
          type: "button", class: "danger",
          onclick: () => confirmThen(view, `Erase the API key of "${provider.display_name}"? Requests to it will fail until a new key is set.`,
            "Erase key", () => patch(`/providers/${id(provider.id)}`, { api_key: null }), "API key erased"),
        }, "Erase key")
        : null,
      onSubmit: async (body) => {
        await patch(`/providers/${id(provider.id)}`, body);
        await view.done("Provider saved");
      },
    });
    openPanel(editor, `Edit provider ${provider.display_name}`, form);
  };

  const remove = (provider) => confirmThen(view,
    `Delete the provider "${provider.display_name}"? This is refused while model configs use it.`,
    "Delete", () => del(`/providers/${id(provider.id)}`), "Provider deleted");

  const table = dataTable([
    { label: "Name", cell: (p) => p.display_name },
    { label: "Kind", cell: (p) => code(p.kind) },
    { label: "Base URL", class: "url", cell: (p) => code(p.base_url) },
    { label: "Enabled", cell: (p) => yesNo(p.enabled) },
    { label: "API key stored", cell: (p) => yesNo(p.has_api_key) },
    {
      label: "Actions", class: "actions", cell: (p) => [
        rowButton("Edit", p.display_name, () => edit(p)),
        rowButton("Delete", p.display_name, () => remove(p), "danger"),
      ],
    },
  ], items, { caption: "Providers", empty: "No providers yet: add one below." });

  const create = buildForm([
    { name: "kind", label: "Kind", type: "select", options: PROVIDER_KINDS, required: true, default: "openai" },
    { name: "display_name", label: "Display name", maxlength: 200, omitEmpty: true, hint: "Defaults to the kind." },
    {
      name: "base_url", label: "Base URL", required: true, maxlength: 2048, placeholder: BASE_URL_EXAMPLES.openai,
      hint: "OpenAI and compatible servers with /v1; Anthropic without.",
    },
    { name: "api_key", label: "API key", type: "password", maxlength: 4096, hint: "Write-only: stored encrypted, never shown again." },
    { name: "enabled", label: "Enabled", type: "checkbox", default: true },
  ], {}, {
    label: "New provider",
    submitLabel: "Create provider",
    onSubmit: async (body) => {
      await post("/providers", body);
      await view.done("Provider created");
    },
  });
  create.controls.kind.addEventListener("change", () => {
    create.controls.base_url.placeholder = BASE_URL_EXAMPLES[create.controls.kind.value] || "";
  });

  return h("div", {}, table, editor, card("New provider", create));
}
