// The admin screens (#/admin/<section>): providers, model configs, users and their tokens,
// spend limits and groups, the system prompt, MCP servers and the advisor. Every section
// loads what it shows, says plainly when that fails, and after a successful change shows a
// toast and loads again. Secrets (a provider's API key, an MCP server's token or headers) are
// write-only: password fields, never prefilled; lists only say whether one is stored.

import { h, replace, toast } from "./dom.js";
import { loadError } from "./admin_forms.js";
import { providersSection } from "./admin/providers.js";
import { modelsSection } from "./admin/models.js";
import { usersSection } from "./admin/users.js";
import { limitsSection } from "./admin/limits.js";
import { systemPromptSection } from "./admin/system_prompt.js";
import { mcpSection } from "./admin/mcp.js";
import { advisorSection } from "./admin/advisor.js";

const SECTIONS = [
  { key: "providers", label: "Providers", render: providersSection },
  { key: "models", label: "Models", render: modelsSection },
  { key: "users", label: "Users", render: usersSection },
  { key: "limits", label: "Spend limits", render: limitsSection },
  { key: "system-prompt", label: "System prompt", render: systemPromptSection },
  { key: "mcp", label: "MCP servers", render: mcpSection },
  { key: "advisor", label: "Advisor", render: advisorSection },
];

export function mountAdmin(main, section, ctx) {
  const current = SECTIONS.find((entry) => entry.key === section);
  let alive = true;
  let ticket = 0;

  const nav = h("nav", { class: "admin-nav", "aria-label": "Admin sections" },
    h("ul", {}, SECTIONS.map((entry) => h("li", {},
      h("a", { href: `#/admin/${entry.key}`, "aria-current": entry === current ? "page" : undefined }, entry.label)))));
  const body = h("div", { class: "admin-body" }, h("p", { class: "muted", role: "status" }, "Loading…"));
  const title = h("h1", { id: "admin-title", tabindex: "-1" }, current ? current.label : "Admin");
  replace(main, h("div", { class: "page admin" },
    nav,
    h("section", { class: "admin-section", "aria-labelledby": "admin-title" }, title, body)));

  if (!current) {
    replace(body, h("p", { role: "alert", class: "error" }, `There is no admin section "${section}".`));
    return () => { alive = false; };
  }

  const state = {};
  const view = {
    ctx,
    state,
    isAlive: () => alive,
    refresh,
    /** A change went through: say so and load the section again. */
    done(message) {
      toast(message);
      return refresh();
    },
  };

  async function refresh() {
    const mine = ++ticket;
    try {
      const node = await current.render(view);
      if (!alive || mine !== ticket) return;
      // Keep the scroll position and, when possible, the focused control's place.
      const scroller = main;
      const top = scroller.scrollTop;
      replace(body, node);
      scroller.scrollTop = top;
      if (view.afterRender) {
        const after = view.afterRender;
        view.afterRender = null;
        after();
      }
    } catch (error) {
      if (!alive || mine !== ticket) return;
      replace(body, loadError(current.label.toLowerCase(), error));
    }
  }

  refresh();
  return () => {
    alive = false;
  };
}
