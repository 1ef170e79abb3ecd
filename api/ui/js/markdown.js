// A small Markdown renderer that builds DOM nodes directly: text only ever becomes text nodes,
// so raw HTML in a model's answer shows as text and never runs. Covers what models write:
// headings, paragraphs, emphasis, inline and fenced code, lists, block quotes, links
// (http, https and mailto only), horizontal rules and simple tables.

import { h } from "./dom.js";

export function markdown(source) {
  const fragment = document.createDocumentFragment();
  const lines = String(source).replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(/^\s*(```|~~~)\s*([\w+#.-]*)\s*$/);
    if (fence) {
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
      i += 1; // the closing fence (or the end: an open fence while streaming)
      fragment.append(h("pre", { class: "code", "data-lang": fence[2] || null },
        h("code", {}, body.join("\n"))));
      continue;
    }
    if (line.trim() === "") {
      i += 1;
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    if (heading) {
      fragment.append(h(`h${Math.min(6, heading[1].length + 2)}`, {}, inline(heading[2])));
      i += 1;
      continue;
    }
    if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) {
      fragment.append(h("hr"));
      i += 1;
      continue;
    }
    if (/^\s*>/.test(line)) {
      const body = [];
      while (i < lines.length && /^\s*>/.test(lines[i])) body.push(lines[i++].replace(/^\s*>\s?/, ""));
      fragment.append(h("blockquote", {}, markdown(body.join("\n"))));
      continue;
    }
    if (isTableStart(lines, i)) {
      const rows = [];
      while (i < lines.length && lines[i].includes("|")) rows.push(lines[i++]);
      fragment.append(table(rows));
      continue;
    }
    const item = listItem(line);
    if (item) {
      const list = h(item.ordered ? "ol" : "ul");
      if (item.ordered && item.start !== 1) list.setAttribute("start", String(item.start));
      while (i < lines.length) {
        const next = listItem(lines[i]);
        if (!next || next.ordered !== item.ordered) break;
        const body = [next.text];
        i += 1;
        // continuation lines: indented, not a new item
        while (i < lines.length && /^\s{2,}\S/.test(lines[i]) && !listItem(lines[i])) body.push(lines[i++].trim());
        list.append(h("li", {}, inline(body.join(" "))));
      }
      fragment.append(list);
      continue;
    }
    const paragraph = [];
    while (i < lines.length && lines[i].trim() !== "" && !startsBlock(lines, i)) paragraph.push(lines[i++]);
    if (paragraph.length === 0) paragraph.push(lines[i++]);
    const p = h("p");
    paragraph.forEach((text, index) => {
      if (index > 0) p.append(h("br"));
      p.append(inline(text));
    });
    fragment.append(p);
  }
  return fragment;
}

function startsBlock(lines, i) {
  const line = lines[i];
  return /^\s*(```|~~~)/.test(line) || /^#{1,6}\s/.test(line) || /^\s*>/.test(line)
    || Boolean(listItem(line)) || isTableStart(lines, i);
}

function listItem(line) {
  let match = line.match(/^\s{0,3}[-*+]\s+(.*)$/);
  if (match) return { ordered: false, text: match[1] };
  match = line.match(/^\s{0,3}(\d{1,9})[.)]\s+(.*)$/);
  if (match) return { ordered: true, start: Number(match[1]), text: match[2] };
  return null;
}

function isTableStart(lines, i) {
  return i + 1 < lines.length && lines[i].includes("|")
    && /^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$/.test(lines[i + 1]);
}

function cells(row) {
  return row.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((cell) => cell.trim());
}

function table(rows) {
  const [head, , ...body] = rows;
  return h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, cells(head).map((cell) => h("th", {}, inline(cell))))),
    h("tbody", {}, body.map((row) => h("tr", {}, cells(row).map((cell) => h("td", {}, inline(cell))))))));
}

const SAFE_URL = /^(https?:\/\/|mailto:)/i;

/** Inline spans: `code`, **strong**, *em* / _em_, ~~del~~, [text](url), bare URLs. */
export function inline(text) {
  const fragment = document.createDocumentFragment();
  const pattern = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*([^*]+)\*\*|__([^_]+)__|~~([^~]+)~~|\*([^*\s][^*]*)\*|(?<![\w])_([^_\s][^_]*)_(?![\w])|\[([^\]]+)\]\(([^)\s]+)(?:\s+"[^"]*")?\)|(https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])/g;
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    if (match.index > last) fragment.append(text.slice(last, match.index));
    const [whole, , code, strong, strong2, del, em, em2, label, href, bare] = match;
    if (code !== undefined) fragment.append(h("code", {}, code.trim() === "" ? code : code.replace(/^ (.*) $/, "$1")));
    else if (strong !== undefined || strong2 !== undefined) fragment.append(h("strong", {}, inline(strong ?? strong2)));
    else if (del !== undefined) fragment.append(h("del", {}, inline(del)));
    else if (em !== undefined || em2 !== undefined) fragment.append(h("em", {}, inline(em ?? em2)));
    else if (label !== undefined) fragment.append(link(href, inline(label), whole));
    else if (bare !== undefined) fragment.append(link(bare, bare, whole));
    last = match.index + whole.length;
  }
  if (last < text.length) fragment.append(text.slice(last));
  return fragment;
}

function link(href, content, whole) {
  if (!SAFE_URL.test(href)) return document.createTextNode(whole);
  return h("a", { href, target: "_blank", rel: "noopener noreferrer nofollow" }, content);
}
