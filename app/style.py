"""The app's look: a light and a dark theme (colours chosen for contrast), and one small style sheet built
from the theme on top of the platform style. `app/appearance.py` decides which theme is in use."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Theme:
    name: str  # "light" or "dark"
    dark: bool
    window: str  # page background
    base: str  # text fields, lists, cards
    alt_base: str
    text: str
    hint: str  # secondary text: still at least 4.5:1 against `window` and `base`
    border: str
    button: str
    accent: str  # primary buttons, selection
    accent_text: str
    accent_disabled: str
    accent_disabled_text: str
    nav_bg: str
    nav_text: str
    error: str
    link: str
    disabled_text: str  # deliberately dim: a disabled control
    chart_bg: str
    chart_fg: str  # axes, tick labels, error bars


LIGHT = Theme(
    name="light", dark=False, window="#efefef", base="#ffffff", alt_base="#f5f6f8", text="#1d1f23",
    hint="#5f6670", border="#dcdfe4", button="#f7f7f8", accent="#2f6fdf", accent_text="#ffffff",
    accent_disabled="#9db7e8", accent_disabled_text="#ffffff", nav_bg="#eef0f3", nav_text="#222222",
    error="#c0392b", link="#1f5fc9", disabled_text="#9a9fa6", chart_bg="#ffffff", chart_fg="#333333",
)
DARK = Theme(
    name="dark", dark=True, window="#202124", base="#2a2b2f", alt_base="#303136", text="#e8eaed",
    hint="#aab0b8", border="#44474d", button="#34363b", accent="#3d7bea", accent_text="#ffffff",
    accent_disabled="#2b4270", accent_disabled_text="#9aa6bb", nav_bg="#18191c", nav_text="#e8eaed",
    error="#ff8a80", link="#8ab4f8", disabled_text="#72767c", chart_bg="#26272b", chart_fg="#c8ccd2",
)


def style_sheet(theme: Theme = LIGHT) -> str:
    t = theme
    return f"""
QLabel#title {{ font-size: 24px; font-weight: 600; }}
QLabel#hint {{ color: {t.hint}; }}
QLabel#error {{ color: {t.error}; }}
QLabel#statValue {{ font-size: 20px; font-weight: 600; }}
QLabel#statValueCompact {{ font-size: 16px; font-weight: 600; }}
QFrame#card {{ background: palette(base); border: 1px solid {t.border}; border-radius: 10px; }}
QPushButton {{ padding: 5px 14px; border-radius: 6px; background: {t.button}; color: {t.text};
               border: 1px solid {t.border}; }}
QPushButton:hover {{ border-color: {t.accent}; }}
QPushButton:pressed {{ background: {t.border}; }}
QPushButton:disabled {{ color: {t.disabled_text}; background: {t.window}; }}
QPushButton#primary {{ background: {t.accent}; color: {t.accent_text}; border: none; font-weight: 600; }}
QPushButton#primary:disabled {{ background: {t.accent_disabled}; color: {t.accent_disabled_text}; }}
QPushButton#hero {{ background: {t.accent}; color: {t.accent_text}; border: none; font-size: 17px;
                   font-weight: 600; padding: 12px 28px; border-radius: 8px; }}
QPushButton#hero:disabled {{ background: {t.accent_disabled}; color: {t.accent_disabled_text}; }}
QListWidget#nav {{ border: none; outline: 0; background: {t.nav_bg}; font-size: 15px; padding-top: 12px; }}
QListWidget#nav::item {{ padding: 10px 16px; border-radius: 6px; margin: 2px 8px; color: {t.nav_text}; }}
QListWidget#nav::item:selected {{ background: {t.accent}; color: {t.accent_text}; }}
"""


STYLE = style_sheet(LIGHT)  # the light sheet, for code that wants a constant
