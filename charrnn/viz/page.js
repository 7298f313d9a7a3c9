
const data = JSON.parse(document.getElementById("data").textContent);
const spans = Array.from(document.querySelectorAll("#text .t"));
const select = document.getElementById("mode");
const tip = document.getElementById("tip");
let mode = "surprisal";

function surprisal(bits) {
  const t = Math.min(Math.max(bits, 0) / data.fullBits, 1);
  return `rgb(${Math.round(255 - 35 * t)},${Math.round(255 - 215 * t)},${Math.round(255 - 215 * t)})`;
}
function diverging(s) {  // red for positive, blue for negative, white at 0
  const a = Math.min(Math.abs(s), 1);
  const hi = Math.round(255 - 35 * a), lo = Math.round(255 - 215 * a);
  return s >= 0 ? `rgb(${hi},${lo},${lo})` : `rgb(${lo},${lo},${hi})`;
}
function show(name) {
  mode = data.series[name] ? name : "surprisal";
  select.value = mode;
  const legend = document.getElementById("legend");
  if (mode === "surprisal") {
    spans.forEach((el, i) => { el.style.background = surprisal(data.bits[i]); });
    legend.innerHTML = `0 bits <span class="bar" style="background:linear-gradient(90deg,${surprisal(0)},${surprisal(data.fullBits)})"></span> ${data.fullBits}+ bits`;
  } else {
    const v = data.series[mode];
    const scale = Math.max(1e-6, ...v.map(Math.abs));
    spans.forEach((el, i) => { el.style.background = diverging(v[i] / scale); });
    legend.innerHTML = `${(-scale).toFixed(2)} <span class="bar" style="background:linear-gradient(90deg,${diverging(-1)},${diverging(0)},${diverging(1)})"></span> +${scale.toFixed(2)}`;
  }
  document.querySelectorAll("a.unit").forEach(a => a.classList.toggle("on", a.getAttribute("href") === "#unit=" + mode));
}
function fromHash() {
  const m = location.hash.match(/^#unit=(.+)$/);
  show(m ? decodeURIComponent(m[1]) : "surprisal");
}
function visible(tok) {
  return tok.replace(/\n/g, "\u21b5").replace(/ /g, "\u2423").replace(/\t/g, "\u2192");
}
function escapeHtml(s) {
  return s.replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})[c]);
}
function hover(el, x, y) {
  const i = +el.dataset.i;
  let head = `<b>${escapeHtml(visible(data.segments[i]))}</b> &middot; ${data.bits[i].toFixed(2)} bits`;
  if (mode !== "surprisal") head += ` &middot; ${mode} = ${data.series[mode][i].toFixed(3)}`;
  const rows = data.predictions[i].map(([tok, p]) =>
    `<div class="row"><span class="tok">${escapeHtml(visible(tok))}</span><span class="p" style="width:${Math.round(p * 120)}px"></span>${(100 * p).toFixed(1)}%</div>`
  ).join("");
  tip.innerHTML = `<div>${head}</div><div>next:</div>${rows}`;
  tip.hidden = false;
  tip.style.left = Math.min(x + 12, window.innerWidth - tip.offsetWidth - 8) + "px";
  tip.style.top = Math.min(y + 16, window.innerHeight - tip.offsetHeight - 8) + "px";
}
document.getElementById("text").addEventListener("mouseover", e => {
  if (e.target.classList.contains("t")) hover(e.target, e.clientX, e.clientY);
});
document.getElementById("text").addEventListener("mouseleave", () => { tip.hidden = true; });
select.addEventListener("change", () => { location.hash = select.value === "surprisal" ? "" : "unit=" + select.value; show(select.value); });
window.addEventListener("hashchange", fromHash);
fromHash();
