// The captioner web page: pick or drop photos, POST each to /caption, show its captions.
// Plain browser JavaScript, no build step and no request to any other server.
"use strict";

const MAX_IN_FLIGHT = 4; // the server batches concurrent requests through the model

const state = { model: null, urls: [], queue: [], inFlight: 0 };

const $ = (selector, root = document) => root.querySelector(selector);

function formatNumber(value) {
  return (Math.round(value * 100) / 100).toFixed(2).replace("-", "\u2212");
}

async function loadModel() {
  const info = $("#model-info");
  try {
    const response = await fetch("/model");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const model = await response.json();
    state.model = model;
    const parts = [
      `model ${model.model}`,
      `${model.decoder} decoder`,
      model.encoder,
      `${model.vocab_size.toLocaleString("en")} words`,
      model.dataset ? `trained on ${model.dataset}` : null,
      `captioner ${model.captioner_version}`,
    ];
    info.textContent = parts.filter(Boolean).join(" \u00b7 ");
    const beam = $("#beam");
    beam.max = String(model.limits.max_beam_size);
    beam.value = String(Math.min(model.defaults.beam_size, model.limits.max_beam_size));
    $("#num").max = String(model.limits.max_beam_size);
  } catch (error) {
    info.textContent = `could not read /model (${error.message})`;
  }
}

function searchParams() {
  const beam = Math.max(1, parseInt($("#beam").value, 10) || 1);
  const wanted = Math.max(1, parseInt($("#num").value, 10) || 1);
  const params = new URLSearchParams({ beam_size: String(beam), num_captions: String(Math.min(wanted, beam)) });
  if (state.model && state.model.attention) params.set("attention", "true");
  return params;
}

function addFiles(fileList) {
  const files = Array.from(fileList || []);
  if (!files.length) return;
  for (const url of state.urls) URL.revokeObjectURL(url);
  state.urls = [];
  const results = $("#results");
  results.replaceChildren();
  for (const file of files) {
    const item = $("#result-template").content.firstElementChild.cloneNode(true);
    const url = URL.createObjectURL(file);
    state.urls.push(url);
    $("img", item).src = url;
    $("img", item).alt = file.name;
    $(".name", item).textContent = file.name;
    $(".caption", item).textContent = "captioning\u2026";
    results.append(item);
    state.queue.push({ file, item, params: searchParams() });
  }
  updateStatus();
  pump();
}

function updateStatus() {
  const waiting = state.queue.length + state.inFlight;
  $("#status").textContent = waiting ? `captioning ${waiting} photo${waiting === 1 ? "" : "s"}\u2026` : "";
}

function pump() {
  while (state.inFlight < MAX_IN_FLIGHT && state.queue.length) {
    const job = state.queue.shift();
    state.inFlight += 1;
    caption(job).finally(() => {
      state.inFlight -= 1;
      updateStatus();
      pump();
    });
  }
}

async function caption({ file, item, params }) {
  const form = new FormData();
  form.append("image", file, file.name);
  try {
    const response = await fetch(`/caption?${params}`, { method: "POST", body: form });
    let body;
    try {
      body = await response.json();
    } catch {
      body = { detail: `${response.status} ${response.statusText}` };
    }
    if (!response.ok) {
      showError(item, body.detail || `HTTP ${response.status}`);
      return;
    }
    render(item, body);
  } catch (error) {
    showError(item, `no answer from the server (${error.message})`);
  }
}

function showError(item, message) {
  item.dataset.state = "error";
  $(".caption", item).textContent = "";
  $(".error", item).textContent = message;
}

// A caption as text, or as one button per word when it has attention maps. The words are
// separated by text nodes holding a space, so the element's textContent is the caption itself.
function fillCaption(element, hypothesis, item, grid) {
  element.replaceChildren();
  const words = hypothesis.caption.split(" ");
  if (!hypothesis.attention || !grid) {
    element.textContent = hypothesis.caption;
    return;
  }
  words.forEach((word, index) => {
    if (index) element.append(" ");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "word";
    button.textContent = word;
    const map = hypothesis.attention[index];
    const show = () => drawHeat(item, map, grid, button);
    button.addEventListener("mouseenter", show);
    button.addEventListener("focus", show);
    button.addEventListener("click", () => {
      const pinned = item.dataset.pinned === button.dataset.key;
      item.dataset.pinned = pinned ? "" : button.dataset.key;
      if (pinned) clearHeat(item);
      else show();
    });
    button.addEventListener("mouseleave", () => {
      if (!item.dataset.pinned) clearHeat(item);
    });
    element.append(button);
  });
}

function render(item, body) {
  item.dataset.state = "done";
  const grid = body.attention_grid || null;
  const best = body.captions[0];
  const captionElement = $(".caption", item);
  fillCaption(captionElement, best, item, grid);
  captionElement.querySelectorAll(".word").forEach((b, i) => (b.dataset.key = `0:${i}`));

  const list = $(".nbest", item);
  list.replaceChildren();
  if (body.captions.length > 1) {
    body.captions.forEach((hypothesis, rank) => {
      const entry = document.createElement("li");
      const words = document.createElement("span");
      words.className = "words";
      fillCaption(words, hypothesis, item, grid);
      words.querySelectorAll(".word").forEach((b, i) => (b.dataset.key = `${rank + 1}:${i}`));
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = `score ${formatNumber(hypothesis.score)} \u00b7 log-prob ${formatNumber(hypothesis.log_prob)}`;
      entry.append(words, " ", score);
      list.append(entry);
    });
  }

  const tags = $(".tags", item);
  tags.replaceChildren();
  for (const tag of body.tags || []) {
    const chip = document.createElement("li");
    chip.textContent = tag.probability === undefined ? tag.tag : `${tag.tag} ${Math.round(tag.probability * 100)}%`;
    if (tag.word && tag.word !== tag.tag) chip.title = `a caption says "${tag.word}"`;
    tags.append(chip);
  }

  $(".hint", item).textContent = grid ? "Hover over or click a word to see where the model looked." : "";
  const t = body.timing_ms;
  const shared = body.batch_size > 1 ? ` (shared with ${body.batch_size - 1} other image${body.batch_size === 2 ? "" : "s"})` : "";
  $(".timing", item).textContent =
    `${Math.round(t.total)} ms: decode ${Math.round(t.decode)}, queue ${Math.round(t.queue)}, encode ${Math.round(t.encode)}, search ${Math.round(t.search)}${shared}`;
}

// Draws one word's attention over the photo: the grid is scaled to the image (the model saw the
// whole photo squashed to a square), smoothed, and everything the word did not look at is darkened.
function drawHeat(item, weights, grid, button) {
  const image = $("img", item);
  const canvas = $(".heat", item);
  const width = image.clientWidth;
  const height = image.clientHeight;
  if (!width || !height || !weights) return;
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const cells = document.createElement("canvas");
  cells.width = grid;
  cells.height = grid;
  const small = cells.getContext("2d");
  const pixels = small.createImageData(grid, grid);
  const peak = Math.max(...weights) || 1;
  for (let i = 0; i < grid * grid; i += 1) {
    const level = (weights[i] || 0) / peak; // 1 where the word looked most
    pixels.data[4 * i] = 20;
    pixels.data[4 * i + 1] = 10;
    pixels.data[4 * i + 2] = 40;
    pixels.data[4 * i + 3] = Math.round(215 * (1 - level));
  }
  small.putImageData(pixels, 0, 0);
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.imageSmoothingEnabled = true;
  context.imageSmoothingQuality = "high";
  context.drawImage(cells, 0, 0, canvas.width, canvas.height);
  item.querySelectorAll(".word.active").forEach((b) => b.classList.remove("active"));
  if (button) button.classList.add("active");
  canvas.classList.add("visible");
}

function clearHeat(item) {
  const canvas = $(".heat", item);
  canvas.classList.remove("visible");
  item.querySelectorAll(".word.active").forEach((b) => b.classList.remove("active"));
}

function setUp() {
  const drop = $("#drop");
  const input = $("#file");
  input.addEventListener("change", () => {
    addFiles(input.files);
    input.value = "";
  });
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      input.click();
    }
  });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    addFiles(event.dataTransfer.files);
  });
  // A photo dropped anywhere else on the page must not navigate away from it.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    addFiles(event.dataTransfer.files);
  });
  loadModel();
}

document.addEventListener("DOMContentLoaded", setUp);
