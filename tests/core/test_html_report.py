"""``mmalign report``: one self-contained HTML page per run set, checked as text and in a headless browser."""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from PIL import Image  # noqa: E402

from mmalign_core.cli import main  # noqa: E402
from mmalign_core.html_report import render  # noqa: E402


def fake_run(folder: Path, name: str, f1: float) -> Path:
    stages = [
        {"index": 0, "name": "sft", "type": "sft", "status": "complete", "seconds": 12.5, "steps": 20,
         "data": {"n_examples": 80, "source": "shapes:shapes-sft"}, "loss": "losses:sft", "loss_metrics": ["loss", "tokens"],
         "last_metrics": {"loss": 0.9, "tokens": 30.0, "lr": 1e-5}},
        {"index": 1, "name": "eval-sft", "type": "evaluate", "status": "complete", "seconds": 3.0},
    ]
    results = {"shapes-pope": {"metrics": {"pope_f1": f1, "pope_yes_ratio": 0.5}, "higher_is_better": {"pope_f1": True}}}
    manifest = {"spec": {"name": name, "seed": 3, "description": "a <b>test</b> run"}, "status": "complete",
                "spec_hash": "f" * 64, "mmalign_version": "0.1.0", "git_commit": "abc123", "python": "3.11.7",
                "platform": "Linux", "device": "cpu", "processes": 1, "packages": {"torch": "2.13.0"},
                "plugins": [{"name": "shapes", "status": "ok", "version": "0.1.0"}], "stages": stages,
                "evaluations": [{"stage": "eval-sft", "results": results}]}
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "metrics.jsonl").write_text("".join(
        json.dumps({"stage": "sft", "step": s, "loss": 2.0 / s, "tokens": 30.0, "lr": 1e-5}) + "\n" for s in range(2, 21, 2)))
    samples = folder / "stages" / "1-eval-sft" / "eval" / "shapes-pope" / "samples.jsonl"
    samples.parent.mkdir(parents=True)
    samples.write_text(json.dumps({"id": "q0", "answer": "yes"}) + "\n")
    return folder


def test_one_page_holds_provenance_tables_figures_and_sample_links(tmp_path: Path) -> None:
    runs = [fake_run(tmp_path / "runs" / "a", "run-a", 0.71), fake_run(tmp_path / "runs" / "b", "run-b", 0.78)]
    page = render(runs, tmp_path / "site" / "page.html")
    text = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # nothing from the network
    assert "<script" not in text
    for needle in ("run-a", "run-b", "f" * 64, "abc123", "torch 2.13.0", "shapes-pope", "pope_f1 ↑", "0.71", "0.78",
                   "80 from shapes:shapes-sft", "a &lt;b&gt;test&lt;/b&gt; run"):
        assert needle in text, needle
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 1 + 2 * 3  # the compare chart, and per run: loss, tokens, evaluations
    for data in images:
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            assert im.size[0] > 300 and im.size[1] > 200
    links = re.findall(r'<a href="([^"#]+)"', text)
    assert links == ["../runs/a/stages/1-eval-sft/eval/shapes-pope/samples.jsonl",
                     "../runs/b/stages/1-eval-sft/eval/shapes-pope/samples.jsonl"]
    assert all((page.parent / link).is_file() for link in links)


def test_the_command_and_its_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = fake_run(tmp_path / "a", "run-a", 0.7)
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").is_file() and "wrote" in capsys.readouterr().err
    assert main(["report", str(run), str(tmp_path / "nothing"), "-o", str(tmp_path / "x.html")]) == 2
    assert "no manifest.json" in capsys.readouterr().err


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)

PROBE = """<html><body><iframe id="f" src="{page}" width="1280" height="900"></iframe><script>
document.getElementById("f").addEventListener("load", () => {{
  const imgs = [...document.getElementById("f").contentDocument.images];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length;
  const out = document.createElement("pre"); out.id = "result";
  out.textContent = "RESULT images=" + imgs.length + " broken=" + broken + " END";
  document.body.appendChild(out);
}});</script></body></html>"""


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no headless chromium (the CI script installs it)")
def test_the_page_in_a_headless_browser(tmp_path: Path) -> None:
    runs = [fake_run(tmp_path / "a", "run-a", 0.71), fake_run(tmp_path / "b", "run-b", 0.78)]
    page = render(runs, tmp_path / "page.html")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--allow-file-access-from-files",
             "--enable-logging=stderr", "--v=0"]
    shot = tmp_path / "shot.png"
    done = subprocess.run([*flags, "--window-size=1280,1600", f"--screenshot={shot}", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert shot.is_file(), done.stderr[-2000:]
    assert not [line for line in done.stderr.splitlines() if "CONSOLE" in line]  # no console message at all
    with Image.open(shot) as im:
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50  # text, tables and figures: not a blank page
    probe = tmp_path / "probe.html"
    probe.write_text(PROBE.format(page=page.name))
    done = subprocess.run([*flags, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert "RESULT images=7 broken=0 END" in done.stdout, done.stdout[-500:] + done.stderr[-1000:]
    assert not [line for line in done.stderr.splitlines() if "CONSOLE" in line and "page.html" in line]
