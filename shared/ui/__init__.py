"""Model pages in the browser, served by the function app itself (functions/ui.py).

- views.py: typed view models of the models list and of one model's page, built by pure functions
  from the registry's records (versions, aliases, runs, specs, monitoring reports, holdout charts).
- gates.py: a version's validation decision as a checklist (parity, quality bar, champion, latency,
  contract and replay), each gate with its reasons.
- render.py: Jinja2 templates (autoescaped) to HTML, the HTML form of the error tree, the security
  headers every page carries (a strict Content-Security-Policy: no inline script or style), and the
  allow-listed static files (our JS and CSS, and Chart.js vendored from its npm package).
- templates/, static/: what render.py serves; chart data travels in a JSON data island read by static/ui.js.
"""
