// The version board: per model, one row per version with its offline scores, the best
// validation score marked, its role, live accuracy and registry alias, and the row's actions
// (promote, shadow, download), each change confirmed in a dialog.
import { html, useState, useEffect } from "./vendor/htm-preact-standalone-3.1.1.mjs";
import { get, put, download, modelPath } from "./api.js";
import { Cup, RoleBadge, Confirm, Outcome, describeDeployment, fixed, when, estimate, dash } from "./format.js";

const KEY_PARAMS = 3;

function params(version) {
  const entries = Object.entries(version.params || {});
  if (!entries.length) return dash;
  const shown = entries.slice(0, KEY_PARAMS).map(([k, v]) => `${k}=${v}`).join(", ");
  return entries.length > KEY_PARAMS ? `${shown}, …` : shown;
}

function score(version, split) {
  const scores = (version.metrics || {})[split] || {};
  return version.highlight ? scores[version.highlight] : undefined;
}

function aliases(model, version) {
  const sync = model.registry && model.registry.sync;
  const named = sync && sync.aliases ? Object.entries(sync.aliases) : [];
  const mine = named.filter(([, v]) => String(v) === version.version).map(([alias]) => `@${alias}`);
  if (mine.length) return mine.join(", ");
  return version.source ? `${version.source.name} v${version.source.version}` : dash;
}

function liveAccuracy(quality, version) {
  const entry = quality && quality.versions.find((v) => v.version === version.version);
  if (!entry) return dash;
  const recent = entry.recent || {};
  if (recent.accuracy) return estimate(recent.accuracy);
  if (recent.mae) return `MAE ${estimate(recent.mae, false)}`;
  return `${entry.labelled} labels`;
}

function ModelBoard({ model, reload, refused }) {
  const [quality, setQuality] = useState(null);
  const [asking, setAsking] = useState(null);
  const [fraction, setFraction] = useState("0.1");
  const [outcome, setOutcome] = useState(null);

  useEffect(() => {
    get(`${modelPath(model.name)}/quality`).then((a) => setQuality(a.ok ? a.data : null));
  }, [model.name, model.revision]);

  const highlight = model.versions.find((v) => v.highlight)?.highlight;
  const headingId = `board-${model.name}`;

  const change = async (kind, version) => {
    const answer = kind === "promote"
      ? await put(`${modelPath(model.name)}/champion`, { version })
      : await put(`${modelPath(model.name)}/shadows/${encodeURIComponent(version)}`, { fraction: Number(fraction) });
    if (answer.ok) {
      setOutcome({ ok: true, text: `Done. ${describeDeployment(answer.data)}` });
      reload();
    } else {
      setOutcome({ ok: false, text: `Refused: ${answer.error}` });
      refused(answer);
    }
  };

  const onAnswer = (yes) => {
    const question = asking;
    setAsking(null);
    if (yes) change(question.kind, question.version);
  };

  return html`<section aria-labelledby=${headingId}>
    <h2 id=${headingId}>${model.name}</h2>
    <p>${describeDeployment(model)}</p>
    <div class="scroll">
    <table>
      <caption>Versions of ${model.name}</caption>
      <thead><tr>
        <th scope="col">Version</th><th scope="col">Created</th><th scope="col">Run</th>
        <th scope="col">Key params</th>
        <th scope="col">Validation ${highlight || "score"}</th><th scope="col">Test ${highlight || "score"}</th>
        <th scope="col">Status</th><th scope="col">Role</th><th scope="col">Live accuracy</th>
        <th scope="col">Registry alias</th><th scope="col">Actions</th>
      </tr></thead>
      <tbody>
      ${model.versions.map((v) => {
        const best = model.best_validation === v.version;
        const label = `${model.name} version ${v.version}`;
        return html`<tr class=${best ? "best" : ""}>
          <th scope="row">${v.version}</th>
          <td>${when(v.created_at)}</td>
          <td>${v.run || dash}</td>
          <td>${params(v)}</td>
          <td class="score">${fixed(score(v, "validation"))}${best && html` <${Cup} /> <strong class="best-mark">best</strong>`}</td>
          <td class="score">${fixed(score(v, "test"))}</td>
          <td>${v.status}</td>
          <td><${RoleBadge} version=${v} shadows=${model.shadows} /></td>
          <td>${liveAccuracy(quality, v)}</td>
          <td>${aliases(model, v)}</td>
          <td class="actions">
            <button type="button" disabled=${v.role === "champion" || v.status !== "ready"}
              onClick=${() => setAsking({ kind: "promote", version: v.version })}>Promote ${label}</button>
            <button type="button" disabled=${v.role === "champion" || v.status !== "ready"}
              onClick=${() => setAsking({ kind: "shadow", version: v.version })}>Shadow ${label}</button>
            <a href=${`${modelPath(model.name)}/versions/${encodeURIComponent(v.version)}/download`}
              aria-label=${`Download ${label}`}
              onClick=${async (e) => {
                e.preventDefault();
                const error = await download(model.name, v.version);
                if (error) setOutcome({ ok: false, text: `Download refused: ${error}` });
              }}>Download</a>
          </td>
        </tr>`;
      })}
      </tbody>
    </table>
    </div>
    <${Outcome} outcome=${outcome} model=${model.name} />
    ${asking && asking.kind === "promote" && html`<${Confirm}
      question=${`Promote ${model.name} version ${asking.version} to champion? It will answer every unversioned request.`}
      confirmLabel="Promote" onAnswer=${onAnswer} />`}
    ${asking && asking.kind === "shadow" && html`<${Confirm}
      question=${`Mirror a fraction of ${model.name}'s traffic to version ${asking.version}?`}
      confirmLabel="Shadow" onAnswer=${onAnswer}>
      <label for="shadow-fraction">Shadow fraction</label>
      <input id="shadow-fraction" type="number" min="0" max="1" step="0.01" value=${fraction}
        onInput=${(e) => setFraction(e.currentTarget.value)} />
    <//>`}
  </section>`;
}

export function Board({ models, reload, refused }) {
  return html`<div class="board">
    ${models.map((model) => html`<${ModelBoard} key=${model.name} model=${model} reload=${reload} refused=${refused} />`)}
  </div>`;
}
