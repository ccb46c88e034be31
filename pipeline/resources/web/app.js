// The page: pick an index, type a query, see ranked hits with their matched and expansion terms.
// Everything comes from this service's own API; text from the index is inserted as text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const MAX_CHART_TERMS = 30;

function element(tag, attributes = {}, text = null) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  return node;
}

function svgElement(tag, attributes = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function getJSON(url) {
  const response = await fetch(url, {headers: {accept: "application/json"}});
  const body = await response.json().catch(() => ({error: `HTTP ${response.status}`}));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

let indexes = [];

async function loadIndexes() {
  const body = await getJSON("/v1/indexes");
  indexes = body.indexes;
  const select = $("index");
  select.replaceChildren(...indexes.map((index) => element("option", {value: index.name}, index.name)));
  const wanted = new URLSearchParams(location.search).get("index");
  if (wanted && indexes.some((index) => index.name === wanted)) select.value = wanted;
  describeIndex();
}

function describeIndex() {
  const index = indexes.find((candidate) => candidate.name === $("index").value);
  if (!index) return;
  const encoder = index.encoder ? index.encoder.name : "unknown encoder";
  $("index-info").textContent = `${index.documents.toLocaleString()} documents · ${encoder} · ` +
    `${index.pooling || "max"} pooling · scale ${index.scale ?? 100}` +
    (index.stores_text ? "" : " · no stored text (built without --store-raw)");
}

// Horizontal bars of the query's weighted terms, heaviest first; expansion terms in another colour.
function drawQueryChart(terms) {
  const chart = $("query-chart");
  const shown = terms.slice(0, MAX_CHART_TERMS);
  const row = 18, label = 110, width = 520, top = 4;
  const maxWeight = Math.max(1, ...shown.map((term) => term.weight));
  chart.setAttribute("viewBox", `0 0 ${width} ${top + row * shown.length}`);
  chart.setAttribute("height", top + row * shown.length);
  chart.replaceChildren();
  shown.forEach((term, i) => {
    const y = top + i * row;
    const length = Math.max(1, (width - label - 60) * term.weight / maxWeight);
    const group = svgElement("g", {class: "bar " + (term.expansion ? "expansion" : "literal")});
    group.append(svgElement("text", {x: label - 6, y: y + 12, "text-anchor": "end", class: "label"}, term.term));
    group.append(svgElement("rect", {x: label, y: y + 2, width: length, height: row - 5, rx: 2}));
    group.append(svgElement("text", {x: label + length + 4, y: y + 12, class: "value"}, String(term.weight)));
    group.append(svgElement("title", {}, `${term.term}: weight ${term.weight}` +
      (term.expansion ? " (expansion: not in the query text)" : "")));
    chart.append(group);
  });
  const more = terms.length - shown.length;
  $("query-section").querySelector("h2").dataset.more = more > 0 ? `+${more} lighter terms` : "";
  $("query-section").hidden = false;
}

// The document text with the spans of matched terms wrapped in <mark>.
function highlightedText(text, spans) {
  const paragraph = element("p", {class: "text"});
  let at = 0;
  for (const [start, end] of spans || []) {
    if (start > at) paragraph.append(document.createTextNode(text.slice(at, start)));
    paragraph.append(element("mark", {class: "match"}, text.slice(start, end)));
    at = end;
  }
  paragraph.append(document.createTextNode(text.slice(at)));
  return paragraph;
}

function termChips(explanation) {
  const list = element("ul", {class: "terms"});
  const total = Math.max(1, explanation.total);
  for (const term of explanation.terms) {
    const chip = element("li", {class: "chip" + (term.expansion ? " expansion" : ""),
                                title: `query weight ${term.query_weight} × document impact ${term.doc_impact}`});
    chip.append(element("span", {class: "term"}, term.term + (term.expansion ? " " + term.expansion : "")));
    chip.append(element("span", {class: "contribution"}, term.contribution.toLocaleString()));
    const share = element("span", {class: "share"});
    share.style.width = `${Math.max(2, 60 * term.contribution / total)}px`;
    chip.append(share);
    list.append(chip);
  }
  return list;
}

function showResults(body) {
  const results = $("results");
  results.replaceChildren();
  for (const hit of body.candidates) {
    const item = element("li", {class: "hit", "data-docid": hit.docid});
    const head = element("div", {class: "hit-head"});
    head.append(element("span", {class: "rank"}, `${hit.rank}.`));
    head.append(element("span", {class: "docid"}, hit.docid));
    head.append(element("span", {class: "score"}, `score ${hit.score.toLocaleString()}`));
    item.append(head);
    const text = hit.doc && typeof hit.doc.contents === "string" ? hit.doc.contents : null;
    if (text !== null) item.append(highlightedText(text, hit.explanation && hit.explanation.highlights));
    else item.append(element("p", {class: "text missing"}, "(the index stores no text for this document)"));
    if (hit.explanation) item.append(termChips(hit.explanation));
    results.append(item);
  }
  $("results-section").hidden = false;
  const timing = body.timing_ms;
  $("status").textContent = `${body.candidates.length} hits · ${body.query.terms.length} query terms · ` +
    `encode ${timing.encode.toFixed(1)} ms, search ${timing.search.toFixed(1)} ms, explain ${timing.build.toFixed(1)} ms`;
}

async function search(event) {
  if (event) event.preventDefault();
  const query = $("query").value.trim();
  const index = $("index").value;
  if (!query || !index) return;
  const params = new URLSearchParams({query, hits: $("hits").value, explain: "true"});
  history.replaceState(null, "", `?${new URLSearchParams({index, q: query})}`);
  $("status").textContent = "searching…";
  document.body.classList.add("busy");
  try {
    const body = await getJSON(`/v1/${encodeURIComponent(index)}/search?${params}`);
    showError("");
    drawQueryChart(body.query.terms);
    showResults(body);
  } catch (error) {
    showError(error.message);
    $("status").textContent = "";
  } finally {
    document.body.classList.remove("busy");
    document.body.dataset.searches = String(Number(document.body.dataset.searches || 0) + 1);
  }
}

async function start() {
  $("search-form").addEventListener("submit", search);
  $("index").addEventListener("change", () => { describeIndex(); search(); });
  $("hits").addEventListener("change", () => search());
  try {
    await loadIndexes();
  } catch (error) {
    showError(`cannot list indexes: ${error.message}`);
    return;
  }
  const query = new URLSearchParams(location.search).get("q");
  if (query) {
    $("query").value = query;
    search();
  }
  document.body.dataset.ready = "true";
}

start();
