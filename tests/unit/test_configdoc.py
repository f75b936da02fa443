"""docs/configuration.md is what pipeline.configdoc renders from the settings dataclasses."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path

from pipeline import config, configdoc
from pipeline.config import Settings, SourceConfig, load_settings
from pipeline.providers import DEFAULT_BASE_URLS


def test_the_page_is_the_rendered_reference() -> None:
    page = configdoc.PAGE.read_text(encoding="utf-8")
    assert page == configdoc.render(), (
        "docs/configuration.md is out of date: run `make config-doc` "
        "(python -m pipeline.configdoc --write) and commit the result")


def test_every_key_has_a_row_with_a_meaning() -> None:
    page = configdoc.render()
    for cls in [*config.SECTIONS.values(), SourceConfig]:
        for name, _, _ in configdoc.section_keys(cls):
            rows = re.findall(rf"^\| `{name}` \|.*\| (.*) \|$", page, flags=re.MULTILINE)
            assert rows, f"{cls.__name__}.{name}: no row"
            assert all(rows), f"{cls.__name__}.{name}: no comment beside or above the field"
    listed = {name for name, _, _ in configdoc.section_keys(SourceConfig)}
    assert listed == config.SOURCE_TABLE_KEYS


def test_every_bounded_key_shows_its_bounds() -> None:
    page = configdoc.render()
    for cls in config.SECTIONS.values():
        for spec in fields(cls):
            bounds = spec.metadata.get("bounds")
            if bounds is not None:
                assert bounds.describe() in page


def toml_block(page: str) -> dict[str, object]:
    block = page.split("```toml\n", 1)[1].split("```", 1)[0]
    return tomllib.loads(block)


def test_the_defaults_block_loads_as_the_defaults(tmp_path: Path) -> None:
    data = toml_block(configdoc.render())
    source = data.pop("sources")
    assert isinstance(source, list)
    lines = [line for line in configdoc.defaults_toml() if not line.startswith("```")]
    path = tmp_path / "batchscope.toml"
    path.write_text("\n".join(lines).replace("[[sources]]", '[[sources]]\nname = "x"\nprovider = "openai"'),
                    encoding="utf-8")
    loaded = load_settings(path, env={})
    expected_source = SourceConfig(name="x", provider="openai", base_url=DEFAULT_BASE_URLS["openai"])
    assert loaded == Settings(sources=(expected_source,))
    assert set(data) == set(config.SECTIONS)
