"""The docs run: every Python block of README.md (and of the docs pages listed here), and the docstring
examples of the public modules listed here, are executed as written.

README blocks run in order, in one namespace per ``##`` section (a block may use the names defined by the
blocks above it in the same section, never those of another section).
"""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)


def readme_sections(text: str) -> dict[str, list[str]]:
    """``{"## title": [python block, ...]}`` in document order (sections without Python blocks left out)."""
    sections: dict[str, list[str]] = {}
    starts = [(m.start(), m.group(0).strip()) for m in re.finditer(r"^## .*$", text, re.M)]
    bounds = starts + [(len(text), "")]
    for (start, title), (end, _) in zip(bounds, bounds[1:]):
        blocks = [m.group(2) for m in _FENCE.finditer(text[start:end]) if m.group(1) == "python"]
        if blocks:
            sections[title] = blocks
    return sections


SECTIONS = readme_sections(README.read_text())


def test_the_readme_has_python_blocks_and_keeps_the_two_setup_commands():
    assert sum(len(b) for b in SECTIONS.values()) >= 8
    text = README.read_text()
    setup = text[text.index("## Set-up"):text.index("\n## ", text.index("## Set-up") + 1)]
    commands = re.findall(r"^make (\w+)", setup, re.M)
    assert commands == ["demo", "test"]


@pytest.mark.parametrize("title", list(SECTIONS))
def test_readme_section_runs_as_written(title, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing a block writes lands in the repository
    torch.manual_seed(0)
    namespace: dict = {"__name__": f"readme_{len(title)}"}
    for i, block in enumerate(SECTIONS[title]):
        code = compile(block, f"README.md {title!r} block {i + 1}", "exec")
        exec(code, namespace)  # noqa: S102  (the README's own code)


# Pages of the documentation site whose Python blocks run too (one namespace per page). The experiment and
# layer pages are generated from results and are not listed.
DOC_PAGES = ["docs/index.md", "docs/conventions.md", "docs/pretrained.md"]


@pytest.mark.parametrize("page", DOC_PAGES)
def test_docs_page_runs_as_written(page, tmp_path, monkeypatch):
    text = (ROOT / page).read_text()
    blocks = [m.group(2) for m in _FENCE.finditer(text) if m.group(1) == "python"]
    assert blocks, f"{page}: no Python blocks"
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    namespace: dict = {"__name__": "docs_page"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{page} block {i + 1}", "exec"), namespace)  # noqa: S102


def test_a_failing_block_fails_the_test():
    # negative control of the runner: a block using a name no block above defines
    blocks = readme_sections("## S\n\n```python\ny = fa(data)\n```\n")["## S"]
    with pytest.raises(NameError):
        exec(compile(blocks[0], "x", "exec"), {})  # noqa: S102


# ------------------------------------------------------------------------------------ docstring examples
# Every module of the package with docstring examples: they are complete programs, run as written. Listed
# explicitly so that a module whose examples stop running fails here; `test_every_example_module_is_listed`
# keeps the list complete.
DOCTEST_MODULES = {
    "equiframe._native": None,        # None: every docstring of the module
    "equiframe.averaging": None,
    "equiframe.datasets._cache": None,
    "equiframe.datasets.nbody": None,
    "equiframe.frames.laplacian": None,
    "equiframe.frames.pca": None,
    "equiframe.groups": None,
    "equiframe.linalg": None,
    "equiframe.nn.mlp": None,
    "equiframe.nn.tensor_frames.graph": None,
    "equiframe.nn.tensor_frames.local": None,
    "equiframe.nn.tf_conv": None,
    "equiframe.pretrained": None,
    "equiframe.pretrained._loader": None,
    "equiframe.report": None,
    "equiframe.reps": None,
    "equiframe.testing": None,
    "equiframe.train": None,
    "equiframe.transforms": None,
}
#: modules whose examples still show call shapes with names they do not define (to be made runnable)
NOT_YET_RUNNABLE: set[str] = set()


def test_every_example_module_is_listed():
    import pkgutil

    import equiframe

    found = set()
    for info in pkgutil.walk_packages(equiframe.__path__, "equiframe."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        if any(t.examples for t in doctest.DocTestFinder(exclude_empty=True).find(module, info.name)
               if t.name == info.name or t.name.startswith(info.name + ".")):
            found.add(info.name)
    assert found - NOT_YET_RUNNABLE == set(DOCTEST_MODULES)


def _doctests(module_name: str, scope: str | None) -> list[doctest.DocTest]:
    module = importlib.import_module(module_name)
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, module_name)
    if scope == "module":
        tests = [t for t in tests if t.name == module_name]
    return [t for t in tests if t.examples]


@pytest.mark.parametrize("module_name", sorted(DOCTEST_MODULES))
def test_docstring_examples_run(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tests = _doctests(module_name, DOCTEST_MODULES[module_name])
    assert tests, f"{module_name}: no examples found"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{module_name}: {result.failed} of {result.attempted} examples failed"
