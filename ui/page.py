"""What a page shows around its own content: its icon, the research notice, problems found.

Problems are what a page found on the way and went on without: unreadable runs, skipped files.
"""

from pathlib import Path

import streamlit as st

from core import config

ICONS_DIR = Path(__file__).parent / "icons"


def page_icon(name: str) -> str:
    """A page's icon file (a Material Symbols glyph), for st.set_page_config.

    An image file, not ":material/...": Streamlit draws a material page icon from a font CDN,
    which an offline app cannot reach.
    """
    return str(ICONS_DIR / f"{name}.png")


def research_notice() -> None:
    st.warning(config.RESEARCH_NOTICE, icon=":material/science:")


def show_problems(problems: list[str] | tuple[str, ...]) -> None:
    # The run list and the database's run index name the same broken run in the same words.
    for problem in dict.fromkeys(problems):
        st.warning(problem, icon=":material/report:")
