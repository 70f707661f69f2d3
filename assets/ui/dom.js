// Building the page from data. Everything shown here may come from an agent
// (a task, a log line, a report, a diff), so text is only ever inserted as
// text: `h` makes elements with `textContent` and attributes set one by one;
// no HTML string is ever parsed.

/** Attributes `h` accepts; an event handler or a style cannot be set by data. */
const SAFE_ATTRIBUTE = /^(aria-[a-z-]+|data-[a-z-]+|role|id|class|title|type|name|value|for|href|target|rel|tabindex|colspan|hidden|disabled|placeholder|autocomplete|required|rows|maxlength|list|lang|datetime|open|min|max|step|inputmode|spellcheck|novalidate|scope)$/;

/**
 * An element: `h("a", {href: "#/jobs", class: "x"}, "text", child)`.
 * Strings and numbers become text nodes; null, undefined and false are skipped.
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
      continue;
    }
    if (!SAFE_ATTRIBUTE.test(name)) throw new Error(`attribute ${name} is not allowed`);
    if (name === "href" && !safeHref(String(value))) continue;
    element.setAttribute(name, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

/** Appends children as `h` does. */
export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Replaces every child of `parent`. */
export function replace(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

/** Links the page makes: its own routes, or http(s) links (a pull request). */
export function safeHref(href) {
  if (href.startsWith("#")) return true;
  try {
    const url = new URL(href, location.href);
    return url.protocol === "https:" || url.protocol === "http:";
  } catch {
    return false;
  }
}

/** The main area, emptied, with a heading; focus moves to it for screen readers. */
export function page(title, ...children) {
  const main = document.getElementById("main");
  document.title = `${title} · Icarus`;
  replace(main, children);
  main.focus({ preventScroll: true });
  window.scrollTo(0, 0);
  return main;
}
