// The admin "Spend limits" section: the usage-limit settings and groups with their members.

import { get, post, put, del, listAll } from "../api.js";
import { h, replace, money, fullTime } from "../dom.js";
import { buildForm, dataTable, loadError, rowButton } from "../admin_forms.js";
import { openPanel, card, confirmThen, id, number } from "./shared.js";

export async function limitsSection(view) {
  const [limits, groupList, users] = await Promise.all([get("/usage-limits"), get("/groups"), listAll("/users")]);
  const groups = groupList.items || [];
  const editor = h("div", { class: "editor-slot" });
  editor.whenClosed = () => { view.state.openGroup = null; };
  const groupPath = (group) => `/groups/${id(group.id)}`;

  const settings = buildForm([
    { name: "enabled", label: "Enforce spend limits", type: "checkbox", hint: "Off: nobody is limited (spend is still recorded)." },
    {
      name: "period", label: "Period", type: "select", required: true,
      options: [{ value: "day", label: "Day" }, { value: "week", label: "Week (from Monday)" }, { value: "month", label: "Month" }],
      hint: "Calendar periods in UTC.",
    },
    {
      name: "default_limit_micros", label: "Default limit ($ per period)", type: "money", nullable: true,
      hint: "For users with no limit of their own or of a group; empty: no limit for them.",
    },
  ], limits, {
    label: "Spend limit settings",
    submitLabel: "Save settings",
    onSubmit: async (body) => {
      await put("/usage-limits", {
        enabled: body.enabled, period: body.period,
        default_limit_micros: body.default_limit_micros === undefined ? null : body.default_limit_micros,
      });
      await view.done("Spend limit settings saved");
    },
  });

  const groupFields = [
    { name: "name", label: "Name", required: true, maxlength: 100 },
    {
      name: "spend_limit_micros", label: "Spend limit ($ per period)", type: "money", nullable: true,
      hint: "Applies to members without a limit of their own (the lowest of their groups' wins). Empty: none.",
    },
  ];
  const groupBody = (body) => ({
    name: body.name,
    spend_limit_micros: body.spend_limit_micros === undefined ? null : body.spend_limit_micros,
  });

  const editGroup = (group) => {
    view.state.openGroup = null;
    const form = buildForm(groupFields, group, {
      label: `Edit group ${group.name}`,
      submitLabel: "Save group",
      onCancel: () => replace(editor),
      onSubmit: async (body) => {
        await put(groupPath(group), groupBody(body));
        await view.done(`Group ${body.name} saved`);
      },
    });
    openPanel(editor, `Edit group ${group.name}`, form);
  };

  const members = (group) => {
    view.state.openGroup = group.id;
    const list = h("div", { class: "member-list" }, h("p", { class: "muted" }, "Loading members…"));
    const addSlot = h("div", {});
    openPanel(editor, `Members of ${group.name}`, list, addSlot);
    (async () => {
      let items;
      try {
        items = (await get(`${groupPath(group)}/members`)).items || [];
      } catch (error) {
        replace(list, loadError("members", error));
        return;
      }
      replace(list, dataTable([
        { label: "Username", cell: (u) => u.username },
        { label: "Display name", cell: (u) => u.display_name },
        { label: "Own limit", class: "num", cell: (u) => money(u.spend_limit_micros) },
        {
          label: "Actions", class: "actions",
          cell: (u) => rowButton("Remove", `${u.username} from ${group.name}`, () => confirmThen(view,
            `Remove ${u.username} from ${group.name}?`, "Remove",
            () => del(`${groupPath(group)}/members/${id(u.id)}`), `${u.username} removed from ${group.name}`), "danger"),
        },
      ], items, { caption: `Members of ${group.name}`, empty: "No members yet." }));
      const memberIds = new Set(items.map((u) => u.id));
      const candidates = users.filter((u) => !memberIds.has(u.id));
      if (!candidates.length) {
        replace(addSlot, h("p", { class: "muted" }, "Every user is a member already."));
        return;
      }
      const add = buildForm([
        {
          name: "user_id", label: "User", type: "select", required: true,
          options: candidates.map((u) => ({ value: u.id, label: u.display_name && u.display_name !== u.username ? `${u.username} (${u.display_name})` : u.username })),
        },
      ], {}, {
        label: `Add a member to ${group.name}`,
        submitLabel: "Add member",
        onSubmit: async (body) => {
          await post(`${groupPath(group)}/members`, { user_id: body.user_id });
          const user = users.find((u) => u.id === body.user_id);
          await view.done(`${user ? user.username : "User"} added to ${group.name}`);
        },
      });
      replace(addSlot, h("h3", {}, "Add a member"), add);
    })();
  };

  const table = dataTable([
    { label: "Name", cell: (g) => g.name },
    { label: "Spend limit", class: "num", cell: (g) => (g.spend_limit_micros === null || g.spend_limit_micros === undefined ? "none" : money(g.spend_limit_micros)) },
    { label: "Members", class: "num", cell: (g) => number(g.members) },
    { label: "Created", cell: (g) => fullTime(g.created_at) },
    {
      label: "Actions", class: "actions", cell: (g) => [
        rowButton("Members", g.name, () => members(g)),
        rowButton("Edit", g.name, () => editGroup(g)),
        rowButton("Delete", g.name, () => confirmThen(view,
          `Delete the group "${g.name}"? Its limit no longer applies to its members.`, "Delete",
          () => del(groupPath(g)), `Group ${g.name} deleted`), "danger"),
      ],
    },
  ], groups, { caption: "Groups", empty: "No groups yet." });

  const create = buildForm(groupFields, {}, {
    label: "New group",
    submitLabel: "Create group",
    onSubmit: async (body) => {
      await post("/groups", groupBody(body));
      await view.done(`Group ${body.name} created`);
    },
  });

  if (view.state.openGroup) {
    const group = groups.find((g) => g.id === view.state.openGroup);
    if (group) view.afterRender = () => members(group);
  }

  return h("div", {},
    card("Settings", h("p", { class: "muted small" },
      "A user's limit is their own when set, else the lowest of their groups' limits, else the default."), settings),
    h("section", { class: "admin-card groups", "aria-label": "Groups" },
      h("h2", {}, "Groups"), table, editor),
    card("New group", create));
}
