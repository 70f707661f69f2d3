// The builder's change as a reviewer reads it: a list of files (added,
// modified, deleted, renamed; lines added and removed; binary and cut-off
// files marked), then each file's hunks with old and new line numbers and
// added and removed lines coloured. A file's lines are made only when it is
// opened, and a long file a few thousand lines at a time, so a 2 MiB diff
// stays quick to open and to scroll.

import { h, replace } from "./dom.js";

/** Lines opened at once without asking; the rest of the files start folded. */
const OPEN_BUDGET = 3000;
/** Lines made per step in one file. */
const CHUNK = 2000;
const STATUS_LETTER = { added: "A", modified: "M", deleted: "D", renamed: "R" };

export function diffView(diff) {
  const files = diff.files || [];
  const sections = files.map((file, index) => fileSection(file, index, diff.truncated && index === files.length - 1));
  let budget = OPEN_BUDGET;
  for (const [index, file] of files.entries()) {
    const lines = lineCount(file);
    if (lines > budget) break;
    budget -= lines;
    sections[index].open = true;
  }
  const list = h("ol", { class: "file-list", id: "file-list" }, files.map((file, index) =>
    h("li", {},
      h("a", { href: `#file-${index}`, "data-index": index, onclick: (event) => { event.preventDefault(); reveal(sections[index]); } },
        statusBadge(file), " ", h("span", { class: "path" }, displayPath(file))),
      counts(file))));
  return h("section", { class: "diff", "aria-labelledby": "diff-title" },
    h("h2", { id: "diff-title" }, "Changes"),
    h("p", { class: "diff-summary", id: "diff-summary" },
      `${files.length} file${files.length === 1 ? "" : "s"} changed, `,
      h("span", { class: "add" }, `+${diff.additions}`), " ", h("span", { class: "del" }, `−${diff.deletions}`)),
    diff.truncated ? h("p", { class: "callout warn", id: "diff-truncated" }, "The diff was longer than the server keeps: it is cut off, and its last file may be incomplete.") : null,
    diff.excluded && diff.excluded.length ? h("div", { class: "callout warn", id: "diff-excluded" },
      h("strong", {}, "Left out of the snapshot (not published):"),
      h("ul", {}, diff.excluded.map((line) => h("li", { class: "mono" }, line)))) : null,
    files.length ? h("nav", { "aria-label": "Changed files", class: "card files-nav" }, list) : h("p", { class: "muted" }, "No file changed."),
    sections);
}

function reveal(section) {
  section.open = true;
  section.scrollIntoView({ block: "start" });
  section.querySelector("summary").focus();
}

function lineCount(file) {
  return (file.hunks || []).reduce((sum, hunk) => sum + hunk.lines.length + 1, 0);
}

function displayPath(file) {
  return file.old_path && file.old_path !== file.path ? `${file.old_path} → ${file.path}` : file.path;
}

function statusBadge(file) {
  const status = STATUS_LETTER[file.status] ? file.status : "modified";
  return h("span", { class: `file-status ${status}`, title: status, "aria-label": status }, STATUS_LETTER[status]);
}

function counts(file) {
  if (file.binary) return h("span", { class: "counts" }, h("span", { class: "tag" }, "binary"));
  return h("span", { class: "counts" }, h("span", { class: "add" }, `+${file.additions}`), " ", h("span", { class: "del" }, `−${file.deletions}`));
}

function fileSection(file, index, truncated) {
  const body = h("div", { class: "file-body" });
  const section = h("details", { class: "file card", id: `file-${index}`, "data-path": file.path },
    h("summary", {},
      statusBadge(file), " ", h("span", { class: "path" }, displayPath(file)), " ", counts(file),
      truncated ? h("span", { class: "tag warn" }, "cut off") : null),
    body);
  let made = false;
  section.addEventListener("toggle", () => {
    if (section.open && !made) {
      made = true;
      renderFile(body, file, truncated);
    }
  });
  return section;
}

/** Every line of the file's hunks as rows: old number, new number, text. */
function rows(file) {
  const out = [];
  for (const hunk of file.hunks || []) {
    const match = /^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@/.exec(hunk.header);
    let old = match ? Number(match[1]) : 0;
    let now = match ? Number(match[2]) : 0;
    out.push({ kind: "hunk", text: hunk.header });
    for (const line of hunk.lines) {
      const mark = line.charAt(0);
      const text = line.slice(1);
      if (mark === "+") out.push({ kind: "add", now: now++, text });
      else if (mark === "-") out.push({ kind: "del", old: old++, text });
      else if (mark === "\\") out.push({ kind: "note", text: line });
      else out.push({ kind: "ctx", old: old++, now: now++, text });
    }
  }
  return out;
}

function renderFile(body, file, truncated) {
  if (file.binary) {
    replace(body, h("p", { class: "muted file-note" }, "Binary file: its content is not shown."));
    return;
  }
  const all = rows(file);
  if (all.length === 0) {
    replace(body, h("p", { class: "muted file-note" }, file.status === "renamed" ? "Renamed without changes." : "No text lines (an empty file, or only its mode changed)."));
    return;
  }
  const table = h("div", { class: "lines-table", role: "table", "aria-label": `Changes to ${file.path}` });
  const more = h("button", { type: "button", class: "more-lines" });
  let shown = 0;
  const step = () => {
    const end = Math.min(all.length, shown + CHUNK);
    const fragment = document.createDocumentFragment();
    for (let i = shown; i < end; i += 1) fragment.append(row(all[i]));
    table.append(fragment);
    shown = end;
    more.hidden = shown >= all.length;
    more.textContent = `Show ${Math.min(CHUNK, all.length - shown)} more lines (${all.length - shown} left)`;
  };
  more.addEventListener("click", step);
  replace(body, h("div", { class: "scroll-x" }, table), more,
    truncated ? h("p", { class: "callout warn file-note" }, "The diff was cut off here.") : null);
  step();
}

const SIGN = { add: "+", del: "−", ctx: " ", hunk: "", note: "" };

function row(line) {
  return h("div", { class: `dl ${line.kind}`, role: "row" },
    h("span", { class: "ln", role: "cell", "aria-label": line.old ? `old line ${line.old}` : null }, line.old ?? ""),
    h("span", { class: "ln", role: "cell", "aria-label": line.now ? `new line ${line.now}` : null }, line.now ?? ""),
    h("span", { class: "code", role: "cell" }, h("span", { class: "sign", "aria-hidden": "true" }, SIGN[line.kind]), line.text));
}
