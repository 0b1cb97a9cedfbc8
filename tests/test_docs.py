"""The documentation site (mkdocs.yml, docs/) builds in strict mode, so a broken link, anchor,
page left out of the navigation or API reference fails the suite; the README's links reach the
pages; every option a command's ``--help`` lists is on the command-line page."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import EVENT_SECONDS, REPO

DOCS = REPO / "docs"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site, built as CI builds it: ``mkdocs build --strict`` into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_the_site_builds_strict_with_every_page_and_the_api_rendered(site):
    pages = {p.relative_to(DOCS).with_suffix("") for p in DOCS.rglob("*.md")}
    for page in pages:  # every page is built (a page out of the nav fails the strict build too)
        built = site / ("index.html" if page.name == "index" else page / "index.html")
        assert built.is_file(), page
    api = (site / "reference" / "api" / "index.html").read_text()
    for name in ("zoo.train", "zoo.build_model", "zoo.diagnose", "zoo.compare", "zoo.load_pretrained",
                 "zoo.GradientMonitor"):
        assert name in api, name
    assert api.count('class="doc doc-heading"') >= 10  # mkdocstrings rendered the objects, not the ::: lines
    assert ":::" not in api


def test_the_readme_links_reach_the_docs_pages():
    readme = (REPO / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", readme)
    assert len(links) >= 15, links
    missing = [link for link in links if not (REPO / link).is_file()]
    assert not missing, missing
    unlinked = [p for p in DOCS.rglob("*.md") if p.name != "index.md" and f"]({p.relative_to(REPO)})" not in readme]
    assert not unlinked, f"pages the README does not point to: {unlinked}"


@pytest.mark.parametrize("command", [["zoo-ablate"], ["zoo-diagnose"], ["zoo-runs", "repair"],
                                     ["zoo-pretrained", "train"], ["zoo-server", "start"]])
def test_every_option_of_a_command_is_on_the_command_line_page(command):
    exe = os.path.join(os.path.dirname(sys.executable), command[0])
    help_text = subprocess.run([exe, *command[1:], "--help"], capture_output=True, text=True, timeout=EVENT_SECONDS,
                               check=True).stdout
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", help_text)) - {"--help"}
    assert options, help_text
    page = (DOCS / "reference" / "cli.md").read_text()
    section = page.split(f"## `{command[0]}`")[1].split("\n## ")[0]
    missing = sorted(o for o in options if f"`{o}" not in section and f" {o} " not in section)
    assert not missing, f"{' '.join(command)}: {missing} not in docs/reference/cli.md"
