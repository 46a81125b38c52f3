"""End-to-end fixtures: a real JupyterLab server driven by headless Chromium.

Use them from any test in ``tests/e2e/`` (mark it ``@pytest.mark.e2e``)::

    @pytest.mark.e2e
    def test_something(lab):
        lab.open_notebook("notebooks/06_exploring.ipynb")
        lab.run_all_cells()
        image = lab.wait_for_widget("img.cvae-explorer-image")
        png = lab.image_bytes(image)          # the PNG bytes the browser shows

Fixtures
--------
``jupyter_server`` (session)
    JupyterLab on a free localhost port, ``root_dir`` at the repository, with a
    token, throw-away settings/workspaces/runtime/config/checkpoint directories
    (autosave and news checks off, so running a notebook never writes into the
    repository), and the caller's environment (``CVAE_LAB_DATA`` included) passed on
    to the kernels. At the end of the session it shuts the server down and
    kills every process it started, kernels included. A :class:`JupyterServer`.
``browser`` (session)
    Headless Chromium (``/usr/bin/chromium``, or ``$CVAE_LAB_CHROMIUM``) through
    Playwright. Skips when Chromium or Playwright is missing, unless
    ``CVAE_LAB_REQUIRE_E2E=1`` (``.ci/run`` sets it): then it fails.
``lab`` (per test)
    A fresh browser page on the server, wrapped in a :class:`LabDriver`. When
    the test fails, a screenshot and the server log go to
    ``tests/e2e/artifacts/``. Afterwards the test's kernels are shut down.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = os.environ.get("CVAE_LAB_CHROMIUM", "/usr/bin/chromium")
REQUIRE_ENV = "CVAE_LAB_REQUIRE_E2E"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
SERVER_START_TIMEOUT = 90   # s; JupyterLab takes 5-30 s on a busy 2-core machine
RUN_ALL_TIMEOUT = 180       # s; a notebook's cells, kernel start included

# JupyterLab settings for the throw-away user settings directory.
LAB_SETTINGS = {
    # Never write the opened notebook back into the repository.
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    # No "would you like to receive news?" toast over the notebook (and no network).
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False,
    },
    # Every cell in the DOM, even off screen, so the tests can see all prompts; and
    # start the notebook's kernel without a "Select Kernel" dialog (which a slow
    # kernelspec request on a busy machine otherwise brings up).
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "windowingMode": "none", "autoStartDefaultKernel": True,
    },
}


def _unavailable(reason: str):
    """Skip the e2e tests with ``reason``, or fail when they are required (CI)."""
    if os.environ.get(REQUIRE_ENV, "").strip() in ("1", "true", "yes"):
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: the browser tests must run here)", pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    """A localhost port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (Linux), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()  # [state, ppid, ..., starttime at 19, ...]


def _descendants(root: int) -> list[tuple[int, str]]:
    """(pid, start time) of every process below ``root``; empty where there is no /proc."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _proc_stat(int(entry.name))
        if fields:
            children.setdefault(int(fields[1]), []).append((int(entry.name), fields[19]))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def _alive(pid: int, start: str) -> bool:
    """Still the same running process (not exited, not a zombie, pid not reused)."""
    fields = _proc_stat(pid)
    return bool(fields) and fields[19] == start and fields[0] != "Z"


def _terminate(processes: list[tuple[int, str]], grace: float = 5) -> None:
    """SIGTERM the processes still alive, then SIGKILL whatever outlives ``grace``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = [(pid, start) for pid, start in processes if _alive(pid, start)]
        for pid, _ in left:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = [(pid, start) for pid, start in left if _alive(pid, start)]
        if not left:
            return


class JupyterServer:
    """A JupyterLab server process we own, and the way to talk to it."""

    def __init__(self, workdir: Path, env: dict | None = None):
        self.workdir = Path(workdir)
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "jupyter.log"
        self.env = dict(os.environ if env is None else env)
        self.proc: subprocess.Popen | None = None
        self._log = None

    # ----- life cycle -------------------------------------------------------------
    def _prepare_dirs(self) -> dict:
        dirs = {name: self.workdir / name for name in
                ("settings", "workspaces", "runtime", "config", "ipython", "checkpoints")}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        for rel, values in LAB_SETTINGS.items():
            path = dirs["settings"] / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        return dirs

    def command(self, dirs: dict) -> list[str]:
        cmd = [
            sys.executable, "-m", "jupyterlab", "--no-browser",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={REPO}",
            f"--LabApp.user_settings_dir={dirs['settings']}",
            f"--LabApp.workspaces_dir={dirs['workspaces']}",
            # Opening a notebook saves a checkpoint copy: keep it out of the repository.
            f"--FileCheckpoints.checkpoint_dir={dirs['checkpoints']}",
            "--ServerApp.open_browser=False",
            # window.jupyterapp, as JupyterLab's own UI tests (Galata) use: lets us
            # ask whether the notebook is loaded and its kernel connected.
            "--LabApp.expose_app_in_browser=True",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        return cmd

    def start(self) -> "JupyterServer":
        dirs = self._prepare_dirs()
        env = dict(self.env)
        env.update(
            JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),   # connection files
            JUPYTER_CONFIG_DIR=str(dirs["config"]),     # ignore the user's ~/.jupyter
            IPYTHONDIR=str(dirs["ipython"]),            # kernels' history db, profiles
            JUPYTER_PLATFORM_DIRS="1",
            PYTHONUNBUFFERED="1",
        )
        self._log = open(self.log_path, "wb")
        # A new session: the server and its helpers form one process group we can signal.
        self.proc = subprocess.Popen(
            self.command(dirs), cwd=REPO, env=env, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._wait_until_up()
        return self

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"JupyterLab exited with code {self.proc.returncode} while starting; "
                    f"its log ({self.log_path}) ends with:\n{self.log_tail()}"
                )
            try:
                self.api("GET", "/api/status", timeout=2)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(
            f"JupyterLab did not answer on port {self.port} within {SERVER_START_TIMEOUT} s; "
            f"log tail:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Shut the server down, then make sure it and everything it started is gone."""
        if self.proc is None:
            return
        # Kernels run in sessions of their own: signalling the server's process
        # group would miss them, so note every descendant while the tree is intact.
        children = _descendants(self.proc.pid)
        if self.proc.poll() is None:
            try:  # the polite way: the server shuts its kernels down itself
                self.api("POST", "/api/shutdown", timeout=5)
            except Exception:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
                    self.proc.wait(timeout=5)
        self._signal_group(signal.SIGKILL)  # helpers left in the server's group
        _terminate(children)
        if self._log is not None:
            self._log.close()
        self.proc = None

    def _signal_group(self, sig) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    # ----- talking to it ----------------------------------------------------------
    def url(self, path: str = "/lab") -> str:
        """A browser URL on the server, token included (``path`` starts with /)."""
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}{path}{sep}token={self.token}"

    def api(self, method: str, path: str, body: dict | None = None, timeout: float = 10):
        """Call the server's REST API; returns the decoded JSON (or None)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.base_url + path, data=data, method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def shutdown_kernels(self) -> None:
        """Stop every running kernel (between tests, to keep the CPU free)."""
        for kernel in self.api("GET", "/api/kernels") or []:
            try:
                self.api("DELETE", f"/api/kernels/{kernel['id']}", timeout=30)
            except urllib.error.HTTPError:
                pass

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])


class LabDriver:
    """One browser page on JupyterLab, with the few gestures the tests need."""

    def __init__(self, page, server: JupyterServer):
        self.page = page
        self.server = server

    def open_notebook(self, relpath: str, timeout: float = 90):
        """Open ``relpath`` (relative to the repository); return once all its cells
        are on the page and its kernel is idle.

        Waiting for every cell matters: JupyterLab first shows an empty notebook
        and fills it from the file when the server answers; on a busy machine the
        kernel can be idle before that, and a "Run All" sent earlier would run
        the empty notebook, then be replaced by the file's saved outputs.
        """
        path = REPO / relpath
        if not path.is_file():
            raise FileNotFoundError(f"no notebook at {path}")
        n_cells = len(json.loads(path.read_text(encoding="utf-8"))["cells"])
        self.page.goto(self.server.url(f"/lab/tree/{relpath}?reset"), timeout=timeout * 1000)
        self.page.wait_for_function(
            """n => document.querySelectorAll(
                    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell').length === n""",
            arg=n_cells, timeout=timeout * 1000, polling=250,
        )
        self.wait_for_kernel_idle(timeout)
        return self.page

    def wait_for_kernel_idle(self, timeout: float = 90) -> None:
        """Wait until the notebook is loaded and its kernel connected and idle.

        (The toolbar's status can read idle before any kernel is attached; a
        "Run All" then only clears the cells.)

        Should JupyterLab ask which kernel to start, take its proposal (the
        notebook's own kernelspec) and go on waiting.
        """
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the notebook's kernel was not idle within {timeout:.0f} s")
            state = self.page.wait_for_function(
                """() => {
                    const dialog = document.querySelector('.jp-Dialog');
                    if (dialog && dialog.textContent.includes('Select Kernel')) return 'dialog';
                    const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                    if (!panel || !panel.sessionContext || !panel.context) return false;
                    const session = panel.sessionContext.session;
                    const kernel = session && session.kernel;
                    return panel.context.isReady && kernel
                        && kernel.connectionStatus === 'connected'
                        && kernel.status === 'idle' && 'idle';
                }""",
                timeout=left * 1000, polling=250,
            ).json_value()
            if state == "idle":
                return
            self.page.locator(".jp-Dialog button.jp-mod-accept").click()

    def _menu(self, menu: str, item: str) -> None:
        """Click ``menu`` in the menu bar, then its entry ``item``."""
        self.page.locator(".lm-MenuBar-item", has_text=menu).first.click()
        self.page.locator(".lm-Menu-item:visible", has_text=item).first.click()

    def run_all_cells(self, timeout: float = RUN_ALL_TIMEOUT) -> None:
        """Clear the saved outputs, run every cell (menu Run > Run All Cells), wait.

        Done means: every code cell shows an execution number and the kernel is
        idle. Clearing first makes that unambiguous (a saved notebook already
        shows numbers). A cell that raises fails the test with its traceback.
        """
        self._menu("Edit", "Clear Outputs of All Cells")
        self.page.wait_for_function(
            """() => [...document.querySelectorAll(
                    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')]
                .every(p => !/\\[\\d+\\]/.test(p.textContent))"""
        )
        self.wait_for_kernel_idle()
        self._menu("Run", "Run All Cells")
        self.page.wait_for_function(  # it started: the first code cell is queued or done
            """() => {
                const p = document.querySelector(
                    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt');
                return p && /\\[(\\*|\\d+)\\]/.test(p.textContent);
            }""",
            timeout=30_000,
        )
        state = self.page.wait_for_function(
            """() => {
                const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
                if (!panel) return false;
                const errors = [...panel.querySelectorAll('.jp-OutputArea-output')]
                    .filter(o => o.textContent.includes('Traceback (most recent call last)'));
                if (errors.length) return 'error: ' + errors[0].textContent.slice(-3000);
                const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
                const ran = prompts.length && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
                const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel;
                return ran && kernel && kernel.status === 'idle' && 'done';
            }""",
            timeout=timeout * 1000, polling=500,
        ).json_value()
        if state != "done":
            raise AssertionError(f"a cell raised while running the notebook:\n{state}")

    def wait_for_widget(self, selector: str, timeout: float = 60):
        """The first element matching ``selector``, once visible (e.g. a widget's class)."""
        locator = self.page.locator(selector).first
        locator.wait_for(state="visible", timeout=timeout * 1000)
        return locator

    def image_bytes(self, locator) -> bytes:
        """The bytes an ``<img>`` shows (``ipywidgets.Image`` uses ``blob:`` URLs)."""
        data = locator.evaluate(
            """async img => {
                const response = await fetch(img.src);
                return Array.from(new Uint8Array(await response.arrayBuffer()));
            }"""
        )
        return bytes(data)

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


# ----- fixtures -----------------------------------------------------------------------
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember each phase's report on the test item, so fixtures see failures."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium via Playwright, shared by the session's tests."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Python playwright is not installed: pip install -e '.[dev]'")
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        found = shutil.which("chromium")
        hint = f" (but {found} exists: set CVAE_LAB_CHROMIUM)" if found else ""
        _unavailable(f"no Chromium at {CHROMIUM}{hint}: install Debian's chromium "
                     f"(apt-get install chromium) to run the browser tests")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def jupyter_server(tmp_path_factory):
    """JupyterLab on a free localhost port, stopped (with its kernels) at the end."""
    server = JupyterServer(tmp_path_factory.mktemp("jupyterlab"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def lab(request, browser, jupyter_server):
    """A fresh page on JupyterLab; screenshot + server log to artifacts/ on failure."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    driver = LabDriver(page, jupyter_server)
    try:
        yield driver
    finally:
        failed = any(getattr(request.node, f"rep_{w}", None) is not None
                     and getattr(request.node, f"rep_{w}").failed for w in ("setup", "call"))
        if failed:
            try:
                shot = driver.screenshot(request.node.name)
                log = ARTIFACTS / f"{request.node.name}.jupyter.log"
                log.write_text(jupyter_server.log_tail(400))
                print(f"e2e failure artifacts: {shot}, {log}")
            except Exception as exc:  # a dead page must not hide the real failure
                print(f"could not save the failure screenshot: {exc}")
        context.close()
        try:
            jupyter_server.shutdown_kernels()
        except Exception:
            pass
