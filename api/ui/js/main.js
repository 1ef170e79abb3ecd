// Boot, sign-in and the hash router. Routes: #/ (chat list), #/new, #/chat/<id>, #/usage,
// #/admin/<section>. Each view is `mount(container, params, ctx)` returning a cleanup function
// (streams close when you leave).

import { get, token, setToken, onSignedOut, ApiError } from "./api.js";
import { h, replace, toast } from "./dom.js";
import { ChatList } from "./chats.js";
import { mountChat, mountNewChat } from "./chat.js";
import { mountUsage } from "./usage.js";
import { mountAdmin } from "./admin.js";

const app = document.getElementById("app");
let cleanup = () => {};
let chatList = null;
let signedIn = false;

// A module of another build failed to load (a rolling upgrade): reload once for the new page.
window.addEventListener("error", (event) => {
  if (event.target && event.target.tagName === "SCRIPT" && !sessionStorage.getItem("chatd.reloaded")) {
    sessionStorage.setItem("chatd.reloaded", "1");
    location.reload();
  }
}, true);

onSignedOut(() => {
  if (!signedIn) return; // a token being tried at sign-in: the form says why
  toast("Your token is no longer valid: sign in again.", "error");
  signOut();
});

function signOut() {
  signedIn = false;
  setToken(null);
  cleanup();
  cleanup = () => {};
  if (chatList) chatList.close();
  chatList = null;
  showSignIn();
}

function showSignIn(message) {
  const input = h("input", {
    type: "password", id: "token", name: "token", autocomplete: "off", required: true,
    placeholder: "chatd_…", "aria-label": "API token",
  });
  const error = h("p", { class: "error", role: "alert" }, message || "");
  const form = h("form", { class: "signin card", "aria-label": "Sign in" },
    h("h1", {}, "chatd"),
    h("p", {}, "Paste an API token to sign in. It is kept in this browser only; sign out forgets it."),
    h("label", { class: "field" }, h("span", { class: "field-label" }, "Token"), input),
    error,
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    setToken(input.value.trim());
    try {
      await start();
    } catch (failure) {
      setToken(null);
      error.textContent = failure instanceof ApiError && failure.status === 401
        ? "That token is not valid (unknown, revoked or expired)."
        : failure.message;
    }
  });
  replace(app, h("div", { class: "signin-wrap" }, form));
  input.focus();
}

async function start() {
  const me = await get("/users/me");
  const user = me.user || me;
  signedIn = true;
  const ctx = { me: user, navigate: (hash) => { location.hash = hash; } };
  const main = h("main", { id: "main", tabindex: "-1" });
  const sidebar = h("aside", { class: "sidebar", "aria-label": "Chats" });
  const nav = h("nav", { class: "nav", "aria-label": "Sections" },
    h("a", { href: "#/", "data-section": "chats" }, "Chats"),
    h("a", { href: "#/usage", "data-section": "usage" }, "Usage"),
    user.is_admin ? h("a", { href: "#/admin/providers", "data-section": "admin" }, "Admin") : null);
  const shell = h("div", { class: "shell" },
    h("header", { class: "topbar" },
      h("a", { class: "brand", href: "#/" }, "chatd"),
      nav,
      h("span", { class: "who", title: user.username }, user.display_name || user.username),
      h("button", { type: "button", class: "secondary small", onclick: signOut }, "Sign out")),
    h("div", { class: "panes" }, sidebar, main));
  replace(app, shell);
  if (chatList) chatList.close();
  chatList = new ChatList(sidebar, ctx);
  ctx.chatList = chatList;
  const route = () => {
    cleanup();
    cleanup = () => {};
    const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean);
    const section = parts[0] || "chats";
    shell.dataset.view = parts.length === 0 ? "list" : "detail";
    nav.querySelectorAll("a").forEach((a) => {
      const current = a.dataset.section === (section === "chat" || section === "new" ? "chats" : section);
      if (current) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    });
    chatList.select(section === "chat" ? parts[1] : null);
    main.replaceChildren();
    if (section === "chat" && parts[1]) cleanup = mountChat(main, parts[1], ctx);
    else if (section === "new") cleanup = mountNewChat(main, ctx);
    else if (section === "usage") cleanup = mountUsage(main, ctx);
    else if (section === "admin" && user.is_admin) cleanup = mountAdmin(main, parts[1] || "providers", ctx);
    else cleanup = mountHome(main, ctx);
  };
  window.onhashchange = route;
  route();
}

function mountHome(main) {
  replace(main, h("div", { class: "empty" },
    h("h2", {}, "Pick a chat or start a new one"),
    h("a", { class: "button", href: "#/new" }, "New chat")));
  return () => {};
}

if (token()) {
  start().catch((error) => {
    if (error instanceof ApiError && error.status === 401) {
      setToken(null);
      showSignIn("Your saved token is no longer valid.");
    } else {
      showSignIn(error.message);
    }
  });
} else {
  showSignIn();
}
