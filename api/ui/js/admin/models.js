// The admin "Models" section: model configs (prices, limits, the default) per provider.

import { get, post, patch, del, query } from "../api.js";
import { h, replace, money } from "../dom.js";
import { buildForm, dataTable, yesNo, rowButton } from "../admin_forms.js";
import { openPanel, card, act, confirmThen, id, code, number } from "./shared.js";

function modelConfigFields(providers, { creating }) {
  const fields = [
    {
      name: "provider_id", label: "Provider", type: "select", required: true,
      options: providers.map((p) => ({ value: p.id, label: `${p.display_name} (${p.kind})${p.enabled ? "" : " — disabled"}` })),
      default: providers.length ? providers[0].id : undefined,
    },
    { name: "model", label: "Model", required: true, maxlength: 200, placeholder: "gpt-4o", hint: "The provider's model name." },
    { name: "display_name", label: "Display name", maxlength: 200, omitEmpty: true, hint: creating ? "Defaults to the model." : undefined },
    { name: "context_limit", label: "Context limit (tokens)", type: "number", min: 1, omitEmpty: true, required: !creating },
    {
      name: "compression_threshold", label: "Compression threshold (%)", type: "number", min: 0, max: 100, omitEmpty: true,
      required: !creating, hint: "Percent of the context at which history is compacted.",
    },
    { name: "input_price_micros", label: "Input price ($ per million tokens)", type: "money", nullable: true, placeholder: "2.50" },
    { name: "output_price_micros", label: "Output price ($ per million tokens)", type: "money", nullable: true, placeholder: "10.00" },
    { name: "cache_read_price_micros", label: "Cache read price ($ per million tokens)", type: "money", nullable: true },
    { name: "cache_write_price_micros", label: "Cache write price ($ per million tokens)", type: "money", nullable: true },
    {
      name: "max_output_tokens", label: "Max output tokens", type: "number", min: 1, nullable: true,
      hint: creating ? "Empty for the provider's default." : "Empty clears it.",
    },
    { name: "supports_images", label: "Accepts images", type: "checkbox", default: true },
  ];
  if (creating) fields.push({ name: "is_default", label: "Make this the default", type: "checkbox", hint: "Moves the default here (it must be enabled)." });
  fields.push({ name: "enabled", label: "Enabled", type: "checkbox", default: true });
  return fields;
}

export async function modelsSection(view) {
  const showDeleted = Boolean(view.state.showDeleted);
  const [providerList, configList] = await Promise.all([
    get("/providers"),
    get("/model-configs" + query({ include_deleted: showDeleted ? "true" : "false" })),
  ]);
  const providers = providerList.items || [];
  const configs = configList.items || [];
  const providerName = (pid) => {
    const provider = providers.find((p) => p.id === pid);
    return provider ? provider.display_name : "(deleted provider)";
  };
  const editor = h("div", { class: "editor-slot" });
  const path = (config) => `/model-configs/${id(config.id)}`;

  const edit = (config) => {
    const form = buildForm(modelConfigFields(providers, { creating: false }), config, {
      label: `Edit model config ${config.display_name}`,
      submitLabel: "Save model config",
      onCancel: () => replace(editor),
      onSubmit: async (body) => {
        await patch(path(config), body);
        await view.done("Model config saved");
      },
    });
    openPanel(editor, `Edit model config ${config.display_name}`, form);
  };

  const actions = (c) => {
    if (c.deleted) return h("span", { class: "muted" }, "deleted");
    return [
      c.is_default || !c.enabled ? null
        : rowButton("Make default", c.display_name, () => act(view, () => patch(path(c), { is_default: true }), `${c.display_name} is now the default`)),
      rowButton(c.enabled ? "Disable" : "Enable", c.display_name,
        () => act(view, () => patch(path(c), { enabled: !c.enabled }), `Model config ${c.enabled ? "disabled" : "enabled"}`)),
      rowButton("Edit", c.display_name, () => edit(c)),
      rowButton("Delete", c.display_name, () => confirmThen(view,
        `Delete the model config "${c.display_name}"? Chats that chose it fall back to the default; its spend history stays.`,
        "Delete", () => del(path(c)), "Model config deleted"), "danger"),
    ];
  };

  const table = dataTable([
    { label: "Name", cell: (c) => [c.display_name, c.deleted ? h("span", { class: "badge error" }, "deleted") : null] },
    { label: "Model", cell: (c) => code(c.model) },
    { label: "Provider", cell: (c) => providerName(c.provider_id) },
    { label: "Context limit", class: "num", cell: (c) => number(c.context_limit) },
    { label: "Input $/M tokens", class: "num", cell: (c) => money(c.input_price_micros) },
    { label: "Output $/M tokens", class: "num", cell: (c) => money(c.output_price_micros) },
    { label: "Default", cell: (c) => (c.is_default ? h("span", { class: "badge default-marker" }, "default") : "") },
    { label: "Enabled", cell: (c) => yesNo(c.enabled) },
    { label: "Actions", class: "actions", cell: actions },
  ], configs, {
    caption: "Model configs", empty: "No model configs yet: add one below.",
    rowClass: (c) => (c.deleted ? "deleted" : c.enabled ? null : "disabled"),
  });

  const deletedToggle = h("input", {
    type: "checkbox", checked: showDeleted,
    onchange: (event) => {
      view.state.showDeleted = event.target.checked;
      view.refresh();
    },
  });

  let createCard;
  if (!providers.length) {
    createCard = card("New model config", h("p", {},
      "Add a provider first: ", h("a", { href: "#/admin/providers" }, "Providers"), "."));
  } else {
    const create = buildForm(modelConfigFields(providers, { creating: true }), {}, {
      label: "New model config",
      submitLabel: "Create model config",
      onSubmit: async (body) => {
        await post("/model-configs", body);
        await view.done("Model config created");
      },
    });
    createCard = card("New model config", create);
  }

  return h("div", {},
    h("div", { class: "row toolbar" }, h("label", { class: "check" }, deletedToggle, "Show deleted model configs")),
    table, editor, createCard);
}
