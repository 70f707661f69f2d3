// The new-job form: task, optional Git source and ref, optional images from
// the allowed list, project. The API's refusals name their field first
// ("source.ref '…' is not…"), so each is shown next to the field it concerns.

import { atLeast, get, post } from "./api.js";
import { h, page, replace } from "./dom.js";

/** The field a refusal is about, by the API's first word. */
const FIELDS = [
  ["source.repository", "repository"],
  ["source.ref", "ref"],
  ["builder_image", "builder_image"],
  ["checker_image", "checker_image"],
  ["project_id", "project_id"],
  ["task", "task"],
];

export function newJobPage(view) {
  if (!atLeast(view.me, "submitter")) {
    page("New job", h("h1", {}, "New job"),
      h("p", { class: "notice", role: "alert" }, `Submitting a job needs the submitter role; ${view.me.name} is a ${view.me.role}.`));
    return;
  }
  const errors = {};
  const control = (id, input, label, hint) => {
    errors[id] = h("p", { class: "field-error", id: `${id}-error`, role: "alert" });
    input.setAttribute("aria-describedby", `${id}-hint ${id}-error`);
    return h("div", { class: "field" },
      h("label", { for: id }, label),
      input,
      h("p", { class: "hint", id: `${id}-hint` }, hint),
      errors[id]);
  };
  const task = h("textarea", { id: "task", name: "task", rows: 6, required: true, maxlength: 32768, spellcheck: "true" });
  const repository = h("input", { id: "repository", name: "repository", autocomplete: "off", spellcheck: "false", placeholder: "https://github.com/acme/api.git" });
  const ref = h("input", { id: "ref", name: "ref", autocomplete: "off", spellcheck: "false", placeholder: "main" });
  const builder = h("input", { id: "builder_image", name: "builder_image", list: "images", autocomplete: "off", spellcheck: "false" });
  const checker = h("input", { id: "checker_image", name: "checker_image", list: "images", autocomplete: "off", spellcheck: "false" });
  const project = h("input", { id: "project_id", name: "project_id", autocomplete: "off", spellcheck: "false", placeholder: "default" });
  const images = h("datalist", { id: "images" });
  const formError = h("p", { class: "field-error", id: "form-error", role: "alert" });
  const submit = h("button", { type: "submit", class: "primary", id: "submit" }, "Submit job");

  const form = h("form", { class: "card form", id: "new-job", novalidate: true, onsubmit: send },
    control("task", task, "Task", "What the builder should do. Required."),
    h("fieldset", {}, h("legend", {}, "Git source (optional)"),
      control("repository", repository, "Repository", "A URL git can clone, or a path under workspace.allowed_source_roots. Without one, the workspace starts empty."),
      control("ref", ref, "Base ref", "Branch, tag or commit; the remote's default branch when empty.")),
    h("fieldset", {}, h("legend", {}, "Agents (optional)"),
      control("builder_image", builder, "Builder image", "Empty: the configured builder."),
      control("checker_image", checker, "Checker image", "Empty: the configured checker."),
      images),
    control("project_id", project, "Project", "Groups jobs; `default` when empty."),
    formError,
    h("div", { class: "actions" }, submit, h("a", { href: "#/jobs", class: "button" }, "Cancel")));

  page("New job", h("h1", {}, "New job"), form);
  task.focus();

  get("/images").then((choice) => {
    builder.placeholder = choice.builder;
    checker.placeholder = choice.checker;
    const names = [choice.builder, choice.checker, ...choice.allowed.filter((i) => !i.endsWith("*"))];
    replace(images, [...new Set(names)].map((name) => h("option", { value: name })));
    const prefixes = choice.allowed.filter((i) => i.endsWith("*"));
    if (prefixes.length) {
      const hint = document.getElementById("builder_image-hint");
      hint.textContent += ` Also allowed: ${prefixes.join(", ")}.`;
    }
  }).catch(() => {});

  async function send(event) {
    event.preventDefault();
    for (const p of Object.values(errors)) p.textContent = "";
    formError.textContent = "";
    const body = { task: task.value };
    if (repository.value.trim()) {
      body.source = { repository: repository.value.trim() };
      if (ref.value.trim()) body.source.ref = ref.value.trim();
    } else if (ref.value.trim()) {
      return fieldError("ref", "A ref needs a repository.");
    }
    if (builder.value.trim()) body.builder_image = builder.value.trim();
    if (checker.value.trim()) body.checker_image = checker.value.trim();
    if (project.value.trim()) body.project_id = project.value.trim();
    if (!task.value.trim()) return fieldError("task", "A task is required.");
    submit.disabled = true;
    try {
      const created = await post("/jobs/spawn", body);
      location.hash = `#/jobs/${created.job_id}`;
    } catch (error) {
      const field = FIELDS.find(([prefix]) => error.detail.startsWith(prefix));
      if (error.status === 422 && field) fieldError(field[1], error.detail);
      else formError.textContent = error.status === 403 ? `Not allowed (403): ${error.detail}` : error.message;
    } finally {
      submit.disabled = false;
    }
  }

  function fieldError(id, text) {
    errors[id].textContent = text;
    const input = document.getElementById(id);
    input.setAttribute("aria-invalid", "true");
    input.focus();
  }
}
