"""The pages as a reader sees them: README.md and docs/ rendered as GitHub renders Markdown (cmark-gfm),
and the executed notebooks rendered to HTML by nbconvert. Every relative link and image must lead
somewhere; a notebook's outputs must read as text, not as terminal codes in fragments."""

import re
from html.parser import HTMLParser
from pathlib import Path

import cmarkgfm
import nbformat
import pytest
from cmarkgfm.cmark import Options
from nbconvert import HTMLExporter

from lab import notebook_results

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
EXECUTED = sorted((ROOT / "docs" / "results").glob("*.ipynb"))
# An absolute path into a virtual environment or its site-packages: the machine's, not the repository's ("./.venv").
OUTSIDE_ENV = re.compile(r"(?<![\w.>])/[\w./-]*/(site-packages|\.venv)\b")


class Targets(HTMLParser):
    """Every href and src of a page, and the anchors GitHub gives its headings."""

    def __init__(self):
        super().__init__()
        self.targets, self.anchors, self._heading = [], set(), None

    def handle_starttag(self, tag, attrs):
        self.targets += [v for k, v in attrs if k in ("href", "src") and v]
        if re.fullmatch(r"h[1-6]", tag):
            self._heading = ""

    def handle_data(self, data):
        if self._heading is not None:
            self._heading += data

    def handle_endtag(self, tag):
        if re.fullmatch(r"h[1-6]", tag) and self._heading is not None:
            self.anchors.add(re.sub(r"[^\w\- ]", "", self._heading.strip().lower()).replace(" ", "-"))
            self._heading = None


def rendered(page: Path) -> Targets:
    parser = Targets()
    parser.feed(cmarkgfm.github_flavored_markdown_to_html(page.read_text(), options=Options.CMARK_OPT_UNSAFE))
    return parser


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_image_resolves(page):
    here = rendered(page)
    broken = []
    for target in here.targets:
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:: not this repository's to check
        path, _, anchor = target.partition("#")
        goal = (page.parent / path).resolve() if path else page
        if not goal.exists():
            broken.append(target)
        elif anchor and goal.suffix == ".md" and anchor not in (here if goal == page else rendered(goal)).anchors:
            broken.append(target)
    assert not broken, broken


@pytest.mark.parametrize("notebook", EXECUTED, ids=lambda p: p.name)
def test_executed_notebooks_read_as_text(notebook):
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        kinds = [o.get("name", o["output_type"]) for o in cell.get("outputs", [])]  # stdout, stderr, display_data...
        assert all(a != b for a, b in zip(kinds, kinds[1:])), f"a stream in fragments in: {cell.source[:80]}"
    html, _ = HTMLExporter().from_notebook_node(nb)
    assert "\x1b[" not in html and not re.search(r"\[\d{1,2}(;\d+)*m", html), "terminal colour codes"
    assert not re.search(r"/(root|home/[\w.-]+)/", html), "a home folder of the machine it ran on"
    assert not OUTSIDE_ENV.search(notebook.read_text()), "a Python environment outside the repository"
    # Markdown images and links lead somewhere from where the executed copy is kept.
    page = Targets()
    page.feed(html)
    missing = [t for t in page.targets if not re.match(r"[a-z]+:|#", t) and not (notebook.parent / t.partition("#")[0]).exists()]
    assert not missing, missing


def test_every_committed_plot_is_on_a_page():
    shown = set()
    for page in PAGES:
        shown |= {(page.parent / t).resolve() for t in rendered(page).targets if t.endswith(".png")}
    plots = {p.resolve() for p in (ROOT / "docs").rglob("*.png")}
    assert not plots - shown, sorted(str(p.relative_to(ROOT)) for p in plots - shown)


def test_the_outputs_the_tutorial_quotes_are_the_cpu_runs_own():
    # Each ```text block of the notebook's prose, and each line it says a run "printed `...`", is an excerpt of
    # the committed CPU run: every line was printed there.
    notebook = nbformat.read(ROOT / "notebook.ipynb", as_version=4)
    run = nbformat.read(ROOT / "docs/results/cpu-notebook.ipynb", as_version=4)
    printed = {line.strip() for c in run.cells if c.cell_type == "code" for o in c.get("outputs", [])
               for line in o.get("text", "").splitlines()}
    prose = [c.source for c in notebook.cells if c.cell_type == "markdown"]
    excerpts = [line for s in prose for b in re.findall(r"```text\n(.*?)\n```", s, re.S) for line in b.splitlines()]
    excerpts += [q for s in prose for quoted in re.findall(r"printed (`[^`]+`(?:(?:, | and )`[^`]+`)*)", s)
                 for q in re.findall(r"`([^`]+)`", quoted)]
    assert len(excerpts) >= 6
    assert {line.strip() for line in excerpts} <= printed, {line.strip() for line in excerpts} - printed


@pytest.mark.parametrize("notebook", EXECUTED, ids=lambda p: p.name)
def test_the_serve_run_cell_shows_the_start_up_lines_and_keeps_the_whole_log_beside_it(notebook):
    nb = nbformat.read(notebook, as_version=4)
    launch, _, _ = notebook_results.launch_window([c for c in nb.cells if c.cell_type == "code"])
    shown = notebook_results.stream_text(launch).splitlines()
    log = notebook.with_suffix(".serve-run.log")
    assert shown[-1].endswith(f"; all of them: {log.name}]") and log.exists()
    assert not OUTSIDE_ENV.search(log.read_text()), "a Python environment outside the repository"
    wanted = [line for line in log.read_text().splitlines() if notebook_results.LAUNCH_LINES.search(line)]
    assert [line.removesuffix(" ...") for line in shown[:-1]] == [line[:240] for line in wanted]
    assert any("Deployment Options" in line for line in shown)  # where the start-up phases begin


def test_readable_shows_an_outside_environment_by_name_and_merges_its_streams(tmp_path):
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    launch = new_code_cell("serve run serve_llama_3_1_70b:app", outputs=[
        new_output("stream", name="stderr", text="INFO Deployment Options\nnoise in /opt/img/.venv/lib/x.py\n"),
        new_output("stream", name="stdout", text="more noise\n"),
        new_output("stream", name="stderr", text="Application 'default' is ready\n")])
    other = new_code_cell("print()", outputs=[new_output("stream", name="stdout", text=f"{ROOT}/a "),
                                               new_output("stream", name="stdout", text="/opt/img/.venv/b\n")])
    nb = new_notebook(cells=[launch, other])
    notebook_results.readable(nb, tmp_path / "x.serve-run.log", venv="/opt/img/.venv")
    assert [o["text"] for o in other.outputs] == [f"./a {notebook_results.PYTHON_ENV}/b\n"]
    assert [(o["name"], o["text"]) for o in launch.outputs] == [
        ("stderr", "INFO Deployment Options\nApplication 'default' is ready\n[2 of 4 lines left out here; all of them: x.serve-run.log]\n")]
    assert f"{notebook_results.PYTHON_ENV}/lib/x.py" in (tmp_path / "x.serve-run.log").read_text()
