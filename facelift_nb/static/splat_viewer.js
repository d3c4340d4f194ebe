// The front end of facelift_nb's SplatViewer: shows the frames Python renders and sends the camera back.
// Drag: orbit. Shift-drag: pan. Wheel: zoom. One camera message is in flight at a time (the latest wins).
const DEG_PER_PX = 0.4;

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
  function current() { return pending || { ...model.get("camera") }; }

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
  const stop = () => { drag = null; box.style.cursor = "grab"; };
  box.addEventListener("pointerup", stop);
  box.addEventListener("pointercancel", stop);
  box.addEventListener("wheel", (e) => {
    e.preventDefault();
    const cam = current();
    cam.radius = Math.max(0.05, cam.radius * Math.exp(e.deltaY * 0.001));
    send(cam);
  }, { passive: false });

  const showInfo = () => { info.textContent = model.get("info"); };
  model.on("change:frame", show);
  model.on("change:rendered", onFrame);
  model.on("change:info", showInfo);
  show();
  showInfo();
  box.dataset.camera = JSON.stringify(model.get("camera"));
  box.dataset.rendered = String(model.get("rendered"));
  return () => { if (url) URL.revokeObjectURL(url); clearTimeout(timer); };
}

export default { render };
