"""The HTML report in a real browser: Debian's chromium, headless, driven by
Playwright (scripts/install-browser.sh installs both; no browser download).

Loads the report of a 300-trade run (`run --html`) and the report of a
JSON Lines file written by OpenTelemetry's Python SDK (`report
fixtures/otlp/python-sdk.jsonl --html`), and checks through the DOM
contract (README, "The HTML report"): no console error, no request but the
file itself, map nodes = the run's services, each trace row opens a
waterfall with as many span rows as the embedded data has spans in that
trace, a link jumps to its target, a broken trace's problems are listed
and clicking one selects its span.

Usage: report_test.py BINARY [--screenshots DIR] [--measure REPORT.html]
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
RUN_SERVICES = {"datagen", "stock-processor", "kstream-service", "api-1", "api-2"}
DEADLINE_MS = 30_000


def chromium_path():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("no chromium on PATH: run scripts/install-browser.sh")


class Page:
    """A report opened in a fresh page, with its console errors and requests."""

    def __init__(self, browser, path):
        self.url = path.resolve().as_uri()
        self.page = browser.new_page(viewport={"width": 1500, "height": 1000})
        self.page.set_default_timeout(DEADLINE_MS)
        self.errors = []
        self.requests = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(self.url)
        self.page.wait_for_selector("[data-trace-id]")
        self.data = json.loads(self.page.locator("#kth-data").text_content())
        self.summary = json.loads(self.page.locator("#kth-summary").text_content())
        self.spans = {}
        for rs in self.data["resourceSpans"]:
            service = next(a["value"]["stringValue"] for a in rs["resource"]["attributes"] if a["key"] == "service.name")
            for ss in rs["scopeSpans"]:
                for span in ss["spans"]:
                    self.spans[(span["traceId"], span["spanId"])] = (service, span)
        self.spans_per_trace = Counter(trace for trace, _ in self.spans)

    def attr_values(self, selector, attr):
        return self.page.eval_on_selector_all(selector, f"ns => ns.map(n => n.getAttribute('{attr}'))")

    def selected_span(self):
        return self.attr_values('[data-span-id][aria-selected="true"]', "data-span-id")

    def check_clean(self):
        assert not self.errors, f"console errors: {self.errors}"
        others = [u for u in self.requests if u != self.url]
        assert not others, f"requests besides the file: {others}"

    def check_contract_placement(self):
        # data-trace-id only on trace-list rows, data-span-id only on waterfall rows.
        outside = self.page.eval_on_selector_all("[data-trace-id]", "ns => ns.filter(n => !n.classList.contains('trace-row') || !n.closest('#traces')).length")
        assert outside == 0, f"{outside} elements outside the trace list carry data-trace-id"
        outside = self.page.eval_on_selector_all("[data-span-id]", "ns => ns.filter(n => !n.classList.contains('wf-row') || !n.closest('#waterfall')).length")
        assert outside == 0, f"{outside} elements outside the waterfall carry data-span-id"

    def check_every_trace_row(self):
        rows = self.attr_values("[data-trace-id]", "data-trace-id")
        assert sorted(rows) == sorted(self.spans_per_trace), "one trace row per trace of kth-data"
        for trace in rows:
            self.page.click(f'[data-trace-id="{trace}"]')
            shown = self.page.locator("#waterfall [data-span-id]").count()
            assert shown == self.spans_per_trace[trace], f"trace {trace}: {shown} span rows, kth-data has {self.spans_per_trace[trace]}"
            current = self.attr_values('[data-trace-id][aria-current="true"]', "data-trace-id")
            assert current == [trace], f"clicked {trace}, current {current}"
        return len(rows)

    def open_span(self, trace, span):
        self.page.click(f'[data-trace-id="{trace}"]')
        self.page.click(f'#waterfall [data-span-id="{span}"]')
        assert self.selected_span() == [span]

    def follow_link(self, trace, span, target_trace, target_span):
        self.open_span(trace, span)
        self.page.click(f'[data-link-trace-id="{target_trace}"][data-link-span-id="{target_span}"]')
        assert self.selected_span() == [target_span], f"link to {target_span}: selected {self.selected_span()}"
        current = self.attr_values('[data-trace-id][aria-current="true"]', "data-trace-id")
        assert current == [target_trace], current
        assert self.page.locator(f'#waterfall [data-span-id="{target_span}"]').is_visible()

    def links(self):
        for (trace, span_id), (_, span) in self.spans.items():
            for link in span.get("links", []):
                yield trace, span_id, link["traceId"], link["spanId"]


def check_run_report(browser, path, shots):
    page = Page(browser, path)
    services = set(page.attr_values("[data-service]", "data-service"))
    assert services == RUN_SERVICES, f"map nodes {services}"
    edges = dict(zip(page.attr_values("[data-edge]", "data-edge"), page.attr_values("[data-edge]", "data-count")))
    # Counted over every trace of the run, not only those shown.
    assert edges.get("datagen->kstream-service") == "300", edges
    assert edges.get("datagen->stock-processor") == "309", edges  # 300 trades + 9 user profiles
    assert edges.get("stock-processor->api-1") == edges.get("stock-processor->api-2"), edges
    page.check_contract_placement()
    rows = page.check_every_trace_row()
    assert rows == page.summary["traces"]["shown"], (rows, page.summary["traces"])
    # A link to a span on the page jumps to it (a window row's send links
    # to the trades it sums); one to a trace not kept says so. Which of
    # the two a page of 200 traces holds depends on the run's timing: the
    # report of every trace (below) always has the first kind.
    links = list(page.links())
    assert links, "no link in the run's report (window rows link the trades they sum)"
    present = [l for l in links if (l[2], l[3]) in page.spans and l[2] != l[0]]
    if present:
        page.follow_link(*present[0])
    absent = [l for l in links if (l[2], l[3]) not in page.spans]
    if absent:
        trace, span, target_trace, target_span = absent[0]
        page.open_span(trace, span)
        why = page.page.locator(f'[data-link-span-id="{target_span}"] + .link-why').text_content()
        assert "not kept" in why, why
    shown = (present or absent)[0]
    page.page.click(f'[data-trace-id="{shown[0]}"]')
    page.page.click(f'#waterfall [data-span-id="{shown[1]}"]')
    if shots:
        page.page.evaluate("window.scrollTo(0, 0)")
        page.page.screenshot(path=str(shots / "report.png"))
        page.page.screenshot(path=str(shots / "run-report.png"), full_page=True)
    page.check_clean()
    print(f"run report: {len(services)} services, {rows} trace rows checked, "
          f"{len(present)} links within the page, {len(absent)} to traces not kept")


def check_every_trace_report(browser, path):
    """The same run's spans, every trace kept: every link target is on the page."""
    page = Page(browser, path)
    links = list(page.links())
    across = [l for l in links if l[2] != l[0]]
    assert across, "no link between two traces"
    missing = [l for l in links if (l[2], l[3]) not in page.spans]
    assert not missing, f"links to spans not on a page that keeps every trace: {missing[:3]}"
    page.follow_link(*across[0])
    page.check_clean()
    print(f"every-trace report: {len(across)} links between traces, first followed")


def check_foreign_report(browser, path, shots):
    page = Page(browser, path)
    services = set(page.attr_values("[data-service]", "data-service"))
    assert services == {"checkout", "billing", "shipping", "audit"}, services
    assert page.attr_values('[data-edge="checkout->billing"]', "data-count") == ["3"]
    page.check_contract_placement()
    page.check_every_trace_row()
    kinds = sorted(page.attr_values("[data-problem]", "data-problem"))
    assert kinds == ["dangling-link", "error", "orphan"], kinds
    # Each problem: listed with its span; a click shows that span selected.
    for kind in kinds:
        item = page.page.locator(f'[data-problem="{kind}"]')
        trace = item.get_attribute("data-problem-trace-id")
        span = item.get_attribute("data-problem-span-id")
        assert (trace, span) in page.spans, (kind, trace, span)
        item.click()
        assert page.selected_span() == [span], (kind, page.selected_span())
        current = page.attr_values('[data-trace-id][aria-current="true"]', "data-trace-id")
        assert current == [trace], (kind, current)
    # Broken traces are marked and can be listed alone.
    page.page.check("#broken-only")
    broken = set(page.attr_values("[data-trace-id]", "data-trace-id"))
    assert broken == {p["traceId"] for p in page.summary["problems"]}, broken
    page.page.uncheck("#broken-only")
    # A link within the page jumps; one to a span never captured says so.
    billing_link = [l for l in page.links() if (l[2], l[3]) in page.spans]
    page.follow_link(*billing_link[0])
    lost = [l for l in page.links() if (l[2], l[3]) not in page.spans][0]
    page.open_span(lost[0], lost[1])
    why = page.page.locator(f'[data-link-span-id="{lost[3]}"] + .link-why').text_content()
    assert "never captured" in why, why
    page.page.locator('[data-problem="orphan"]').click()
    if shots:
        page.page.screenshot(path=str(shots / "python-report.png"), full_page=True)
    page.check_clean()
    print(f"foreign report: {len(services)} services, problems {kinds} listed and selected")


def measure(browser, path):
    """Time to first paint and to a drawn trace list, of a big report."""
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    page.set_default_timeout(120_000)
    page.goto(path.resolve().as_uri())
    page.wait_for_selector("[data-trace-id]")
    timings = page.evaluate("""() => {
        const paint = performance.getEntriesByType('paint').find(e => e.name === 'first-contentful-paint');
        const nav = performance.getEntriesByType('navigation')[0];
        return {firstContentfulPaintMs: paint && paint.startTime, loadEventEndMs: nav.loadEventEnd,
                traceRows: document.querySelectorAll('[data-trace-id]').length,
                spans: JSON.parse(document.getElementById('kth-summary').textContent).spans.shown};
    }""")
    print(json.dumps({"report": str(path), "bytes": path.stat().st_size, **timings}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--screenshots", type=Path)
    parser.add_argument("--measure", type=Path)
    args = parser.parse_args()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            if args.measure:
                measure(browser, args.measure)
                return
            out = Path(tempfile.mkdtemp(prefix="kth-report-"))
            run_html = out / "run.html"
            run_spans = out / "run.jsonl"
            subprocess.run([args.binary, "run", "--trades", "300", "--show-traces", "0", "--html", str(run_html),
                            "--spans-out", str(run_spans)],
                           check=True, stdout=subprocess.DEVNULL, timeout=600)
            every_trace_html = out / "every-trace.html"
            subprocess.run([args.binary, "report", str(run_spans), "--html", str(every_trace_html),
                            "--html-traces", "100000"],
                           check=True, stdout=subprocess.DEVNULL, timeout=120)
            foreign_html = out / "python.html"
            status = subprocess.run([args.binary, "report", str(ROOT / "fixtures/otlp/python-sdk.jsonl"), "--html", str(foreign_html)],
                                    stdout=subprocess.DEVNULL, timeout=120).returncode
            assert status == 1, f"report of a file with broken traces exited {status}, not 1"
            if args.screenshots:
                args.screenshots.mkdir(parents=True, exist_ok=True)
            check_run_report(browser, run_html, args.screenshots)
            check_every_trace_report(browser, every_trace_html)
            check_foreign_report(browser, foreign_html, args.screenshots)
        finally:
            browser.close()
    print("browser test passed")


if __name__ == "__main__":
    main()
