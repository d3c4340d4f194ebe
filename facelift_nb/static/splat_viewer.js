// The front end of facelift_nb's SplatViewer (after splat_webgl.js, in one module). Two modes:
// "webgl": the splats are drawn here (SplatGL) at every camera change, and the camera is reported back;
// "frames": the frames Python renders are shown, and the camera is sent back (one message in flight, the latest wins).
// Without WebGL2 a "webgl" viewer reports it and falls back to "frames"; an "auto" viewer takes "webgl" on a GPU and
// "frames" where WebGL is drawn in software (SwiftShader, llvmpipe: measured slower than the kernel's CPU renderer).
// Drag: orbit. Shift-drag: pan. Wheel: zoom.
const DEG_PER_PX = 0.4;

function floats(view) {  // a Bytes trait (DataView) as an aligned Float32Array
  if (!view || !view.byteLength) return new Float32Array(0);
  return new Float32Array(view.buffer.slice(view.byteOffset, view.byteOffset + view.byteLength));
}

function render({ model, el }) {
  const box = document.createElement("div");
  box.className = "facelift-splat-viewer";
  box.style.cssText = "position:relative;display:inline-block;cursor:grab;user-select:none;touch-action:none";
  const img = document.createElement("img");
  img.draggable = false;
  img.style.cssText = "display:block";
  const info = document.createElement("div");
  info.className = "facelift-splat-info";
  info.style.cssText = "font:11px sans-serif;color:#555;padding:1px 4px";  // below the frame, never over it
  box.append(img, info);
  el.append(box);
  let url = null, inflight = false, pending = null, timer = null, drag = null, frames = 0;
  let gl = null, view = { ...model.get("camera") }, raf = 0, synced = 0;
  const asked = model.get("mode");
  if (asked === "webgl" || asked === "auto") {
    const canvas = document.createElement("canvas");
    canvas.width = model.get("width");
    canvas.height = model.get("height");
    canvas.style.cssText = "display:block";
    let why = "";
    try {
      gl = new SplatGL(canvas);
      if (asked === "auto" && gl.software) { why = `software WebGL (${gl.renderer}): the kernel renders faster`; gl = null; }
    } catch (e) { why = String(e); gl = null; }  // no WebGL2
    if (gl) {
      img.replaceWith(canvas);
      box.dataset.mode = "webgl";
      if (asked === "auto") { model.set("mode", "webgl"); model.save_changes(); }
    } else {  // Python renders the frames instead
      box.dataset.glError = why;
      model.set("gl_error", why);
      model.set("mode", "frames");
      model.save_changes();
    }
  }
  if (!gl) box.dataset.mode = "frames";
  function glSplats() { gl.setSplats(floats(model.get("splats")), floats(model.get("sh")), model.get("sh_k")); }
  function glDraw() {
    raf = 0;
    const cam = gl.draw(view, model.get("bg"));
    model.set("basis", { right: cam.rows[0], down: cam.rows[1] });
    box.dataset.camera = JSON.stringify(view);
    frames += 1;
    box.dataset.frames = String(frames);
    box.dataset.rendered = String(frames);
    const now = performance.now();
    if (now - synced > 100 || !drag) { synced = now; model.set("camera", { ...view }); model.save_changes(); }
  }
  function redraw() { if (!raf) raf = requestAnimationFrame(glDraw); }

  function show() {
    const bytes = model.get("frame");
    if (!bytes || !bytes.byteLength) return;
    const blob = new Blob([bytes], { type: `image/${model.get("fmt")}` });
    if (url) URL.revokeObjectURL(url);
    url = URL.createObjectURL(blob);
    img.src = url;
    img.width = model.get("width");
    img.height = model.get("height");
    frames += 1;
    box.dataset.frames = String(frames);
  }
  function send(cam) {
    if (gl) { view = cam; redraw(); return; }
    if (inflight) { pending = cam; return; }
    inflight = true;
    pending = null;
    model.set("camera", cam);
    model.save_changes();
    clearTimeout(timer);
    timer = setTimeout(() => { inflight = false; if (pending) send(pending); }, 3000);  // never wait forever
  }
  function onFrame() {  // a frame arrived: it was rendered at the camera last sent
    box.dataset.camera = JSON.stringify(model.get("camera"));
    box.dataset.rendered = String(model.get("rendered"));
    inflight = false;
    clearTimeout(timer);
    if (pending) send(pending);
  }
  function current() { return gl ? { ...view, target: [...view.target] } : pending || { ...model.get("camera") }; }

  box.addEventListener("pointerdown", (e) => {
    drag = { x: e.clientX, y: e.clientY, pan: e.shiftKey };
    box.setPointerCapture(e.pointerId);
    box.style.cursor = "grabbing";
  });
  box.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    drag.x = e.clientX;
    drag.y = e.clientY;
    const cam = current();
    if (drag.pan || e.shiftKey) {
      const b = model.get("basis"), h = model.get("height");
      const k = (2 * cam.radius * Math.tan((cam.fov_deg * Math.PI) / 360)) / h;  // world units per pixel
      cam.target = cam.target.map((t, i) => t - k * (dx * b.right[i] + dy * b.down[i]));
    } else {
      cam.azimuth_deg = (cam.azimuth_deg - dx * DEG_PER_PX) % 360;
      cam.elevation_deg = Math.max(-89, Math.min(89, cam.elevation_deg + dy * DEG_PER_PX));
    }
    send(cam);
  });
  const stop = () => { drag = null; box.style.cursor = "grab"; if (gl) redraw(); };  // the last camera is reported
  box.addEventListener("pointerup", stop);
  box.addEventListener("pointercancel", stop);
  box.addEventListener("wheel", (e) => {
    e.preventDefault();
    const cam = current();
    cam.radius = Math.max(0.05, cam.radius * Math.exp(e.deltaY * 0.001));
    send(cam);
  }, { passive: false });

  const showInfo = () => { info.textContent = model.get("info"); };
  model.on("change:info", showInfo);
  showInfo();
  let asks = 0;  // nothing to show yet: ask the kernel, again every 3 s until something arrives
  const ask = () => {
    if ((model.get(gl ? "splats" : "frame") || {}).byteLength || asks++ >= 20) return;
    model.send({ request: "draw" });
    setTimeout(ask, 3000);
  };
  ask();
  if (gl) {
    model.on("change:splats", () => { glSplats(); redraw(); });
    model.on("change:lines", () => { gl.setLines(floats(model.get("lines"))); redraw(); });
    model.on("change:bg", redraw);
    glSplats();
    gl.setLines(floats(model.get("lines")));
    redraw();
    return () => { if (raf) cancelAnimationFrame(raf); };
  }
  model.on("change:frame", show);
  model.on("change:rendered", onFrame);
  show();
  box.dataset.camera = JSON.stringify(model.get("camera"));
  box.dataset.rendered = String(model.get("rendered"));
  return () => { if (url) URL.revokeObjectURL(url); clearTimeout(timer); };
}

export default { render };
