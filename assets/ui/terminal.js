// The live log terminal and the job's stream behind it.
//
// The stream (`WS /jobs/{id}/stream`) replays the job's messages from the
// start (`since=0`), then goes on live; when it breaks it is opened again
// after the last position seen (`since=<seq>`), with a growing pause, so no
// line is lost or shown twice. It ends for good when the job does (close
// code 1000).
//
// The terminal has a fixed height and keeps its scroll position unless the
// viewer is at the bottom, so arriving lines never move the page.

import { streamUrl } from "./api.js";
import { h } from "./dom.js";
import { clock, when } from "./format.js";

const MAX_LINES = 5000;

export class Terminal {
  constructor() {
    this.lines = h("div", { class: "lines", role: "log", "aria-live": "off", tabindex: 0, "aria-label": "Agent output" });
    this.state = h("span", { class: "stream-state", "aria-live": "polite" }, "connecting…");
    this.count = 0;
    this.pending = [];
    this.frame = null;
    const filter = (role, label) => h("button", {
      type: "button", class: "chip", "data-role": role, "aria-pressed": role === "all" ? "true" : "false",
      onclick: () => this.show(role),
    }, label);
    this.filters = [filter("all", "All"), filter("builder", "Builder"), filter("checker", "Checker")];
    this.element = h("section", { class: "terminal card", "aria-labelledby": "terminal-title", "data-show": "all" },
      h("div", { class: "terminal-head" },
        h("h2", { id: "terminal-title" }, "Live log"),
        h("div", { class: "chips", role: "group", "aria-label": "Show the lines of" }, this.filters),
        this.state),
      this.lines);
  }

  show(role) {
    this.element.dataset.show = role;
    for (const button of this.filters) button.setAttribute("aria-pressed", String(button.dataset.role === role));
    this.lines.scrollTop = this.lines.scrollHeight;
  }

  /** One line: its time, its agent, its text (as text); drawn with the next frame. */
  add({ role = "icarus", attempt, stream = "stdout", message = "", timestamp }) {
    this.pending.push(h("div", { class: `line ${stream === "stderr" ? "stderr" : ""}`, "data-role": role },
      h("time", { datetime: timestamp, title: when(timestamp) }, clock(timestamp)),
      h("span", { class: `who ${role}` }, attempt ? `${role} #${attempt}` : role),
      h("span", { class: "text" }, message)));
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  /** Appends the lines that arrived since the last frame, at most MAX_LINES kept. */
  flush() {
    this.frame = null;
    const lines = this.pending.splice(0).slice(-MAX_LINES);
    const atBottom = this.lines.scrollHeight - this.lines.scrollTop - this.lines.clientHeight < 24;
    const fragment = document.createDocumentFragment();
    for (const line of lines) fragment.append(line);
    this.lines.append(fragment);
    this.count += lines.length;
    while (this.count > MAX_LINES) {
      this.lines.firstElementChild.remove();
      this.count -= 1;
    }
    if (atBottom) this.lines.scrollTop = this.lines.scrollHeight;
  }

  note(message) {
    this.add({ role: "icarus", stream: "stderr", message, timestamp: new Date().toISOString() });
  }

  status(text, kind = "") {
    this.state.textContent = text;
    this.state.dataset.kind = kind;
  }

  empty() {
    return this.count === 0 && this.pending.length === 0;
  }

}

/**
 * Follows a job's stream after position `since` (0: from the start),
 * calling `on.log`, `on.status` and `on.egress` with each message, and
 * `on.state` with "live", "reconnecting" or "ended".
 * Returns a function that stops following.
 */
export function follow(jobId, on, since = 0) {
  let socket = null;
  let stopped = false;
  let pause = 1000;
  let retry = null;

  function open() {
    socket = new WebSocket(streamUrl(jobId, since));
    socket.addEventListener("open", () => {
      pause = 1000;
      on.state("live");
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (typeof message.seq === "number" && message.seq > since) since = message.seq;
      if (message.type === "log") on.log(message);
      else if (message.type === "status_update") on.status(message);
      else if (message.type === "egress") on.egress(message);
    });
    socket.addEventListener("close", (event) => {
      if (stopped) return;
      if (event.code === 1000) {
        on.state("ended");
        return;
      }
      on.state("reconnecting", Math.round(pause / 1000));
      retry = setTimeout(open, pause);
      pause = Math.min(pause * 2, 15000);
    });
  }

  open();
  return () => {
    stopped = true;
    clearTimeout(retry);
    if (socket) socket.close(1000);
  };
}
