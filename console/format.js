// Formatting shared by the views: numbers, times, intervals, and the small pieces of markup
// every view uses (the cup, the role badge, the confirmation dialog).
import { html, useEffect, useRef } from "./vendor/htm-preact-standalone-3.1.1.mjs";

export const dash = "—";

export function num(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return dash;
  if (typeof value !== "number") return String(value);
  return Number.isInteger(value) ? String(value) : value.toFixed(digits);
}

export function fixed(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return dash;
  return Number(value).toFixed(digits);
}

export function pct(value, digits = 1) {
  if (value === null || value === undefined) return dash;
  return `${(value * 100).toFixed(digits)} %`;
}

export function ms(seconds) {
  if (seconds === null || seconds === undefined) return dash;
  return `${(seconds * 1000).toFixed(2)} ms`;
}

export function when(value) {
  if (!value) return dash;
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC").replace(/Z$/, " UTC");
}

export function estimate(e, asPercent = true) {
  if (!e) return dash;
  const f = asPercent ? (v) => pct(v) : (v) => num(v);
  return `${f(e.value)} (95 % CI ${f(e.low)} to ${f(e.high)})`;
}

export function Cup() {
  return html`<svg class="cup" viewBox="0 0 24 24" width="16" height="16" role="img" aria-label="cup">
    <path d="M6 3h12v3h3v2a5 5 0 0 1-5 5h-.3A5 5 0 0 1 13 15.9V18h3v3H8v-3h3v-2.1A5 5 0 0 1 8.3 13H8a5 5 0 0 1-5-5V6h3zM5 8a3 3 0 0 0 2.8 3L6 8V8zm14 0v0l-1.8 3A3 3 0 0 0 19 8z" fill="currentColor"/>
  </svg>`;
}

export function RoleBadge({ version, shadows }) {
  const shadow = (shadows || []).find((s) => s.version === version.version);
  if (version.role === "champion") return html`<span class="badge champion">champion</span>`;
  if (version.role === "shadow") {
    const fraction = shadow ? ` ${pct(shadow.fraction, 0)}` : "";
    return html`<span class="badge shadow">shadow${fraction}</span>`;
  }
  return html`<span class="badge idle">idle</span>`;
}

// A modal <dialog> asking to confirm `question`; `onAnswer(true|false)`.
export function Confirm({ question, confirmLabel, onAnswer, children }) {
  const ref = useRef(null);
  useEffect(() => {
    const dialog = ref.current;
    if (dialog && !dialog.open) dialog.showModal();
  }, []);
  return html`<dialog ref=${ref} aria-labelledby="confirm-question" onCancel=${(e) => { e.preventDefault(); onAnswer(false); }}>
    <p id="confirm-question">${question}</p>
    ${children}
    <div class="actions">
      <button type="button" onClick=${() => onAnswer(true)}>${confirmLabel || "Confirm"}</button>
      <button type="button" onClick=${() => onAnswer(false)}>Cancel</button>
    </div>
  </dialog>`;
}

// The outcome of the last change: what the deployment is now, or the server's error.
export function Outcome({ outcome, model }) {
  const label = `Result of the last change to ${model}`;
  if (!outcome) return html`<p class="outcome" role="status" aria-label=${label}></p>`;
  return html`<p class=${`outcome ${outcome.ok ? "ok" : "error"}`} role="status" aria-label=${label}>${outcome.text}</p>`;
}

export function describeDeployment(d) {
  if (!d) return "";
  const shadows = (d.shadows || []).map((s) => `${s.version} at ${pct(s.fraction, 0)}`).join(", ");
  return `${d.name}: champion version ${d.champion ?? dash}; shadows ${shadows || "none"}; threshold ${fixed(d.threshold, 2)}; revision ${d.revision}`;
}
