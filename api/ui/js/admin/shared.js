// Helpers shared by the admin sections: editing panels, cards, row actions and formatters.

import { h, replace, toast, confirmDialog } from "../dom.js";
import { describeError } from "../admin_forms.js";

let panelCounter = 0;

/** Opens an editing panel (a labelled card with a Close button) in `slot`. */
export function openPanel(slot, heading, ...content) {
  const headingId = `panel-${++panelCounter}`;
  const panel = h("section", { class: "card admin-panel", "aria-labelledby": headingId },
    h("div", { class: "row panel-head" },
      h("h2", { id: headingId }, heading),
      h("button", {
        type: "button", class: "secondary small", "aria-label": `Close ${heading}`,
        onclick: () => { replace(slot); if (slot.whenClosed) slot.whenClosed(); },
      }, "Close")),
    content);
  replace(slot, panel);
  if (panel.scrollIntoView) panel.scrollIntoView({ block: "nearest" });
  const first = panel.querySelector("input:not([disabled]):not([type=hidden]), select, textarea");
  if (first) first.focus();
  return panel;
}

export function card(heading, ...content) {
  return h("section", { class: "card admin-card", "aria-label": heading }, h("h2", {}, heading), content);
}

/** Runs a row action: a toast with the API's message on failure, `done(message)` on success. */
export async function act(view, action, message) {
  try {
    await action();
  } catch (error) {
    toast(describeError(error), "error");
    return;
  }
  await view.done(message);
}

export async function confirmThen(view, question, yes, action, message) {
  if (!(await confirmDialog(question, yes))) return;
  await act(view, action, message);
}

export const id = (value) => encodeURIComponent(value);
export const code = (text) => h("code", {}, text);
export const number = (value) => (value === null || value === undefined ? "—" : Number(value).toLocaleString());
