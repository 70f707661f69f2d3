// Times in the viewer's own locale and time zone, durations, phase badges.

import { h } from "./dom.js";

export const PHASES = [
  "pending", "building", "checking", "awaiting_approval",
  "approved", "completed", "rejected", "expired", "failed", "cancelled",
];
export const TERMINAL = new Set(["completed", "rejected", "expired", "failed", "cancelled"]);

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

export function when(iso) {
  return iso ? dateTime.format(new Date(iso)) : "";
}

export function clock(iso) {
  return iso ? timeOnly.format(new Date(iso)) : "";
}

/** "3 minutes ago", with the exact time as its title. */
export function age(iso) {
  if (!iso) return "";
  const seconds = Math.round((new Date(iso).getTime() - Date.now()) / 1000);
  const units = [["day", 86400], ["hour", 3600], ["minute", 60]];
  for (const [unit, size] of units) {
    if (Math.abs(seconds) >= size) return relative.format(Math.round(seconds / size), unit);
  }
  return relative.format(seconds, "second");
}

/** A <time> showing the age, titled with the locale's full date and time. */
export function ageElement(iso) {
  return h("time", { datetime: iso, title: when(iso) }, age(iso));
}

/** "1 h 4 min", "12.3 s". */
export function duration(milliseconds) {
  if (milliseconds === null || milliseconds === undefined || milliseconds < 0) return "";
  const seconds = milliseconds / 1000;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function phaseLabel(phase) {
  return String(phase || "").replaceAll("_", " ");
}

export function badge(phase) {
  const known = PHASES.includes(phase) ? phase : "unknown";
  return h("span", { class: `badge phase-${known}` }, phaseLabel(phase));
}

export function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = Number(n);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

export function shortId(id) {
  return String(id || "").slice(0, 8);
}

/** "field_name" → "Field name". */
export function humanise(key) {
  const text = String(key).replaceAll("_", " ").replace(/([a-z])([A-Z])/g, "$1 $2");
  return text.charAt(0).toUpperCase() + text.slice(1);
}
