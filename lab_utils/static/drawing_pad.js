// The drawing pad's canvas: an anywidget front end (no npm, no build step).
//
// Used by lab_utils/drawing_pad.py (PadCanvas, notebook 09) and meant to be
// reused as is by a static web page: it only needs an anywidget-style `model`
// (get, set, save_changes, on, off) and an element `el` to draw into.
//
// Model fields:
//   size       (int)    canvas size in pixels (280)
//   pen_width  (float)  pen width in canvas pixels
//   png        (string) the whole canvas as a PNG data URL after the latest
//                       finished stroke, "" when empty; Python may set it too
//   strokes    (int)    strokes since the last Clear
//   sent       (int)    drawings sent (strokes and Clears), counted here
//   answered   (int)    the latest `sent` that Python acknowledged
//   answer_timeout_ms (int) how long to wait for that acknowledgement
//   send_png   (bool)   optional, true if absent; false for a page that reads the
//                       canvas's pixels itself: after a stroke `png` is then the
//                       string "canvas" (non-empty: there is a drawing), no PNG is made
//
// Strokes are drawn here, with no round trip per mouse move; when a stroke ends
// the whole canvas goes to Python once. If Python does not acknowledge it in
// time (the kernel was restarted, so the pad's Python object is gone), the pad
// says so instead of silently doing nothing.

export const NO_ANSWER_MESSAGE =
  "Python is not answering this pad. If the kernel was restarted, " +
  "run the notebook from the top (Run \u25b8 Run All Cells). " +
  "If a cell is still running, wait for it.";

function render({ model, el }) {
  const size = model.get("size");
  const root = document.createElement("div");
  root.className = "cvae-pad";
  const canvas = document.createElement("canvas");
  canvas.width = size;
  canvas.height = size;
  canvas.className = "cvae-pad-canvas";
  // Its pixels are read after every stroke (the PNG sent to Python, the page's own
  // update): a canvas kept in CPU memory answers that without a GPU readback.
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const clearButton = document.createElement("button");
  clearButton.textContent = "Clear";
  clearButton.className = "cvae-pad-clear jupyter-button";
  const status = document.createElement("div");  // empty (hidden) unless Python is silent
  status.className = "cvae-pad-status";
  status.setAttribute("role", "status");
  root.append(canvas, clearButton, status);
  el.append(root);

  let lastSent = model.get("png");   // the canvas as Python last saw it
  let pointer = null;                // id of the pointer drawing now
  let last = null;                   // previous point of the stroke
  let waiting = null;                // timer while a drawing waits for Python's answer

  function blank() {
    ctx.fillStyle = "black";
    ctx.fillRect(0, 0, size, size);
  }
  function paint(url) {  // an image from Python (pad.draw): show it
    blank();
    if (!url) return;
    const img = new Image();
    img.onload = () => ctx.drawImage(img, 0, 0, size, size);
    img.src = url;
  }
  function where(e) {  // CSS pixels -> canvas pixels
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * size / r.width, (e.clientY - r.top) * size / r.height];
  }
  function segment(a, b) {
    ctx.strokeStyle = "white";
    ctx.lineWidth = model.get("pen_width");
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(a[0], a[1]);
    ctx.lineTo(b[0], b[1]);
    ctx.stroke();
  }
  function silent() {  // no live Python side: say what to do
    clearTimeout(waiting);
    waiting = null;
    status.textContent = NO_ANSWER_MESSAGE;
  }
  function onAnswered() {  // Python acknowledged a drawing: it is alive
    if (model.get("answered") >= model.get("sent")) {
      clearTimeout(waiting);
      waiting = null;
      status.textContent = "";
    }
  }
  function save(fields) {  // send to Python, then expect its answer
    for (const [key, value] of Object.entries(fields)) model.set(key, value);
    model.set("sent", model.get("sent") + 1);
    try {
      model.save_changes();
    } catch (err) {  // the kernel connection is gone altogether
      console.warn("cvae drawing pad: could not send the drawing", err);
      silent();
      return;
    }
    clearTimeout(waiting);
    waiting = setTimeout(silent, model.get("answer_timeout_ms"));
  }
  function send() {  // once per finished stroke: the whole canvas as a PNG
    lastSent = model.get("send_png") === false ? "canvas" : canvas.toDataURL("image/png");
    save({ png: lastSent, strokes: model.get("strokes") + 1 });
  }

  canvas.addEventListener("pointerdown", (e) => {
    if (pointer !== null || (e.pointerType === "mouse" && e.button !== 0)) return;
    pointer = e.pointerId;
    canvas.setPointerCapture(e.pointerId);
    last = where(e);
    segment(last, last);  // a dot
    e.preventDefault();
  });
  canvas.addEventListener("pointermove", (e) => {
    if (e.pointerId !== pointer) return;
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
    for (const ev of (events.length ? events : [e])) {
      const p = where(ev);
      segment(last, p);
      last = p;
    }
    e.preventDefault();
  });
  const finish = (e) => {
    if (e.pointerId !== pointer) return;
    pointer = null;
    send();
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);
  canvas.addEventListener("lostpointercapture", finish);

  clearButton.addEventListener("click", () => {
    blank();
    lastSent = "";
    save({ png: "", strokes: 0 });
  });
  // Python changed the canvas (pad.clear() or pad.draw(...)): show it.
  const onPng = () => {
    const url = model.get("png");
    if (url !== lastSent) {
      lastSent = url;
      paint(url);
    }
  };
  model.on("change:png", onPng);
  model.on("change:answered", onAnswered);
  paint(lastSent);
  return () => {
    clearTimeout(waiting);
    model.off("change:png", onPng);
    model.off("change:answered", onAnswered);
  };
}
export default { render };
