// The playground: the page's state, its controls, and the calls that move it. Every number
// drawn comes from the server: Train's progress (the loss curve), GetModel (the weights),
// Predict over a grid (the surface), a dry-run Step (a hovered input's activations) and Step
// (the article's math). Drawing happens when data arrives, never on animation frames (a
// hidden or headless page may throttle those); frames are dropped, never queued: one request
// for the weights and surface at a time, for the newest version, at most every FRAME_MS.
import * as api from "./api.js";
import { drawCurve } from "./curve.js";
import { fmt, vector } from "./format.js";
import { drawNetwork } from "./network.js";
import { renderStep } from "./step.js";
import { clearSurface, drawPoints, drawSurface, nearestSample, planeOf, toPlane } from "./surface.js";

const FRAME_MS = 100; // at most ten redraws of the network and surface a second
const CURVE_MS = 100;
const GRID_STEPS = 50;
const $ = (id) => document.getElementById(id);

const state = {
  info: null,
  data: null,
  plane: null,
  model: null,
  epochsTrained: 0,
  history: [],
  training: null, // {controller, done}
  stepRow: 0,
  hover: null,
  frame: { inFlight: false, waiting: false, wanted: 0, drawn: 0 },
  curveTimer: null,
};
// For readers of the page (and its browser test): the state, and when the network was first
// drawn (ms after the navigation began).
window.playground = { state, firstNetworkMs: null };

// -- status and errors ------------------------------------------------------------------------

function setStatus(kind, text) {
  const status = $("status");
  status.dataset.state = kind;
  status.textContent = text;
}

function report(error) {
  if (error instanceof api.ApiError && error.status === 401) {
    $("token-form").hidden = false;
    setStatus("token", "this server asks for a token");
    $("token").focus();
  } else {
    setStatus("error", "error");
  }
  const box = $("message");
  box.dataset.kind = "error";
  box.textContent = error instanceof api.ApiError ? `${error.code}: ${error.message}` : String(error.message || error);
  box.hidden = false;
}

function clearMessage() {
  $("message").hidden = true;
  $("message").textContent = "";
}

function tell(text) {
  const box = $("message");
  box.textContent = text;
  box.hidden = false;
  box.dataset.kind = "note";
}

// -- reading the controls ---------------------------------------------------------------------

const number = (id) => Number($(id).value);

function hiddenSizes() {
  const text = $("hidden-layers").value.trim();
  if (!text) return [];
  const sizes = text.split(/[\s,;-]+/).filter(Boolean).map(Number);
  if (sizes.some((n) => !Number.isInteger(n) || n < 1)) {
    throw new Error(`hidden layers: give neurons per layer as whole numbers, like 4 or 8,8 (got "${text}")`);
  }
  return sizes;
}

function layerSizes() {
  return [state.data.inputs[0].length, ...hiddenSizes(), state.data.targets[0].length];
}

function networkBody() {
  return {
    layer_sizes: layerSizes(), hidden: $("hidden-activation").value, output: $("output-activation").value,
    loss: $("loss").value, bias: $("bias").checked, gradient_mode: $("gradient-mode").value,
    init: $("init").value, seed: number("init-seed"),
  };
}

function dataBody() {
  return {
    kind: $("dataset").value, points: number("points"), noise: number("noise"), seed: number("data-seed"),
    validation_fraction: number("validation"), classes: number("classes"), csv: $("csv").value,
    target_columns: number("target-columns"),
  };
}

function trainBody(epochs, reportEvery, seed) {
  const body = {
    inputs: state.data.inputs, targets: state.data.targets, epochs, seed,
    learning_rate: number("learning-rate"), batch_size: number("batch-size"), momentum: number("momentum"),
    shuffle: $("shuffle").checked, target_loss: number("target-loss"), report_every: reportEvery,
  };
  const options = state.info.train_options;
  if (options.includes("optimizer")) body.optimizer = $("optimizer").value;
  if (options.includes("validation_inputs") && state.data.validation_inputs.length) {
    body.validation_inputs = state.data.validation_inputs;
    body.validation_targets = state.data.validation_targets;
  }
  return body;
}

const modelPath = (suffix = "") => `/api/models/${encodeURIComponent(state.model.id)}${suffix}`;

// -- the model on show ------------------------------------------------------------------------

function showCounters() {
  const m = state.model;
  $("model-id").textContent = m.id;
  $("model-version").textContent = String(m.version);
  $("model-describe").textContent = m.describe;
  $("epoch-count").textContent = String(state.epochsTrained);
  $("iterations").textContent = String(m.iterations);
  $("loss-value").textContent = m.iterations ? fmt(m.last_loss) : "-";
  const input = state.data && state.data.inputs.length ? state.data.inputs[0].join(",") : "0,1";
  const token = state.info && state.info.token_required ? " --token TOKEN" : "";
  $("terminal").textContent = `jitnet predict ${m.id} --target ${state.info.grpc_target}${token} --input ${input}`;
}

function showModel(model) {
  const fresh = !state.model || state.model.id !== model.id;
  state.model = model;
  if (fresh) {
    state.history = [];
    state.hover = null;
    state.frame = { inFlight: false, waiting: false, wanted: 0, drawn: 0 };
    history.replaceState(null, "", `#model=${encodeURIComponent(model.id)}`);
    drawCurve($("loss-curve"), state.history);
    clearSurface($("surface"));
    state.epochsTrained = model.epochs_trained;
  }
  state.epochsTrained = Math.max(state.epochsTrained, model.epochs_trained);
  if (model.layers) {
    drawNetwork($("network"), model, state.hover);
    if (window.playground.firstNetworkMs === null) window.playground.firstNetworkMs = performance.now();
  }
  showCounters();
  const fits = fitsData(model);
  if (!fits) tell(`model ${model.id} takes ${model.layer_sizes[0]} inputs and gives ${model.layer_sizes.at(-1)} outputs; the data has ${state.data.inputs[0].length} and ${state.data.targets[0].length}: make a new network to train on it`);
  wantFrame(model.version);
}

function fitsData(model) {
  return model.layer_sizes[0] === state.data.inputs[0].length && model.layer_sizes.at(-1) === state.data.targets[0].length;
}

function frameUrl() {
  const surface = state.plane && state.model.layer_sizes[0] === 2;
  if (!surface) return modelPath("/frame");
  const { x, y } = state.plane;
  return modelPath(`/frame?steps=${GRID_STEPS}&x=${x[0]},${x[1]}&y=${y[0]},${y[1]}`);
}

function wantFrame(version) {
  state.frame.wanted = Math.max(state.frame.wanted, version);
  pumpFrames();
}

async function pumpFrames() {
  const f = state.frame;
  if (f.inFlight || f.waiting || f.wanted <= f.drawn || !state.model) return;
  f.inFlight = true;
  const asked = f.wanted;
  const id = state.model.id;
  const began = performance.now();
  try {
    const frame = await api.call("GET", frameUrl());
    if (state.model && state.model.id === id) {
      f.drawn = Math.max(f.drawn, asked, frame.model.version);
      showModel(frame.model);
      if (frame.surface) drawSurface($("surface"), frame.surface);
    }
  } catch (error) {
    f.drawn = Math.max(f.drawn, asked);
    report(error);
  } finally {
    f.inFlight = false;
    f.waiting = true;
    setTimeout(() => {
      f.waiting = false;
      pumpFrames();
    }, Math.max(0, FRAME_MS - (performance.now() - began)));
  }
}

async function createModel(article = false) {
  await stopTraining();
  clearMessage();
  const model = await api.call("POST", "/api/models", article ? { article: true } : networkBody());
  showModel(model);
  refreshModels();
  return model;
}

async function openModel(id) {
  await stopTraining();
  clearMessage();
  showModel(await api.call("GET", `/api/models/${encodeURIComponent(id)}`));
}

async function refreshModels() {
  const { models } = await api.call("GET", "/api/models");
  const select = $("models");
  const options = models.map((m) => {
    const option = document.createElement("option");
    option.value = m.id;
    option.textContent = `${m.id} (${m.layer_sizes.join("-")} ${m.hidden}/${m.output})`;
    return option;
  });
  select.replaceChildren(...options);
  if (state.model) select.value = state.model.id;
}

// -- the data ---------------------------------------------------------------------------------

function showDataOptions() {
  const kind = $("dataset").value;
  $("generated-options").hidden = kind === "xor" || kind === "csv";
  $("csv-options").hidden = kind !== "csv";
  $("classes-box").hidden = kind !== "clusters";
  $("validation-box").hidden = kind === "xor";
}

async function loadData() {
  clearMessage();
  const data = await api.call("POST", "/api/datasets", dataBody());
  state.data = data;
  state.plane = data.inputs[0].length === 2 ? planeOf(data) : null;
  state.stepRow = Math.min(state.stepRow, data.inputs.length - 1);
  $("step-row").max = String(data.inputs.length);
  $("data-summary").textContent = `${data.name}: ${data.inputs.length} samples to train on` +
    `${data.validation_inputs.length ? `, ${data.validation_inputs.length} held out` : ""}; ` +
    `${data.inputs[0].length} inputs, ${data.targets[0].length} target${data.targets[0].length > 1 ? "s" : ""}`;
  $("shape-summary").textContent = `${data.inputs[0].length} inputs, then the hidden layers, then ${data.targets[0].length} output${data.targets[0].length > 1 ? "s" : ""}`;
  showStepSample();
  if (state.plane) drawPoints($("points-layer"), data, state.plane, state.stepRow);
  else $("points-layer").replaceChildren();
  return data;
}

async function dataChanged() {
  const before = state.data;
  await loadData();
  const widths = (d) => `${d.inputs[0].length}/${d.targets[0].length}`;
  if (!state.model || !before || widths(before) !== widths(state.data) || !fitsData(state.model)) {
    await createModel();
  } else {
    state.frame.drawn = 0; // the plane may have moved: draw the surface again
    wantFrame(state.model.version);
  }
}

function showStepSample() {
  const row = state.stepRow;
  $("step-row").value = String(row + 1);
  $("step-sample").textContent = `input ${vector(state.data.inputs[row])}, target ${vector(state.data.targets[row])}`;
}

function chooseStepRow(row) {
  state.stepRow = Math.max(0, Math.min(state.data.inputs.length - 1, row));
  showStepSample();
  if (state.plane) drawPoints($("points-layer"), state.data, state.plane, state.stepRow);
}

// -- training ---------------------------------------------------------------------------------

function onProgress(line, base) {
  state.epochsTrained = base + line.epoch;
  state.history.push({ epoch: state.epochsTrained, loss: line.loss, validation_loss: line.validation_loss });
  state.model.version = line.version;
  state.model.last_loss = line.loss;
  state.model.iterations = Math.max(state.model.iterations, 1);
  $("epoch-count").textContent = String(state.epochsTrained);
  $("model-version").textContent = String(line.version);
  $("loss-value").textContent = fmt(line.loss);
  if (line.validation_loss !== undefined) {
    $("validation-loss-box").hidden = false;
    $("validation-loss-value").textContent = fmt(line.validation_loss);
  }
  setStatus("training", `training: epoch ${state.epochsTrained}, version ${line.version}`);
  if (state.curveTimer === null) {
    state.curveTimer = setTimeout(() => {
      state.curveTimer = null;
      drawCurve($("loss-curve"), state.history);
    }, CURVE_MS);
  }
  wantFrame(line.version);
}

// Play trains at the chosen pace: a Train call every CALL_MS with that many milliseconds'
// epochs, each reporting (and committing) about LINES_PER_SECOND times a second, so a small
// set does not race through its epochs unseen, nor a page commit as fast as the server can.
// "As fast as the server goes" is one Train call for all the epochs. Each call is shuffled
// (when asked) with the seed of the epoch it starts at.
const CALL_MS = 100;
const LINES_PER_SECOND = 20;
const MAX_MODE_REPORTS = 200;

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(new DOMException("paused", "AbortError"));
    }, { once: true });
  });
}

async function train(epochs) {
  if (state.training || !state.model) return;
  clearMessage();
  const controller = new AbortController();
  const speed = $("speed").value === "max" ? Infinity : number("speed");
  let last = null;
  let paused = false;
  let finished;
  state.training = { controller, done: new Promise((resolve) => { finished = resolve; }) };
  $("play").textContent = "\u275A\u275A pause";
  setStatus("training", "training: waiting for the first epochs");
  try {
    let left = epochs;
    while (left > 0) {
      const began = performance.now();
      const chunk = speed === Infinity ? left : Math.min(left, Math.max(1, Math.round((speed * CALL_MS) / 1000)));
      const reportEvery = speed === Infinity ? Math.max(1, Math.round(chunk / MAX_MODE_REPORTS))
        : Math.max(1, Math.round((chunk * 1000) / CALL_MS / LINES_PER_SECOND));
      const base = state.epochsTrained;
      let done = 0;
      await api.stream(modelPath("/train"), trainBody(chunk, reportEvery, base), (line) => {
        last = line;
        done = line.epoch;
        onProgress(line, base);
      }, controller.signal);
      left -= done;
      if (done < chunk) break; // the server stopped it: the loss target was reached
      const wait = CALL_MS - (performance.now() - began);
      if (left > 0 && wait > 0) await sleep(wait, controller.signal);
    }
    setStatus("idle", last
      ? `trained: epoch ${state.epochsTrained}, loss ${fmt(last.loss)}, version ${last.version}`
      : "trained");
  } catch (error) {
    if (error.name === "AbortError") {
      paused = true;
    } else {
      report(error);
    }
  } finally {
    clearTimeout(state.curveTimer);
    state.curveTimer = null;
    drawCurve($("loss-curve"), state.history);
    $("play").textContent = "\u25B6 play";
    if (paused) {
      try {
        await settle();
      } catch (error) {
        report(error);
      }
    }
    state.training = null;
    finished();
    wantFrame(state.model.version);
  }
}

// After a pause the server may commit the epochs it was running while the cancel reached it:
// read the model until its version stops moving, and show that one.
async function settle() {
  setStatus("training", "pausing");
  const id = state.model.id;
  let seen = -1;
  for (let tries = 0; tries < 20; tries += 1) {
    const model = await api.call("GET", `/api/models/${encodeURIComponent(id)}`);
    if (!state.model || state.model.id !== id) return;
    if (model.version === seen) {
      state.epochsTrained = model.epochs_trained;
      showModel(model);
      break;
    }
    seen = model.version;
    await new Promise((resolve) => { setTimeout(resolve, 250); });
  }
  setStatus("idle", `paused at epoch ${state.epochsTrained}, version ${state.model.version}`);
}

// Pauses a training (the connection closes; the server cancels the call, the model keeps its
// last committed version) and waits until its stream has ended.
async function stopTraining() {
  if (!state.training) return;
  const { controller, done } = state.training;
  controller.abort();
  await done;
}

async function oneStep() {
  await stopTraining();
  clearMessage();
  const row = state.stepRow;
  const result = await api.call("POST", modelPath("/step"), {
    input: state.data.inputs[row], target: state.data.targets[row], learning_rate: number("learning-rate"),
  });
  renderStep(result, state.model, { explain: $("step-explain"), drawing: $("step-drawing"), table: $("step-table") });
  state.model.version = result.version;
  $("model-version").textContent = String(result.version);
  setStatus("idle", `one step on sample ${row + 1}: loss ${fmt(result.loss)}, version ${result.version}`);
  wantFrame(result.version);
}

// The article's 2-4-1 network with its weights, on XOR, with its learning rate and sample.
async function articleNetwork() {
  await stopTraining();
  $("dataset").value = "xor";
  $("hidden-layers").value = "4";
  $("hidden-activation").value = "sigmoid";
  $("output-activation").value = "sigmoid";
  $("loss").value = "mse";
  $("bias").checked = false;
  $("gradient-mode").value = "article";
  $("learning-rate").value = "0.001";
  showDataOptions();
  await loadData();
  chooseStepRow(1); // input (0, 1), target 1
  await createModel(true);
  setStatus("idle", "the article's network: press \"one step\" to follow its math");
}

// -- hovering the plane: every neuron's output for that input ----------------------------------

const hover = { inFlight: false, pending: null, active: false };

async function askActivations(x) {
  if (hover.inFlight) {
    hover.pending = x;
    return;
  }
  hover.inFlight = true;
  try {
    const result = await api.call("GET", modelPath(`/activations?input=${x.join(",")}`));
    if (hover.pending === null && hover.active) {
      state.hover = result;
      drawNetwork($("network"), state.model, result);
      const out = result.layers.at(-1).output;
      $("surface-readout").textContent = `input ${vector(result.input.map((v) => Number(v.toFixed(3))))}: output ${vector(out)}`;
    }
  } catch (error) {
    report(error);
  } finally {
    hover.inFlight = false;
    if (hover.pending !== null) {
      const next = hover.pending;
      hover.pending = null;
      askActivations(next);
    }
  }
}

function pixelOf(event) {
  const box = $("points-layer").getBoundingClientRect();
  return [((event.clientX - box.left) / box.width) * 300, ((event.clientY - box.top) / box.height) * 300];
}

// -- wiring -----------------------------------------------------------------------------------

function guarded(action) {
  return async (...args) => {
    try {
      await action(...args);
    } catch (error) {
      report(error);
    }
  };
}

function wire() {
  $("play").addEventListener("click", guarded(() => (state.training ? stopTraining() : train(number("epochs")))));
  $("one-epoch").addEventListener("click", guarded(async () => {
    await stopTraining();
    await train(1);
  }));
  $("one-step").addEventListener("click", guarded(oneStep));
  $("new-network").addEventListener("click", guarded(() => createModel()));
  $("article").addEventListener("click", guarded(articleNetwork));
  $("regenerate").addEventListener("click", guarded(dataChanged));
  $("dataset").addEventListener("change", guarded(async () => {
    showDataOptions();
    await dataChanged();
  }));
  for (const id of ["points", "noise", "classes", "data-seed", "validation", "target-columns"]) {
    $(id).addEventListener("change", guarded(dataChanged));
  }
  for (const id of ["hidden-layers", "hidden-activation", "output-activation", "loss", "bias", "gradient-mode", "init", "init-seed"]) {
    $(id).addEventListener("change", guarded(() => createModel()));
  }
  $("noise").addEventListener("input", () => { $("noise-value").textContent = $("noise").value; });
  $("validation").addEventListener("input", () => {
    $("validation-value").textContent = `${Math.round(number("validation") * 100)}%`;
  });
  $("step-row").addEventListener("change", () => chooseStepRow(number("step-row") - 1));
  $("models").addEventListener("change", guarded(() => openModel($("models").value)));
  $("delete-model").addEventListener("click", guarded(async () => {
    if (!state.model || !window.confirm(`Delete model ${state.model.id} from the store?`)) return;
    await stopTraining();
    await api.call("DELETE", modelPath(), {});
    tell(`deleted model ${state.model.id}; a new network follows`);
    state.model = null;
    await createModel();
  }));
  const layer = $("points-layer");
  layer.addEventListener("mousemove", (event) => {
    if (!state.plane || !state.model) return;
    hover.active = true;
    const [px, py] = pixelOf(event);
    askActivations(toPlane(state.plane, px, py));
  });
  layer.addEventListener("mouseleave", () => {
    hover.pending = null;
    hover.active = false;
    state.hover = null;
    if (state.model) drawNetwork($("network"), state.model, null);
  });
  layer.addEventListener("click", (event) => {
    if (!state.plane) return;
    const [px, py] = pixelOf(event);
    const row = nearestSample(state.data, state.plane, px, py);
    if (row !== null) chooseStepRow(row);
  });
  $("token-form").addEventListener("submit", guarded(async (event) => {
    event.preventDefault();
    api.setToken($("token").value);
    $("token-form").hidden = true;
    clearMessage();
    await connect();
  }));
  // Leaving the page ends its training: the connection closes and the server cancels the call.
  window.addEventListener("pagehide", () => { if (state.training) state.training.controller.abort(); });
}

function offerTrainOptions(options) {
  const optimizer = $("optimizer");
  optimizer.disabled = !options.includes("optimizer");
  optimizer.title = optimizer.disabled ? "this server's Train takes SGD only" : "";
}

async function connect() {
  setStatus("starting", "connecting");
  state.info = await api.call("GET", "/api/info");
  while (state.info.health !== "SERVING") {
    setStatus("starting", `the server is starting (${state.info.health}): compiling its kernels, the first time`);
    await new Promise((resolve) => { setTimeout(resolve, 1000); });
    state.info = await api.call("GET", "/api/info");
  }
  offerTrainOptions(state.info.train_options);
  await refreshModels(); // a server that wants a token says so here (401)
  showDataOptions();
  await loadData();
  const wanted = new URLSearchParams(location.hash.slice(1)).get("model");
  if (wanted) {
    try {
      await openModel(wanted);
    } catch (error) {
      if (!(error instanceof api.ApiError && error.status === 404)) throw error;
      await createModel();
    }
  } else {
    await createModel();
  }
  setStatus("idle", "ready: press play to train");
}

wire();
drawCurve($("loss-curve"), state.history);
guarded(connect)();
