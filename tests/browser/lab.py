"""Start a headless JupyterLab on 127.0.0.1 serving one notebook of given cells (for the browser tests)."""
import secrets
import socket
import subprocess
import sys
import time

import nbformat
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(root, cells: list[str], name: str):
    "Write `cells` as notebook `name` in `root` and serve it; yield `(url, token)`, then stop the server."
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / name)
    port, token = free_port(), secrets.token_hex(16)
    lab_settings = root / "settings" / "@jupyterlab"  # render every cell (no windowing) and no news pop-up
    (lab_settings / "notebook-extension").mkdir(parents=True)
    (lab_settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    (lab_settings / "apputils-extension").mkdir(parents=True)
    (lab_settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false", "checkForUpdates": false}')
    log = open(root / "lab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                             f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
                             "--ServerApp.open_browser=False", "--LabApp.news_url=",
                             "--ServerApp.disable_check_xsrf=True", "--allow-root",
                             f"--LabApp.user_settings_dir={root / 'settings'}",
                             f"--LabApp.workspaces_dir={root / 'workspaces'}"],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1): break
        except OSError: time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"JupyterLab did not start: {(root / 'lab.log').read_text()[-2000:]}")
    yield f"http://127.0.0.1:{port}", token
    proc.terminate()
    try: proc.wait(15)
    except subprocess.TimeoutExpired: proc.kill()


def artifacts_dir():
    "Where the browser tests save screenshots and measured figures: `$FACELIFT_NB_ARTIFACTS/browser` or test-artifacts."
    import os
    from pathlib import Path
    art = Path(os.environ.get("FACELIFT_NB_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
    (art / "browser").mkdir(parents=True, exist_ok=True)
    return art / "browser"


def run_notebook(p, chromium: str, url: str, token: str, name: str, ready: str, errors: list):
    """Open notebook `name` in headless chromium (page errors go to `errors`), run all its cells and wait until the
    JavaScript expression `ready` holds; returns `(browser, page)`."""
    browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/lab/tree/{name}?token={token}&reset", timeout=120_000)
    page.wait_for_selector(".jp-Notebook", timeout=120_000)
    time.sleep(3)
    page.click("text=Run", timeout=30_000)
    page.click("text=Run All Cells", timeout=30_000)
    page.wait_for_function(ready, polling=500, timeout=240_000)
    return browser, page
