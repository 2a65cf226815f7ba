// The deployment panel of one model: confidence threshold, shadow fractions, promotion mode,
// rollback (confirmed), the champion history and the model's audit entries.
import { html, useState, useEffect } from "./vendor/htm-preact-standalone-3.1.1.mjs";
import { get, put, post, del, modelPath } from "./api.js";
import { Confirm, Outcome, describeDeployment, num, fixed, when, dash } from "./format.js";

export function ModelPicker({ models, model, onPick }) {
  return html`<p class="picker">
    <label for="model-picker">Model</label>
    <select id="model-picker" value=${model} onChange=${(e) => onPick(e.currentTarget.value)}>
      ${models.map((m) => html`<option value=${m.name} selected=${m.name === model}>${m.name}</option>`)}
    </select>
  </p>`;
}

export function Deployment({ models, model, go, reload, refused }) {
  const current = models.find((m) => m.name === model) || models[0];
  const [threshold, setThreshold] = useState(current.threshold);
  const [fractions, setFractions] = useState({});
  const [audit, setAudit] = useState(null);
  const [asking, setAsking] = useState(false);
  const [outcome, setOutcome] = useState(null);

  useEffect(() => {
    setThreshold(current.threshold);
    setFractions(Object.fromEntries((current.shadows || []).map((s) => [s.version, String(s.fraction)])));
    get(`${modelPath(current.name)}/audit?limit=20`).then((a) => setAudit(a.ok ? a.data.entries : null));
  }, [current.name, current.revision]);

  const apply = async (request, what) => {
    const answer = await request;
    if (answer.ok) {
      setOutcome({ ok: true, text: `${what}. ${describeDeployment(answer.data)}` });
      reload();
    } else {
      setOutcome({ ok: false, text: `Refused: ${answer.error}` });
      refused(answer);
    }
  };
  const base = modelPath(current.name);
  const shadowPath = (v) => `${base}/shadows/${encodeURIComponent(v)}`;

  return html`<section aria-labelledby="deploy-heading">
    <h2 id="deploy-heading">Deployment of ${current.name}</h2>
    <${ModelPicker} models=${models} model=${current.name} onPick=${(name) => go("deploy", name)} />
    <p>${describeDeployment(current)}</p>

    <h3>Confidence threshold</h3>
    <p class="slider">
      <label for="threshold">Confidence threshold</label>
      <input id="threshold" type="range" min="0" max="1" step="0.01" value=${threshold}
        onInput=${(e) => setThreshold(Number(e.currentTarget.value))}
        onChange=${(e) => apply(put(`${base}/threshold`, { threshold: Number(e.currentTarget.value) }), "Threshold set")} />
      <output for="threshold" aria-label="Threshold value">${fixed(threshold, 2)}</output>
    </p>

    <h3>Shadows</h3>
    ${(current.shadows || []).length === 0
      ? html`<p>No shadow. Add one from the board.</p>`
      : html`<ul class="shadows">${current.shadows.map((s) => html`<li>
          <label for=${`fraction-${s.version}`}>Fraction of traffic mirrored to version ${s.version}</label>
          <input id=${`fraction-${s.version}`} type="number" min="0" max="1" step="0.01"
            value=${fractions[s.version] ?? s.fraction}
            onInput=${(e) => setFractions({ ...fractions, [s.version]: e.currentTarget.value })} />
          <button type="button" onClick=${() => apply(put(shadowPath(s.version), { fraction: Number(fractions[s.version] ?? s.fraction) }), "Shadow fraction set")}>Set fraction for version ${s.version}</button>
          <button type="button" onClick=${() => apply(del(shadowPath(s.version)), "Shadow removed")}>Remove shadow version ${s.version}</button>
        </li>`)}</ul>`}

    <h3>Promotion</h3>
    <p class="picker">
      <label for="promotion-mode">Promotion mode</label>
      <select id="promotion-mode" value=${current.promotion.mode}
        onChange=${(e) => apply(put(`${base}/promotion`, { mode: e.currentTarget.value }), "Promotion mode set")}>
        <option value="manual" selected=${current.promotion.mode === "manual"}>manual: show the evidence</option>
        <option value="auto" selected=${current.promotion.mode === "auto"}>auto: promote a shadow shown better</option>
      </select>
      <span> alpha ${num(current.promotion.alpha, 3)}, ${current.promotion.min_labels} to ${current.promotion.max_labels} paired labels</span>
    </p>

    <h3>Rollback</h3>
    <p><button type="button" disabled=${!(current.history || []).length} onClick=${() => setAsking(true)}>Rollback ${current.name}</button></p>
    <${Outcome} outcome=${outcome} model=${current.name} />
    ${asking && html`<${Confirm}
      question=${`Roll ${current.name} back to its previous champion (version ${current.history[current.history.length - 1]})?`}
      confirmLabel="Rollback"
      onAnswer=${(yes) => { setAsking(false); if (yes) apply(post(`${base}/rollback`), "Rolled back"); }} />`}

    <h3>Champion history</h3>
    ${(current.history || []).length === 0
      ? html`<p>No earlier champion.</p>`
      : html`<ol class="history" aria-label="Earlier champions, oldest first">${current.history.map((v) => html`<li>version ${v}</li>`)}</ol>`}

    <h3>Audit</h3>
    ${!audit || audit.length === 0
      ? html`<p>No audited change${audit ? "" : " (the audit log could not be read)"}.</p>`
      : html`<div class="scroll"><table>
        <caption>Latest changes to ${current.name}, newest first</caption>
        <thead><tr><th scope="col">Time</th><th scope="col">Actor</th><th scope="col">Action</th><th scope="col">Revision</th><th scope="col">Champion after</th></tr></thead>
        <tbody>${audit.map((e) => html`<tr>
          <td>${when(e.time)}</td><td>${e.actor}</td><td>${e.action}</td><td>${e.revision}</td><td>${e.after.champion ?? dash}</td>
        </tr>`)}</tbody>
      </table></div>`}
  </section>`;
}
