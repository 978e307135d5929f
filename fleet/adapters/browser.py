"""A report page written to a file: HTML as it is, or PNG as headless Chromium draws it."""
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import BadInput


def write(path: Path, text: str) -> None:
    """The page as FILE.html, or as FILE.png drawn by headless Chromium."""
    if path.suffix.lower() == ".html":
        path.write_text(text)
        return
    if path.suffix.lower() != ".png":
        raise BadInput(f"--report {path}: write FILE.html or FILE.png")
    browser = os.environ.get("FLEET_CHROMIUM") or next(
        (b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if not browser:
        raise BadInput("a PNG report needs headless Chromium: install it (Debian: `apt-get install chromium`) or set "
                       "FLEET_CHROMIUM, or ask for FILE.html")
    with tempfile.TemporaryDirectory() as tmp:
        page_file = Path(tmp) / "report.html"
        page_file.write_text(text)
        p = subprocess.run(screenshot_command(browser, page_file, path.resolve(), Path(tmp)), capture_output=True,
                           text=True, timeout=120)
    if p.returncode != 0 or not path.is_file():
        raise BadInput(f"Chromium could not draw the report ({p.stderr.strip()[-300:]}); ask for FILE.html instead")


def screenshot_command(browser: str, page_file: Path, png: Path, profile: Path) -> list[str]:
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
            "--window-size=1200,1900", "--virtual-time-budget=10000", f"--screenshot={png}", page_file.as_uri()]
