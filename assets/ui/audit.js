// The checker's audit report, laid out for reading. A report is whatever
// JSON object the checker posted (at most 256 KiB): its `summary` first,
// then each section as a heading; flat values as a list of terms, lists as
// lists (long ones folded), lists of objects as tables, maps of plain
// values as two-column tables. Nothing in it is trusted: it is text.

import { h } from "./dom.js";
import { humanise, when } from "./format.js";

const FOLD_AFTER = 12;
const MAX_DEPTH = 4;
const MAX_COLUMNS = 8;

export function auditReport(audit) {
  if (!audit) {
    return h("section", { class: "card audit", "aria-labelledby": "audit-title" },
      h("h2", { id: "audit-title" }, "Audit report"),
      h("p", { class: "muted" }, "No audit report yet: the checker posts it when it finishes."));
  }
  const report = audit.audit_report && typeof audit.audit_report === "object" ? audit.audit_report : { report: audit.audit_report };
  const { summary, ...rest } = report;
  return h("section", { class: "card audit", "aria-labelledby": "audit-title" },
    h("h2", { id: "audit-title" }, "Audit report"),
    h("p", { class: "muted small" }, "Posted ", h("time", { datetime: audit.created_at }, when(audit.created_at))),
    summary !== undefined ? h("p", { class: "summary" }, plain(summary)) : null,
    Object.entries(rest).map(([key, value]) =>
      h("div", { class: "audit-section" }, h("h3", {}, humanise(key)), value_(value, 1))));
}

/** A key as a term: words for an identifier, else as written (a path). */
function label(key) {
  return /^[A-Za-z][A-Za-z0-9_]*$/.test(key) ? h("dt", {}, humanise(key)) : h("dt", { class: "mono" }, key);
}

function plain(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

function isPlain(value) {
  return value === null || ["string", "number", "boolean"].includes(typeof value);
}

function scalar(value) {
  if (value === true) return h("span", { class: "yes" }, "yes");
  if (value === false) return h("span", { class: "no" }, "no");
  if (value === null) return h("span", { class: "muted" }, "none");
  return h("span", { class: typeof value === "number" ? "num" : "" }, String(value));
}

function value_(value, depth) {
  if (isPlain(value)) return scalar(value);
  if (depth > MAX_DEPTH) return h("pre", { class: "raw" }, JSON.stringify(value, null, 2).slice(0, 20000));
  if (Array.isArray(value)) return list(value, depth);
  const entries = Object.entries(value);
  if (entries.length === 0) return h("span", { class: "muted" }, "nothing");
  if (entries.length > FOLD_AFTER && entries.every(([, v]) => isPlain(v))) return mapTable(entries);
  return h("dl", { class: "terms" }, entries.map(([key, item]) => [
    label(key),
    h("dd", {}, value_(item, depth + 1)),
  ]));
}

function list(items, depth) {
  if (items.length === 0) return h("span", { class: "muted" }, "none");
  if (items.every((item) => item && typeof item === "object" && !Array.isArray(item))) return objectTable(items, depth);
  const shown = items.map((item) => h("li", {}, value_(item, depth + 1)));
  if (items.length <= FOLD_AFTER) return h("ul", { class: "items" }, shown);
  return h("details", {}, h("summary", {}, `${items.length} items`), h("ul", { class: "items" }, shown));
}

function objectTable(rows, depth) {
  const columns = [...new Set(rows.flatMap((row) => Object.keys(row)))].slice(0, MAX_COLUMNS);
  const head = h("tr", {}, columns.map((c) => h("th", { scope: "col" }, humanise(c))));
  const cell = (row, c) => h("td", {}, c in row ? value_(row[c], depth + 1) : "");
  const body = rows.map((row) => h("tr", {}, columns.map((c) => cell(row, c))));
  const table = h("div", { class: "table-wrap" },
    h("table", { class: "plain" }, h("thead", {}, head), h("tbody", {}, body)));
  if (rows.length <= FOLD_AFTER) return table;
  return h("details", {}, h("summary", {}, `${rows.length} rows`), table);
}

function mapTable(entries) {
  return h("details", {}, h("summary", {}, `${entries.length} entries`),
    h("div", { class: "table-wrap" }, h("table", { class: "plain" },
      h("tbody", {}, entries.map(([key, v]) => h("tr", {}, h("th", { scope: "row", class: "mono" }, key), h("td", {}, scalar(v))))))));
}
