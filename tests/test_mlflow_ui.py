"""The MLflow UI shows what a gradzoo user came to see, read from the page in a real browser.

A store made as a user makes it (the README tour's sigmoid run, a 2-job sweep, ``zoo-ablate
input_scaling --scale quick``), a real ``mlflow server`` on it (zoo.tracking.server.MlflowServer),
and headless Chromium driven by Selenium (Debian's ``chromium`` and ``chromium-driver``; nothing
is downloaded at run time). Each check reads the rendered page: where the experiment opens, the
run names in the runs table and how much of them is visible, the logged models under the run and
under the experiment, the study parent's description.

Screenshots of each page (1280x800) go to a temporary folder, or to ``$GRADZOO_UI_SHOTS``:
``GRADZOO_UI_SHOTS=docs/ui python -m pytest tests/test_mlflow_ui.py`` regenerates docs/ui/*.png
(docs/ui.md shows them).
"""
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.tracking.runs import ui_link
from zoo.tracking.server import MlflowServer

pytestmark = pytest.mark.slow  # no browser is a failure that says what to install, not a skip

EXPERIMENT = "gradzoo"
WIDTH, HEIGHT = 1280, 800
WAIT = 300  # a bound on a page showing what is checked, not a timing: under load a page took over 45 s
MAKE = {  # what the store holds: each command as a user types it
    "tour": ["zoo.cli.train", "model.depth=20", "model.activation=sigmoid", "model.init=random_normal",
             "trainer.epochs=1"],
    "sweep": ["zoo.cli.train", "-m", "model.activation=sigmoid,relu", "trainer.epochs=1"],
    "study": ["zoo.cli.ablate", "input_scaling", "--scale", "quick"],
}
VERDICTS = ("healthy", "vanishing", "exploding", "diverged", "reproduced", "not reproduced", "inconclusive")


def test_a_link_the_zoo_prints_opens_the_machine_learning_view_of_the_runs():
    assert ui_link("http://h:5000/", "7") == "http://h:5000/#/experiments/7/runs?workflowType=machine_learning"
    assert ui_link("http://h:5000", "7", "abc").endswith("/#/experiments/7/runs/abc?workflowType=machine_learning")
    assert ui_link("sqlite:///mlflow.db", "7") is None  # its UI is wherever `mlflow ui` runs


# -- the store, the server, the browser --------------------------------------------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The three commands run at once into one new sqlite store (as parallel jobs may)."""
    folder = tmp_path_factory.mktemp("store")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with contextlib.ExitStack() as outputs:
        started = {name: subprocess.Popen([sys.executable, "-m", *argv], cwd=folder, env=env, text=True,
                                          stdout=outputs.enter_context(open(folder / f"{name}.out", "w")),
                                          stderr=subprocess.STDOUT)
                   for name, argv in MAKE.items()}
        codes = {name: process.wait(timeout=600) for name, process in started.items()}
    for name, code in codes.items():
        assert code == 0, (folder / f"{name}.out").read_text()[-3000:]
    return folder


@pytest.fixture(scope="module")
def server(store):
    served = MlflowServer(f"sqlite:///{store / 'mlflow.db'}", store / "served-artifacts",
                          log=store / "mlflow-server.log").start()
    try:
        yield served.uri
    finally:
        served.stop()


@pytest.fixture(scope="module")
def runs(store):
    """The store's runs by role: tour, sweep, study (parents), sweep_jobs, study_jobs; and the
    experiment's id."""
    from mlflow import MlflowClient

    c = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    experiment = c.get_experiment_by_name(EXPERIMENT).experiment_id
    found = c.search_runs([experiment], max_results=100)
    kind = {r.info.run_id: r.data.tags.get("zoo.kind") for r in found}
    parent = {k: next(r for r in found if kind[r.info.run_id] == k) for k in ("sweep", "study")}
    jobs = {k: [r for r in found if r.data.tags.get("mlflow.parentRunId") == p.info.run_id] for k, p in parent.items()}
    tour = [r for r in found if kind[r.info.run_id] is None and "mlflow.parentRunId" not in r.data.tags]
    assert len(tour) == 1 and len(jobs["sweep"]) == 2 and len(jobs["study"]) == 2, [r.info.run_name for r in found]
    return {"experiment": experiment, "tour": tour[0], **parent, "sweep_jobs": jobs["sweep"],
            "study_jobs": jobs["study"]}


@pytest.fixture
def browser():
    """Headless Chromium with a new profile (what a first visit sees), 1280x800 pages."""
    missing = [p for p in ("chromium", "chromedriver") if shutil.which(p) is None]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        pytest.fail(f"the browser test needs {', '.join(missing)}: apt-get install chromium chromium-driver; "
                    "pip install selenium")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={WIDTH},{HEIGHT}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("GRADZOO_UI_SHOTS") or tmp_path_factory.mktemp("ui"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def shoot(driver, folder: Path, name: str) -> None:
    """The page as seen, a small PNG (256 colours)."""
    from io import BytesIO

    from PIL import Image

    image = Image.open(BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    image.quantize(colors=256).save(folder / f"{name}.png", optimize=True)


def until(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.25).until(condition)
    except Exception as error:
        pytest.fail(f"{what}: not seen within {WAIT} s at {driver.current_url} ({type(error).__name__})\n"
                    f"page: {page_text(driver)[:1500]}")


def page_text(driver) -> str:
    from selenium.webdriver.common.by import By

    try:
        return driver.find_element(By.TAG_NAME, "body").text
    except Exception:
        return ""


def shows(*texts: str):
    return lambda driver: all(t in page_text(driver) for t in texts)


def close_assistant(driver) -> None:
    """Close the *MLflow Assistant* panel a first visit opens (a user closes it once)."""
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):
        if button.is_displayed():
            button.click()
            return


def clicked(driver, element) -> bool:
    """Click ``element`` as a user does, closing first what covers it (the guidance popover
    and the assistant a first visit opens); False while something still covers it."""
    from selenium.common.exceptions import ElementClickInterceptedException
    from selenium.webdriver.common.by import By

    for label in ("Close guidance", "Close"):
        for button in driver.find_elements(By.CSS_SELECTOR, f"button[aria-label='{label}']"):
            if button.is_displayed():
                try:
                    button.click()
                except ElementClickInterceptedException:
                    pass
    try:
        element.click()
        return True
    except ElementClickInterceptedException:
        return False


def name_link(driver, run_id: str):
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, f"a[href$='/runs/{run_id}'] span")
    return found[0] if found and found[0].is_displayed() else None


def visible_prefix(driver, element) -> str:
    """The part of ``element``'s text the table shows: the characters whose glyphs end inside
    the cell (a name cut with an ellipsis shows its start only)."""
    return driver.execute_script("""
        const el = arguments[0], text = el.firstChild, cell = el.closest('.ag-cell') || el;
        const right = Math.min(el.getBoundingClientRect().right, cell.getBoundingClientRect().right);
        const range = document.createRange();
        let shown = 0;
        for (let i = 1; i <= text.length; i++) {
            range.setStart(text, 0); range.setEnd(text, i);
            if (range.getBoundingClientRect().right <= right + 0.5) shown = i; else break;
        }
        return text.textContent.slice(0, shown);""", element)


# -- the pages ---------------------------------------------------------------------------------

def test_the_experiment_opens_on_its_runs(server, runs, browser, shots):
    """The link the zoo prints opens on the runs in the machine-learning view; a bare experiment
    URL opens MLflow 3.17–3.18's GenAI overview until the sidebar's *Model training* is clicked once,
    then on the runs (README, docs/ui.md)."""
    from selenium.webdriver.common.by import By

    experiment = runs["experiment"]
    browser.get(ui_link(server, experiment))
    until(browser, lambda d: name_link(d, runs["tour"].info.run_id), "the tour run in the runs table")
    assert f"/experiments/{experiment}/runs" in browser.current_url
    sidebar = page_text(browser)
    assert "Runs" in sidebar and "Models" in sidebar and "Training runs" not in sidebar  # not the GenAI sidebar

    browser.delete_all_cookies()
    browser.execute_script("window.localStorage.clear()")
    browser.get(f"{server}/#/experiments/{experiment}")  # a first visit, from the experiments list
    until(browser, lambda d: "/overview" in d.current_url or "/runs" in d.current_url, "a redirect")
    if "/overview" in browser.current_url:  # MLflow 3.17 and 3.18: the GenAI view is its default
        switch = until(browser, lambda d: next(iter(d.find_elements(
            By.XPATH, "//*[@role='button' or self::button][normalize-space(.)='Model training']")), None),
            "the GenAI overview's workflow switch, 'Model training'")
        shoot(browser, shots, "00-genai-overview")
        until(browser, lambda d: clicked(d, switch), "a click on 'Model training' (popovers closed)")
        browser.get(f"{server}/#/experiments/{experiment}")
        until(browser, lambda d: "/runs" in d.current_url, "the runs, after 'Model training' was clicked once")
    until(browser, lambda d: name_link(d, runs["tour"].info.run_id), "the tour run in the runs table")


def test_the_verdict_is_visible_in_the_runs_list(server, runs, browser, shots):
    """Unconfigured, the runs table shows each run's verdict at the start of its name, inside
    the ~20 characters it does not cut, children of the sweep and the study included."""
    from selenium.webdriver.common.by import By

    browser.get(ui_link(server, runs["experiment"]))
    until(browser, lambda d: name_link(d, runs["study"].info.run_id), "the study's parent run")
    close_assistant(browser)
    for parent in (runs["sweep"], runs["study"]):  # unfold the nested jobs, as a user does
        cell = name_link(browser, parent.info.run_id).find_element(By.XPATH, "./ancestor::div[contains(@class,'ag-cell')]")
        cell.find_element(By.CSS_SELECTOR, "button").click()
    every = [runs["tour"], runs["study"], *runs["sweep_jobs"], *runs["study_jobs"]]
    until(browser, lambda d: all(name_link(d, r.info.run_id) for r in every), "every job under its parent")
    shoot(browser, shots, "01-runs")
    for run in every:
        verdict = run.data.tags.get("zoo.verdict") or run.data.tags["zoo.claim_verdict"]
        assert verdict in VERDICTS
        seen = visible_prefix(browser, name_link(browser, run.info.run_id))
        assert seen.startswith(f"{verdict} ·"), (run.info.run_name, seen)
    tour = visible_prefix(browser, name_link(browser, runs["tour"].info.run_id))
    assert tour.startswith("vanishing · sigmoid"), tour  # then what differs


def test_the_runs_logged_model_is_listed_under_the_run_and_the_experiment(server, runs, browser, shots):
    from selenium.webdriver.common.by import By

    tour = runs["tour"]
    browser.get(ui_link(server, runs["experiment"], tour.info.run_id))
    until(browser, shows("Description", "vanishing · stalled", "Logged models (1)", "mlp-digits"),
          "the run's verdict and its logged model")
    close_assistant(browser)
    shoot(browser, shots, "02-run")
    heading = browser.find_element(By.XPATH, "//*[normalize-space(text())='Logged models (1)']")
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", heading)
    shoot(browser, shots, "03-run-logged-models")

    browser.get(f"{server}/#/experiments/{runs['experiment']}/models?workflowType=machine_learning")
    logged_from = [tour, *runs["sweep_jobs"]]  # the study's jobs log no model (tracking.log_model=false)
    until(browser, shows("mlp-digits", *(r.info.run_name for r in logged_from)), "the experiment's models")
    close_assistant(browser)
    rows = [e for e in browser.find_elements(By.XPATH, "//a[normalize-space(.)='mlp-digits']") if e.is_displayed()]
    assert len(rows) == len(logged_from)
    shoot(browser, shots, "04-experiment-models")


def test_the_study_parent_shows_its_summary_and_verdict(server, runs, browser, shots):
    """The parent's page opens on its description: the claim's verdict, the study, each check
    with its numbers and why; "Show more" unfolds the table, a row per variant."""
    from selenium.webdriver.common.by import By

    study = runs["study"]
    browser.get(ui_link(server, runs["experiment"], study.info.run_id))
    until(browser, shows("claim inconclusive · input_scaling (quick)", "saturated_fraction/block01_act: False = ",
                         "final/train_loss: True = "),
          "the study's verdict and its checks")
    close_assistant(browser)
    shoot(browser, shots, "05-study-parent")
    more = browser.find_elements(By.XPATH, "//*[normalize-space(text())='Show more']")
    until(browser, lambda d: not more or clicked(d, more[0]), "a click on 'Show more'")
    checks = [li.text for li in browser.find_elements(By.TAG_NAME, "li")
              if li.text.startswith(("saturated_fraction/block01_act: ", "final/train_loss: "))]
    assert len(checks) == 2 and all("inconclusive (" in c for c in checks), checks  # each on a line, saying why
    rows = until(browser, lambda d: [r.text for r in d.find_elements(By.CSS_SELECTOR, "table tr") if r.text.strip()],
                 "the summary table")
    assert rows[0] == "variant runs: outcome", rows  # the runs table first, then one per metric
    assert rows[1:3] == ["data.standardize=False 1: 1 finished", "data.standardize=True 1: 1 finished"], rows
    assert "LeCun et al. 1998" in page_text(browser)  # the claim itself
    table = browser.find_element(By.CSS_SELECTOR, "table")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", table)
    shoot(browser, shots, "06-study-parent-table")


def test_a_runs_charts_open_on_the_gradient_flow_in_decades(server, runs, browser, shots):
    """The run's *Model metrics* tab opens on the story: first the gradient flow (log10 of the
    first and last layer's gradient norm and of their ratio, so the axis reads decades: the tour
    run's first layer near -18, where a linear axis of the norm read "0" everywhere), then
    learning (loss, accuracy); the per-layer series and the end-of-run numbers after them."""
    from selenium.webdriver.common.by import By

    tour = runs["tour"]
    url = ui_link(server, runs["experiment"], tour.info.run_id).replace("?", "/model-metrics?")
    browser.get(url)
    until(browser, shows("1 gradient flow", "log10_first_layer", "2 learning"), "the gradient-flow section")
    close_assistant(browser)
    until(browser, lambda d: len(y_ticks(d, "log10_first_layer")) >= 2, "the first layer's chart drawn")
    shoot(browser, shots, "07-run-metrics")
    sections = section_titles(browser)
    assert sections[:2] == ["1 gradient flow", "2 learning"], sections
    assert sections[-1] == "Model metrics" and {"log10_grad_norm", "final", "summary"} <= set(sections)
    first, flow = y_ticks(browser, "log10_first_layer"), y_ticks(browser, "log10_flow")
    history = client_of(server).get_metric_history(tour.info.run_id, "1 gradient flow/log10_first_layer")
    assert all(-20 < m.value < -15 for m in history), [m.value for m in history]  # 1e-20 .. 1e-15, as logged
    assert len(set(first)) == len(first) >= 2 and all(-20 <= t <= -15 for t in first), first  # the page reads it
    assert max(flow) < -10, flow  # the ratio: vanishing, in decades


def test_the_histogram_images_have_a_step_slider(server, runs, browser, shots, tmp_path):
    """The gradient histograms over time are one image card with MLflow's step slider: moving it
    shows the image logged at that step (steps 0, 1, ... as run_report logs them). What the card
    shows is read from the image's bytes (MLflow 3.18 shows a ``blob:`` copy, 3.17 the artifact's
    URL), matched to the logged files' bytes."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    tour = runs["tour"]
    folder = Path(client_of(server).download_artifacts(tour.info.run_id, "images", str(tmp_path)))
    steps_of = {}  # an image's bytes -> the steps logged with them (step 0 repeats the first step's)
    for file in folder.iterdir():
        steps_of.setdefault(hashlib.sha256(file.read_bytes()).hexdigest(), set()).add(
            int(file.name.split("+step+")[1].split("+")[0]))
    logged = sorted(set().union(*steps_of.values()))
    assert len(logged) >= 3 and logged[0] == 0, logged

    browser.get(ui_link(server, runs["experiment"], tour.info.run_id).replace("?", "/model-metrics?"))
    slider = until(browser, lambda d: next(iter(d.find_elements(By.CSS_SELECTOR, "[role='slider']")), None),
                   "the histogram card's step slider")
    close_assistant(browser)
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", slider)
    card = slider.find_element(By.XPATH, "./ancestor::*[.//img][1]")
    assert int(slider.get_attribute("aria-valuemax")) == logged[-1]
    seen = []
    for _ in logged:
        [at] = until(browser, lambda d: (lambda step: [step] if step in steps_of.get(shown_image(d, card), ()) else None)(
                     int(slider.get_attribute("aria-valuenow"))), "the image of the slider's step")
        seen.append(at)
        if at == logged[1]:  # the card shows the run's params above its image: scroll to the image
            browser.execute_script("arguments[0].scrollIntoView({block: 'end'})", card.find_element(By.TAG_NAME, "img"))
            shoot(browser, shots, "08-histogram-slider")
        ActionChains(browser).click(slider).send_keys(Keys.ARROW_RIGHT).perform()
    assert seen == logged, (seen, logged)


def client_of(server):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=server)


def section_titles(driver) -> list[str]:
    """The *Model metrics* tab's section titles, top to bottom (each is followed by its count)."""
    lines = page_text(driver).splitlines()
    return [line for line, after in zip(lines, lines[1:]) if after.startswith("(") and after.rstrip(")")[1:].isdigit()]


def y_ticks(driver, title: str) -> list[float]:
    """The y-axis tick labels of the chart card titled ``title``, as numbers (Plotly writes a
    minus as U+2212)."""
    labels = driver.execute_script("""
        const titled = Array.from(document.querySelectorAll('*')).filter(
            e => e.children.length === 0 && e.textContent.trim() === arguments[0]);
        for (const t of titled) {
            let card = t;
            while (card && !card.querySelector('g.ytick')) card = card.parentElement;
            if (card) return Array.from(card.querySelectorAll('g.ytick text')).map(e => e.textContent);
        }
        return [];""", title)
    return [float(t.replace("\u2212", "-")) for t in labels]


def shown_image(driver, card) -> str | None:
    """The SHA-256 of the bytes of the image ``card`` shows, fetched by the page itself."""
    import base64

    encoded = driver.execute_async_script("""
        const done = arguments[arguments.length - 1], image = arguments[0].querySelector('img');
        if (!image || !image.src) return done(null);
        fetch(image.src).then(r => r.arrayBuffer()).then(buffer => {
            const bytes = new Uint8Array(buffer);
            let text = '';
            for (let i = 0; i < bytes.length; i += 8192) text += String.fromCharCode(...bytes.subarray(i, i + 8192));
            done(btoa(text));
        }).catch(() => done(null));""", card)
    return hashlib.sha256(base64.b64decode(encoded)).hexdigest() if encoded else None