"""The HTML templates of the report (Jinja2, every value escaped unless marked safe).

Jinja2 is used rather than string concatenation because it escapes every value by default
(``autoescape``): text from result files (policy labels, error messages, scenario values) can never
become markup, and only the fragments built by :mod:`sim.views.report`'s own escaping helpers are
passed as :class:`markupsafe.Markup`. ``StrictUndefined`` makes a misspelt field an error instead of an
empty cell. The templates are strings in this module (no template files to package or find).
"""

from __future__ import annotations

from typing import Any

import jinja2
import markupsafe

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
{{ css }}
</style>
<script>
{{ script }}
</script>
</head><body><main>
<h1>{{ title }}</h1>
{{ facts }}
{{ findings }}
{{ body }}
<h2>Figures ({{ n_figures }})</h2>
{{ figures }}
<h2>Scenarios</h2>
<p class="note">Resolved scenarios (every default filled in, the strategy's included); click to expand.</p>
{{ scenarios }}
</main></body></html>
"""

FINDINGS = """<section id="findings">
<h2>Findings</h2>
<p class="answer" id="finding-fastest"><strong>Fastest to target.</strong> {{ fastest }}</p>
{% if setters %}
<p class="answer"><strong>Who sets the round.</strong> A round ends at its last report, so the device whose
report comes last decides its length.</p>
<ul class="answers" id="finding-setters">
{% for line in setters %}<li>{{ line }}</li>
{% endfor %}</ul>
<h3>Per device type</h3>
<p class="note">Rounds set: in how many rounds the last report came from this type. Idle: mean idle fraction
(waiting for the round's last report, over the round's length) of its reporting devices. Chosen: the most
frequent prune ratio and LoRA rank of its plans over the last {{ last_share }} of rounds ({{ last_rounds }}),
with the share of plans that chose it: what a bandit converged to.</p>
<div class="scroll"><table id="finding-types"><thead><tr><th>policy</th><th>device type</th>
<th class="num">rounds set</th><th class="num">idle (%)</th><th class="num">chosen prune ratio</th>
<th class="num">chosen LoRA rank</th></tr></thead><tbody>
{% for r in type_rows %}<tr><td>{{ r.policy }}</td><td>{{ r.type }}</td><td class="num">{{ r.set }}</td>
<td class="num">{{ r.idle }}</td><td class="num">{{ r.prune }}</td><td class="num">{{ r.rank }}</td></tr>
{% endfor %}</tbody></table></div>
{% endif %}
<h3>Dataset and evaluation</h3>
{% if evaluation %}
<div class="scroll"><table class="facts" id="finding-evaluation"><tbody>
{% for k, v in evaluation %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>
{% endfor %}</tbody></table></div>
{% else %}
<p class="note">Timing-only runs: no model is trained and no accuracy is measured.</p>
{% endif %}
<h3>Strategy parameters</h3>
<p class="note">Given: set in the scenario; defaults: the strategy's own values the run used.</p>
<div class="scroll"><table id="finding-params"><thead><tr><th>policy</th><th>algorithm</th><th>given</th>
<th>defaults</th></tr></thead><tbody>
{% for r in params %}<tr><td>{{ r.policy }}</td><td>{{ r.algorithm }}</td><td>{{ r.given }}</td>
<td>{{ r.defaults }}</td></tr>
{% endfor %}</tbody></table></div>
</section>
"""

_ENV = jinja2.Environment(loader=jinja2.DictLoader({"page.html": PAGE, "findings.html": FINDINGS}),
                          autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def render(name: str, **context: Any) -> str:
    """Render template ``name`` (``page.html`` or ``findings.html``) with ``context``."""
    return _ENV.get_template(name).render(**context)


def safe(fragment: str) -> markupsafe.Markup:
    """Mark HTML built by the report's escaping helpers as safe to insert unescaped."""
    return markupsafe.Markup(fragment)
