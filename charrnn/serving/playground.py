"""The playground page ``charrnn serve`` answers at ``/``: one self-contained HTML file that
streams from ``/v1/completions`` and fetches nothing else, so it works on a machine with no
network and shows only what the server sends."""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>charrnn playground</title>
<style>
  :root { --ink: #1d1d1f; --muted: #6e6e73; --line: #d2d2d7; --accent: #0a64c8; --paper: #fffef9; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, sans-serif; color: var(--ink); background: #f5f5f7; }
  header { padding: 12px 20px; border-bottom: 1px solid var(--line); background: #fff; display: flex; gap: 16px; align-items: baseline; }
  header h1 { font-size: 18px; margin: 0; }
  header span { color: var(--muted); }
  main { display: grid; grid-template-columns: 320px 1fr; gap: 20px; padding: 20px; }
  form { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 14px; display: grid; gap: 10px; align-content: start; }
  label { display: grid; gap: 3px; font-size: 13px; color: var(--muted); }
  input, select, textarea { width: 100%; min-width: 0; font: inherit; color: var(--ink); padding: 6px 8px; border: 1px solid var(--line); border-radius: 6px; background: #fff; }
  textarea { min-height: 120px; resize: vertical; font-family: ui-monospace, monospace; font-size: 13px; }
  .row { display: grid; grid-template-columns: 1fr 1fr; gap: 10px; }
  .buttons { display: flex; gap: 8px; }
  button { font: inherit; padding: 7px 16px; border-radius: 6px; border: 1px solid var(--accent); background: var(--accent); color: #fff; cursor: pointer; }
  button.secondary { background: #fff; color: var(--accent); }
  button:disabled { opacity: .45; cursor: default; }
  section { min-width: 0; }
  .bar { display: flex; gap: 12px; align-items: center; margin-bottom: 8px; color: var(--muted); font-size: 13px; }
  .tabs button { padding: 4px 12px; }
  #status.error { color: #b00020; }
  #output { white-space: pre-wrap; font: 13px/1.5 ui-monospace, monospace; background: #fff; border: 1px solid var(--line);
            border-radius: 8px; padding: 14px; min-height: 420px; margin: 0; overflow-wrap: anywhere; }
  #output .prompt { color: var(--muted); }
  #screenplay { background: var(--paper); border: 1px solid var(--line); box-shadow: 0 2px 8px rgba(0,0,0,.08); width: 8.5in; max-width: 100%;
                min-height: 420px; padding: 0.8in 1in 0.8in 1.5in; font: 12pt/1.2 "Courier Prime", "Courier New", Courier, monospace; }
  #screenplay p { margin: 0 0 12pt; white-space: pre-wrap; }
  #screenplay .scene { text-transform: uppercase; font-weight: bold; }
  #screenplay .cue { text-align: center; margin: 0; text-transform: uppercase; }
  #screenplay .paren { margin: 0 1.6in 0 1.6in; }
  #screenplay .dialogue { margin: 0 1.2in 12pt 1.2in; }
  #screenplay .dialogue.cont, #screenplay .paren.cont { margin-bottom: 0; }
  #screenplay .transition { text-align: right; text-transform: uppercase; }
  [hidden] { display: none !important; }
</style>
</head>
<body>
<header><h1>charrnn playground</h1><span>text streamed from <code>/v1/completions</code></span></header>
<main>
  <form id="controls" autocomplete="off">
    <label>Model <select id="model"></select></label>
    <label>Prompt <textarea id="prompt" placeholder="Text the model continues (empty: start of a line)"></textarea></label>
    <div class="row">
      <label>Temperature <input id="temperature" type="number" min="0" step="any" value="0.8"></label>
      <label>Top-p <input id="top_p" type="number" min="0.01" max="1" step="any" value="1"></label>
    </div>
    <div class="row">
      <label>Length <input id="length" type="number" min="0" step="1" value="1000"></label>
      <label>Seed <input id="seed" type="number" min="0" step="1" placeholder="random"></label>
    </div>
    <label>Stop at (one per line, \n for a newline) <textarea id="stop" style="min-height:44px"></textarea></label>
    <label>API key (if the server asks for one) <input id="key" type="password"></label>
    <div class="buttons">
      <button id="generate" type="submit">Generate</button>
      <button id="stop-button" class="secondary" type="button" disabled>Stop</button>
    </div>
  </form>
  <section>
    <div class="bar">
      <span class="tabs"><button id="show-text" type="button">Text</button>
        <button id="show-screenplay" type="button" class="secondary">Screenplay</button></span>
      <span id="rate">0 chars/s</span><span id="count">0 chars</span><span id="status"></span>
    </div>
    <pre id="output"></pre>
    <article id="screenplay" hidden></article>
  </section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let controller = null, text = "", prompt = "", started = 0, generated = 0;

function headers() {
  const h = { "Content-Type": "application/json" };
  if ($("key").value) h["Authorization"] = "Bearer " + $("key").value;
  return h;
}

function status(message, isError) {
  $("status").textContent = message;
  $("status").className = isError ? "error" : "";
}

async function loadModels() {
  try {
    const r = await fetch("/v1/models", { headers: headers() });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
    $("model").replaceChildren(...body.data.map((m) => new Option(m.id, m.id)));
  } catch (e) { status(e.message, true); }
}

function request() {
  const body = { model: $("model").value || undefined, prompt: $("prompt").value, stream: true,
                 max_tokens: Number($("length").value), temperature: Number($("temperature").value) };
  const topP = Number($("top_p").value);
  if (topP > 0 && topP < 1) body.top_p = topP;
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  const stops = $("stop").value.split("\n").filter((s) => s !== "").map((s) => s.replace(/\\n/g, "\n").replace(/\\t/g, "\t"));
  if (stops.length) body.stop = stops;
  return body;
}

function render() {
  const out = $("output");
  const head = document.createElement("span");
  head.className = "prompt";
  head.textContent = prompt;
  out.replaceChildren(head, document.createTextNode(text));
  out.scrollTop = out.scrollHeight;
  if (!$("screenplay").hidden) $("screenplay").replaceChildren(...screenplay(prompt + text));
  const seconds = (performance.now() - started) / 1000;
  $("rate").textContent = (seconds > 0 ? Math.round(generated / seconds) : 0) + " chars/s";
  $("count").textContent = generated + " chars";
}

// Fountain's rules, enough for a page: scene headings, character cues (a line in capitals
// before dialogue), parentheticals, dialogue, transitions, and action for everything else.
function screenplay(source) {
  const SCENE = /^(\.(?=[^.])|(INT|EXT|EST|INT\.\/EXT|INT\/EXT|I\/E)[. ])/i;
  const nodes = [], lines = source.split("\n");
  const para = (cls, s) => { const p = document.createElement("p"); if (cls) p.className = cls; p.textContent = s; nodes.push(p); return p; };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i], trimmed = line.trim(), next = lines[i + 1];
    const blankBefore = i === 0 || lines[i - 1].trim() === "";
    if (trimmed === "") continue;
    if (blankBefore && SCENE.test(trimmed)) { para("scene", trimmed.replace(/^\./, "")); continue; }
    if (blankBefore && /^[A-Z ]+TO:$/.test(trimmed)) { para("transition", trimmed); continue; }
    const cue = /^[^a-z]*[A-Z][^a-z]*$/.test(trimmed.replace(/\(.*?\)/g, "")) && !/[.!?,:;]$/.test(trimmed.replace(/\(.*?\)$/, ""));
    if (blankBefore && cue && next !== undefined && next.trim() !== "") {
      para("cue", trimmed.replace(/^@/, ""));
      let last = null;
      while (i + 1 < lines.length && lines[i + 1].trim() !== "") {
        const d = lines[++i].trim();
        if (last) last.classList.add("cont");
        last = para(/^\(.*\)$/.test(d) ? "paren" : "dialogue", d);
      }
      continue;
    }
    para("action", trimmed.replace(/^!/, ""));
  }
  return nodes;
}

async function generate(event) {
  event.preventDefault();
  if (controller) return;
  controller = new AbortController();
  $("generate").disabled = true;
  $("stop-button").disabled = false;
  status("generating…");
  prompt = $("prompt").value; text = ""; generated = 0; started = performance.now();
  render();
  try {
    const r = await fetch("/v1/completions", { method: "POST", headers: headers(), body: JSON.stringify(request()), signal: controller.signal });
    if (!r.ok) { const b = await r.json().catch(() => ({})); throw new Error(b.error ? b.error.message : r.statusText); }
    const reader = r.body.getReader(), decoder = new TextDecoder();
    let buffer = "", finish = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        if (!event.startsWith("data: ")) continue;
        const data = event.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        for (const c of chunk.choices) { text += c.text; generated += [...c.text].length; finish = c.finish_reason || finish; }
      }
      render();
    }
    status("done" + (finish ? " (" + finish + ")" : ""));
  } catch (e) {
    status(e.name === "AbortError" ? "stopped" : e.message, e.name !== "AbortError");
  } finally {
    controller = null;
    $("generate").disabled = false;
    $("stop-button").disabled = true;
    render();
  }
}

function show(view) {
  const sp = view === "screenplay";
  $("screenplay").hidden = !sp; $("output").hidden = sp;
  $("show-screenplay").className = sp ? "" : "secondary"; $("show-text").className = sp ? "secondary" : "";
  render();
}

$("controls").addEventListener("submit", generate);
$("stop-button").addEventListener("click", () => controller && controller.abort());
$("show-text").addEventListener("click", () => show("text"));
$("show-screenplay").addEventListener("click", () => show("screenplay"));
$("key").addEventListener("change", loadModels);
loadModels();
</script>
</body>
</html>
"""
