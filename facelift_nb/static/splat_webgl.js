// WebGL2 splat renderer of facelift_nb's SplatViewer: the Gaussians drawn in the browser, as `render` draws them.
// Each Gaussian is an instanced quad: its 3-D covariance is projected with the same EWA Jacobian as the CPU
// renderer (frustum clamp, +0.3 px² dilation, alpha capped at 0.99 and dropped below 1/255), and the quads are
// blended back to front (premultiplied "over"), sorted by view depth on every camera change. Overlay lines are drawn
// first with depth writes, so splats in front of a line cover it and splats behind it do not.
// No network access: everything here ships with the package. The rasteriser's constants (NEAR, DILATION, ALPHA_MIN,
// ALPHA_MAX, FRUSTUM_CLAMP) are not repeated here: facelift_nb.widgets prepends them from facelift_nb.render_kernels.
const glf = (x) => Number(x).toFixed(9);  // a GLSL float literal
const Z_NEAR = 0.01, Z_FAR = 1000.0;  // the depth range of the overlay test
const SH_C0 = 0.28209479177387814, SH_C1 = 0.4886025119029199;
const SH_C2 = [1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396];
const SH_C3 = [-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
  1.445305721320277, -0.5900435899266435];

const SPLAT_VS = `#version 300 es
precision highp float;
in vec2 corner;
in vec3 mean;
in vec3 covA;  // xx xy xz
in vec3 covB;  // yy yz zz
in vec4 rgba;
uniform mat4 w2c;
uniform vec4 K;  // fx fy cx cy
uniform vec2 size;  // W H
uniform vec2 zab;  // z_ndc = zab.x + zab.y / z (the overlay lines' projection)
flat out vec4 vColor;
flat out vec3 vConic;
flat out vec2 vCenter;
void main() {
  vec4 t = w2c * vec4(mean, 1.0);
  float z = t.z;
  vColor = rgba;
  if (z <= ${glf(NEAR)} || rgba.a <= ${glf(ALPHA_MIN)}) { gl_Position = vec4(0.0, 0.0, 2.0, 1.0); return; }
  vec2 lim = ${glf(FRUSTUM_CLAMP)} * size / (2.0 * K.xy);
  float tx = z * clamp(t.x / z, -lim.x, lim.x), ty = z * clamp(t.y / z, -lim.y, lim.y);
  mat3 J = mat3(K.x / z, 0.0, 0.0, 0.0, K.y / z, 0.0, -K.x * tx / (z * z), -K.y * ty / (z * z), 0.0);
  mat3 T = J * mat3(w2c);
  mat3 S = mat3(covA.x, covA.y, covA.z, covA.y, covB.x, covB.y, covA.z, covB.y, covB.z);
  mat3 C = T * S * transpose(T);
  float a = C[0][0] + ${glf(DILATION)}, b = C[1][0], c = C[1][1] + ${glf(DILATION)};
  float det = a * c - b * b;
  if (det <= 0.0) { gl_Position = vec4(0.0, 0.0, 2.0, 1.0); return; }
  vConic = vec3(c, -b, a) / det;
  float mid = 0.5 * (a + c);
  float lam = mid + sqrt(max(0.1, mid * mid - det));
  float k2 = 2.0 * log(rgba.a / ${glf(ALPHA_MIN)});  // alpha >= ALPHA_MIN only within this squared Mahalanobis radius
  float r = ceil(sqrt(k2 * lam)) + 1.0;
  vCenter = vec2(K.x * t.x / z + K.z, K.y * t.y / z + K.w);
  vec2 px = vCenter + corner * r;
  gl_Position = vec4(2.0 * px.x / size.x - 1.0, 1.0 - 2.0 * px.y / size.y, zab.x + zab.y / z, 1.0);
}`;

const SPLAT_FS = `#version 300 es
precision highp float;
flat in vec4 vColor;
flat in vec3 vConic;
flat in vec2 vCenter;
uniform vec2 size;
out vec4 fragColor;
void main() {
  vec2 d = vCenter - vec2(gl_FragCoord.x, size.y - gl_FragCoord.y);  // pixel centres at +0.5, y down
  float power = -0.5 * (vConic.x * d.x * d.x + vConic.z * d.y * d.y) - vConic.y * d.x * d.y;
  if (power > 0.0) discard;
  float alpha = min(${glf(ALPHA_MAX)}, vColor.a * exp(power));
  if (alpha < ${glf(ALPHA_MIN)}) discard;
  fragColor = vec4(vColor.rgb * alpha, alpha);
}`;

const LINE_VS = `#version 300 es
precision highp float;
in vec3 pos;
in vec3 color;
uniform mat4 w2c;
uniform mat4 proj;
out vec3 vColor;
void main() { vColor = color; gl_Position = proj * (w2c * vec4(pos, 1.0)); }`;

const LINE_FS = `#version 300 es
precision highp float;
in vec3 vColor;
out vec4 fragColor;
void main() { fragColor = vec4(vColor, 1.0); }`;

function program(gl, vs, fs) {
  const p = gl.createProgram();
  for (const [type, src] of [[gl.VERTEX_SHADER, vs], [gl.FRAGMENT_SHADER, fs]]) {
    const s = gl.createShader(type);
    gl.shaderSource(s, src);
    gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error("shader: " + gl.getShaderInfoLog(s));
    gl.attachShader(p, s);
  }
  gl.linkProgram(p);
  if (!gl.getProgramParameter(p, gl.LINK_STATUS)) throw new Error("program: " + gl.getProgramInfoLog(p));
  return p;
}

// The camera of an orbit view, as `facelift_nb.widgets.view_camera` makes it: OpenCV w2c rows and K.
export function viewCamera(view, W, H) {
  const az = (view.azimuth_deg * Math.PI) / 180, el = (view.elevation_deg * Math.PI) / 180;
  const front = [0, -1, 0], right = [-1, 0, 0], up = [0, 0, 1];  // FaceLift's world: +Z up, the subject faces -Y
  const dir = [0, 1, 2].map((i) => Math.cos(el) * (Math.cos(az) * front[i] + Math.sin(az) * right[i])
    + Math.sin(el) * up[i]);
  const tgt = view.target.map(Number);
  const eye = tgt.map((t, i) => t + view.radius * dir[i]);
  const norm = (v) => { const n = Math.hypot(...v); return v.map((x) => x / n); };
  const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
  const fwd = norm(tgt.map((t, i) => t - eye[i]));
  const rc = norm(cross(fwd, up));
  const down = cross(rc, fwd).map((x) => -x);
  const rows = [rc, down, fwd];
  const trans = rows.map((r) => -(r[0] * eye[0] + r[1] * eye[1] + r[2] * eye[2]));
  const f = W / (2 * Math.tan((view.fov_deg * Math.PI) / 360));
  return { rows, trans, eye, K: [f, f, W / 2, H / 2] };
}

export class SplatGL {
  constructor(canvas) {
    const gl = canvas.getContext("webgl2", { antialias: false, premultipliedAlpha: true, preserveDrawingBuffer: true });
    if (!gl) throw new Error("WebGL2 is not available in this browser");
    const info = gl.getExtension("WEBGL_debug_renderer_info");
    this.renderer = String(gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER));
    this.software = /swiftshader|llvmpipe|softpipe|software/i.test(this.renderer);
    this.gl = gl;
    this.canvas = canvas;
    this.splat = program(gl, SPLAT_VS, SPLAT_FS);
    this.line = program(gl, LINE_VS, LINE_FS);
    this.n = 0;
    this.lineCount = 0;
    this.quad = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, this.quad);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
    this.inst = gl.createBuffer();
    this.lines = gl.createBuffer();
    this.vao = gl.createVertexArray();
    gl.bindVertexArray(this.vao);
    const loc = (name) => gl.getAttribLocation(this.splat, name);
    gl.bindBuffer(gl.ARRAY_BUFFER, this.quad);
    gl.enableVertexAttribArray(loc("corner"));
    gl.vertexAttribPointer(loc("corner"), 2, gl.FLOAT, false, 0, 0);
    gl.bindBuffer(gl.ARRAY_BUFFER, this.inst);
    let off = 0;
    for (const [name, k] of [["mean", 3], ["covA", 3], ["covB", 3], ["rgba", 4]]) {
      gl.enableVertexAttribArray(loc(name));
      gl.vertexAttribPointer(loc(name), k, gl.FLOAT, false, 13 * 4, off * 4);
      gl.vertexAttribDivisor(loc(name), 1);
      off += k;
    }
    this.lineVao = gl.createVertexArray();
    gl.bindVertexArray(this.lineVao);
    gl.bindBuffer(gl.ARRAY_BUFFER, this.lines);
    for (const [name, k, o] of [["pos", 3, 0], ["color", 3, 3]]) {
      const l = gl.getAttribLocation(this.line, name);
      gl.enableVertexAttribArray(l);
      gl.vertexAttribPointer(l, k, gl.FLOAT, false, 6 * 4, o * 4);
    }
    gl.bindVertexArray(null);
  }

  // data: Float32Array [N, 10] (mean 3, covariance xx xy xz yy yz zz, opacity); sh: Float32Array [N, K, 3]
  setSplats(data, sh, k) {
    this.n = data.length / 10;
    this.data = data;
    this.sh = sh;
    this.k = k;
    this.sorted = new Float32Array(this.n * 13);
    this.depth = new Float32Array(this.n);
    this.order = new Uint32Array(this.n);
    this.counts = new Uint32Array(65537);
    this.rgb = new Float32Array(this.n * 3);
    if (k === 1) this.colors(null);
  }

  setLines(vertices) {  // Float32Array [2M, 6]: position, colour in [0, 1]
    const gl = this.gl;
    gl.bindBuffer(gl.ARRAY_BUFFER, this.lines);
    gl.bufferData(gl.ARRAY_BUFFER, vertices, gl.STATIC_DRAW);
    this.lineCount = vertices.length / 6;
  }

  colors(eye) {  // max(0, SH · basis(direction camera → centre) + 0.5), as `sh_to_rgb`
    const { n, k, sh, data, rgb } = this;
    for (let i = 0; i < n; i++) {
      const s = i * k * 3;
      let x = 0, y = 0, z = 0;
      if (k > 1) {
        x = data[i * 10] - eye[0]; y = data[i * 10 + 1] - eye[1]; z = data[i * 10 + 2] - eye[2];
        const m = Math.hypot(x, y, z) || 1;
        x /= m; y /= m; z /= m;
      }
      for (let c = 0; c < 3; c++) {
        let v = SH_C0 * sh[s + c];
        if (k > 1) v += -SH_C1 * y * sh[s + 3 + c] + SH_C1 * z * sh[s + 6 + c] - SH_C1 * x * sh[s + 9 + c];
        if (k > 4) {
          const xx = x * x, yy = y * y, zz = z * z;
          v += SH_C2[0] * x * y * sh[s + 12 + c] + SH_C2[1] * y * z * sh[s + 15 + c]
            + SH_C2[2] * (2 * zz - xx - yy) * sh[s + 18 + c] + SH_C2[3] * x * z * sh[s + 21 + c]
            + SH_C2[4] * (xx - yy) * sh[s + 24 + c];
          if (k > 9) {
            v += SH_C3[0] * y * (3 * xx - yy) * sh[s + 27 + c] + SH_C3[1] * x * y * z * sh[s + 30 + c]
              + SH_C3[2] * y * (4 * zz - xx - yy) * sh[s + 33 + c] + SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[s + 36 + c]
              + SH_C3[4] * x * (4 * zz - xx - yy) * sh[s + 39 + c] + SH_C3[5] * z * (xx - yy) * sh[s + 42 + c]
              + SH_C3[6] * x * (xx - 3 * yy) * sh[s + 45 + c];
          }
        }
        rgb[i * 3 + c] = Math.max(0, v + 0.5);
      }
    }
  }

  sort(cam) {  // back to front by view depth: a 16-bit counting sort of the depths
    const { n, data, depth, order, counts, sorted, rgb } = this;
    const r = cam.rows[2], t = cam.trans[2];
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < n; i++) {
      const z = r[0] * data[i * 10] + r[1] * data[i * 10 + 1] + r[2] * data[i * 10 + 2] + t;
      depth[i] = z;
      if (z < lo) lo = z;
      if (z > hi) hi = z;
    }
    counts.fill(0);
    const scale = hi > lo ? 65535 / (hi - lo) : 0;
    for (let i = 0; i < n; i++) counts[65535 - Math.floor((depth[i] - lo) * scale) + 1]++;
    for (let b = 1; b < 65537; b++) counts[b] += counts[b - 1];
    for (let i = 0; i < n; i++) order[counts[65535 - Math.floor((depth[i] - lo) * scale)]++] = i;
    for (let j = 0; j < n; j++) {
      const i = order[j], o = j * 13, s = i * 10;
      for (let q = 0; q < 9; q++) sorted[o + q] = data[s + q];
      sorted[o + 9] = rgb[i * 3]; sorted[o + 10] = rgb[i * 3 + 1]; sorted[o + 11] = rgb[i * 3 + 2];
      sorted[o + 12] = data[s + 9];
    }
  }

  draw(view, bg) {
    const gl = this.gl, W = this.canvas.width, H = this.canvas.height;
    const cam = viewCamera(view, W, H);
    if (this.k > 1) this.colors(cam.eye);
    this.sort(cam);
    const [R0, R1, R2] = cam.rows, T = cam.trans;
    const w2c = new Float32Array([R0[0], R1[0], R2[0], 0, R0[1], R1[1], R2[1], 0, R0[2], R1[2], R2[2], 0,
      T[0], T[1], T[2], 1]);  // column-major
    const [fx, fy, cx, cy] = cam.K;
    const A = (Z_FAR + Z_NEAR) / (Z_FAR - Z_NEAR), B = (-2 * Z_FAR * Z_NEAR) / (Z_FAR - Z_NEAR);
    const proj = new Float32Array([2 * fx / W, 0, 0, 0, 0, -2 * fy / H, 0, 0, 2 * cx / W - 1, 1 - 2 * cy / H, A, 1,
      0, 0, B, 0]);  // x, y to NDC through K; z_ndc = A + B / z; w = z
    gl.viewport(0, 0, W, H);
    gl.clearColor(bg[0], bg[1], bg[2], 1);
    gl.clearDepth(1);
    gl.depthMask(true);  // a masked depth buffer is not cleared: the last frame's lines would hide splats
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    gl.enable(gl.DEPTH_TEST);
    if (this.lineCount) {
      gl.useProgram(this.line);
      gl.disable(gl.BLEND);
      gl.depthMask(true);
      gl.depthFunc(gl.LESS);
      gl.uniformMatrix4fv(gl.getUniformLocation(this.line, "w2c"), false, w2c);
      gl.uniformMatrix4fv(gl.getUniformLocation(this.line, "proj"), false, proj);
      gl.bindVertexArray(this.lineVao);
      gl.drawArrays(gl.LINES, 0, this.lineCount);
    }
    if (this.n) {
      gl.useProgram(this.splat);
      gl.enable(gl.BLEND);
      gl.blendFunc(gl.ONE, gl.ONE_MINUS_SRC_ALPHA);
      gl.depthMask(false);
      gl.depthFunc(gl.LEQUAL);
      const u = (name) => gl.getUniformLocation(this.splat, name);
      gl.uniformMatrix4fv(u("w2c"), false, w2c);
      gl.uniform4f(u("K"), fx, fy, cx, cy);
      gl.uniform2f(u("size"), W, H);
      gl.uniform2f(u("zab"), A, B);
      gl.bindBuffer(gl.ARRAY_BUFFER, this.inst);
      gl.bufferData(gl.ARRAY_BUFFER, this.sorted, gl.DYNAMIC_DRAW);
      gl.bindVertexArray(this.vao);
      gl.drawArraysInstanced(gl.TRIANGLE_STRIP, 0, 4, this.n);
    }
    gl.bindVertexArray(null);
    return cam;
  }
}
