// The admin "Users" section: users, their admin and suspended flags, spend limits and tokens.

import { post, patch, put, listAll } from "../api.js";
import { h, replace, money, fullTime } from "../dom.js";
import { buildForm, dataTable, yesNo, rowButton, tokenManager } from "../admin_forms.js";
import { openPanel, card, act, confirmThen, id } from "./shared.js";

export async function usersSection(view) {
  const users = await listAll("/users");
  const me = view.ctx.me || {};
  const editor = h("div", { class: "editor-slot" });
  editor.whenClosed = () => { view.state.panel = null; };
  const userPath = (user) => `/users/${id(user.id)}`;

  const toggleAdmin = (user) => {
    const change = () => patch(userPath(user), { is_admin: !user.is_admin });
    const message = user.is_admin ? `${user.username} is no longer an admin` : `${user.username} is now an admin`;
    if (user.is_admin && user.id === me.id) {
      return confirmThen(view, "Remove your own admin rights? You will lose access to these screens.", "Remove", change, message);
    }
    if (!user.is_admin) return confirmThen(view, `Make ${user.username} an admin? Admins manage every setting and user.`, "Make admin", change, message);
    return act(view, change, message);
  };

  const toggleSuspended = (user) => {
    if (user.suspended) {
      return act(view, () => patch(userPath(user), { suspended: false }), `${user.username} is active again`);
    }
    const self = user.id === me.id ? " You are suspending yourself: this browser will be signed out." : "";
    return confirmThen(view, `Suspend ${user.username}? Their tokens stop working at once and their open streams end.${self}`,
      "Suspend", () => patch(userPath(user), { suspended: true }), `${user.username} is suspended`);
  };

  const spendLimit = (user) => {
    view.state.panel = null;
    const form = buildForm([
      {
        name: "limit_micros", label: "Spend limit ($ per period)", type: "money", nullable: true,
        hint: "Empty removes the user's own limit: then their groups' lowest limit, else the default, applies.",
      },
    ], { limit_micros: user.spend_limit_micros }, {
      label: `Spend limit of ${user.username}`,
      submitLabel: "Save spend limit",
      onCancel: () => replace(editor),
      onSubmit: async (body) => {
        const limit = body.limit_micros === undefined ? null : body.limit_micros;
        await put(`${userPath(user)}/spend-limit`, { limit_micros: limit });
        await view.done(limit === null ? `Spend limit of ${user.username} removed` : `Spend limit of ${user.username} set to ${money(limit)}`);
      },
    });
    openPanel(editor, `Spend limit of ${user.username}`, form);
  };

  const editUser = (user) => {
    view.state.panel = null;
    const form = buildForm([
      { name: "display_name", label: "Display name", maxlength: 200, omitEmpty: true },
    ], user, {
      label: `Edit user ${user.username}`,
      submitLabel: "Save user",
      onCancel: () => replace(editor),
      onSubmit: async (body) => {
        await patch(userPath(user), body);
        await view.done(`${user.username} saved`);
      },
    });
    openPanel(editor, `Edit user ${user.username}`, form);
  };

  const tokens = (user) => {
    view.state.panel = { kind: "tokens", userId: user.id };
    openPanel(editor, `Tokens of ${user.username}`,
      tokenManager(`${userPath(user)}/tokens`, { heading: "API tokens", headingLevel: "h3" }));
  };

  const table = dataTable([
    { label: "Username", cell: (u) => [u.username, u.id === me.id ? h("span", { class: "badge" }, "you") : null] },
    { label: "Display name", cell: (u) => u.display_name },
    { label: "Admin", cell: (u) => yesNo(u.is_admin) },
    { label: "Suspended", cell: (u) => yesNo(u.suspended) },
    {
      label: "Spend limit", class: "num",
      cell: (u) => (u.spend_limit_micros === null || u.spend_limit_micros === undefined
        ? h("span", { class: "muted" }, "group or default")
        : money(u.spend_limit_micros)),
    },
    { label: "Created", cell: (u) => fullTime(u.created_at) },
    {
      label: "Actions", class: "actions", cell: (u) => [
        rowButton(u.is_admin ? "Remove admin" : "Make admin", u.username, () => toggleAdmin(u)),
        rowButton(u.suspended ? "Unsuspend" : "Suspend", u.username, () => toggleSuspended(u), u.suspended ? "secondary" : "danger"),
        rowButton("Spend limit", u.username, () => spendLimit(u)),
        rowButton("Edit", u.username, () => editUser(u)),
        rowButton("Tokens", u.username, () => tokens(u)),
      ],
    },
  ], users, { caption: "Users", empty: "No users.", rowClass: (u) => (u.suspended ? "disabled" : null) });

  const create = buildForm([
    {
      name: "username", label: "Username", required: true, maxlength: 64, pattern: "[A-Za-z0-9_.\\-]{1,64}",
      hint: "Letters, digits, _ . and -; at most 64.", autocomplete: "off",
    },
    { name: "display_name", label: "Display name", maxlength: 200, omitEmpty: true, hint: "Defaults to the username." },
    { name: "is_admin", label: "Admin", type: "checkbox" },
  ], {}, {
    label: "New user",
    submitLabel: "Create user",
    onSubmit: async (body) => {
      const created = await post("/users", body);
      const user = created.user || created;
      // Next step is usually a token for them: open their tokens after the reload.
      view.state.panel = { kind: "tokens", userId: user.id };
      await view.done(`User ${user.username || body.username} created`);
    },
  });

  const panel = view.state.panel;
  if (panel && panel.kind === "tokens") {
    const user = users.find((u) => u.id === panel.userId);
    if (user) view.afterRender = () => tokens(user);
  }

  return h("div", {}, table, editor, card("New user", create));
}
