// The admin "Advisor" section: the advisor tool's settings.

import { get, put } from "../api.js";
import { h } from "../dom.js";
import { buildForm } from "../admin_forms.js";

export async function advisorSection(view) {
  const [advisor, configList] = await Promise.all([get("/config/advisor"), get("/model-configs")]);
  const configs = (configList.items || []).filter((c) => !c.deleted);
  const options = [
    { value: null, label: "The chat's own model" },
    ...configs.map((c) => ({ value: c.id, label: `${c.display_name} (${c.model})${c.enabled === false ? " — disabled" : ""}` })),
  ];
  if (advisor.model_config_id && !configs.some((c) => c.id === advisor.model_config_id)) {
    options.push({ value: advisor.model_config_id, label: `Unavailable config ${advisor.model_config_id}` });
  }
  const initial = {
    enabled: Boolean(advisor.enabled),
    model_config_id: advisor.model_config_id ?? null,
    max_uses_per_turn: advisor.max_uses_per_turn ?? 3,
    max_output_tokens: advisor.max_output_tokens ?? 2048,
  };
  const form = buildForm([
    { name: "enabled", label: "Offer the advisor tool to root chats", type: "checkbox", hint: "Sub-agents never get it." },
    { name: "model_config_id", label: "Advisor model", type: "select", nullable: true, options },
    { name: "max_uses_per_turn", label: "Max uses per turn", type: "number", min: 1, max: 20, required: true },
    { name: "max_output_tokens", label: "Max output tokens", type: "number", min: 1, max: 32000, required: true, hint: "Longest advice, in tokens." },
  ], initial, {
    label: "Advisor settings",
    submitLabel: "Save",
    onSubmit: async (body) => {
      await put("/config/advisor", {
        enabled: Boolean(body.enabled),
        model_config_id: body.model_config_id === undefined ? null : body.model_config_id,
        max_uses_per_turn: body.max_uses_per_turn,
        max_output_tokens: body.max_output_tokens,
      });
      await view.done("Advisor settings saved");
    },
  });
  return h("div", { class: "card" },
    h("p", { class: "muted" },
      "While enabled, root chats are offered an advisor tool: a one-step, tool-less call of the advisor's model that reads the conversation and answers the agent's question."),
    form);
}
