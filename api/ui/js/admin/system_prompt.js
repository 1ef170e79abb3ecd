// The admin "System prompt" section: the prompt put first in every turn.

import { get, put } from "../api.js";
import { h } from "../dom.js";
import { buildForm } from "../admin_forms.js";

export async function systemPromptSection(view) {
  const current = await get("/config/system-prompt");
  const form = buildForm([
    {
      name: "system_prompt", label: "System prompt", type: "textarea", rows: 14, maxlength: 65536,
      hint: "The first system part of every turn (after chatd's built-in prompt when included); empty for none. At most 65,536 characters.",
    },
    { name: "include_default", label: "Put chatd's built-in agent prompt first", type: "checkbox" },
  ], current, {
    label: "System prompt",
    submitLabel: "Save",
    onSubmit: async (body) => {
      await put("/config/system-prompt", {
        system_prompt: body.system_prompt || "",
        include_default: Boolean(body.include_default),
      });
      await view.done("System prompt saved");
    },
  });
  return h("div", { class: "card" }, form);
}
