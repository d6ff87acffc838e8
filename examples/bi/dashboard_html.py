#!/usr/bin/env python3
"""Render a one-page HTML dashboard (inline SVG, no external assets) from a database with
nps_billing, using the same analysis functions as the Grafana dashboard.

    python3 examples/bi/dashboard_html.py > nps.html      # connection from PGHOST/PGPORT/... env
    chromium --headless --screenshot=nps.png --window-size=1400,1180 nps.html

Used to make examples/bi/demo-dashboard.png from the `make demo-shell` database. Needs psql.
"""
import csv
import html
import io
import subprocess
import sys

SINCE, UNTIL = "2025-10-01", "2026-11-01"


def q(sql):
    out = subprocess.run(["psql", "-X", "-q", "--csv", "-v", "ON_ERROR_STOP=1", "-c", sql],
                         check=True, capture_output=True, text=True).stdout
    return list(csv.DictReader(io.StringIO(out)))


def f(x):
    return None if x in (None, "") else float(x)


def bars_with_ci(rows, label, w=640, h=260, lo=-40, hi=60, title=""):
    """Vertical bars (NPS) with CI whiskers, one per row."""
    n = len(rows)
    left, bottom, top = 40, 30, 20
    pw, ph = w - left - 10, h - bottom - top
    bw = pw / max(n, 1)
    y = lambda v: top + ph * (hi - v) / (hi - lo)
    out = [f'<svg width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg" font-family="DejaVu Sans" font-size="11">']
    for t in range(lo, hi + 1, 20):
        out.append(f'<line x1="{left}" x2="{w-10}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#ddd"/>'
                   f'<text x="{left-4}" y="{y(t)+4:.1f}" text-anchor="end" fill="#666">{t}</text>')
    for i, r in enumerate(rows):
        v, a, b = f(r["nps"]), f(r["ci_low"]), f(r["ci_high"])
        x = left + i * bw
        if v is not None:
            color = "#d9534f" if v < 10 else "#5b9bd5"
            y0, y1 = y(max(min(v, hi), lo)), y(0)
            out.append(f'<rect x="{x+bw*0.15:.1f}" y="{min(y0,y1):.1f}" width="{bw*0.7:.1f}" height="{abs(y1-y0):.1f}" fill="{color}"/>')
            if a is not None:
                cx = x + bw / 2
                out.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(max(a,lo)):.1f}" y2="{y(min(b,hi)):.1f}" stroke="#333"/>')
        if n <= 12 or i % 2 == 0:
            out.append(f'<text x="{x+bw/2:.1f}" y="{h-12}" text-anchor="middle" fill="#333">{html.escape(str(r[label]))}</text>')
    out.append('</svg>')
    return f'<div class="card"><h3>{html.escape(title)}</h3>{"".join(out)}</div>'


def trend(rows, w=640, h=260, lo=-10, hi=50, title=""):
    left, bottom, top = 40, 30, 20
    pw, ph = w - left - 10, h - bottom - top
    n = len(rows)
    x = lambda i: left + pw * (i + 0.5) / n
    y = lambda v: top + ph * (hi - v) / (hi - lo)
    pts = [(i, f(r["nps"]), f(r["ci_low"]), f(r["ci_high"])) for i, r in enumerate(rows) if r["nps"]]
    band = " ".join(f"{x(i):.1f},{y(b):.1f}" for i, _, _, b in pts) + " " + \
        " ".join(f"{x(i):.1f},{y(a):.1f}" for i, _, a, _ in reversed(pts))
    line = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v, _, _ in pts)
    out = [f'<svg width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg" font-family="DejaVu Sans" font-size="11">']
    for t in range(lo, hi + 1, 10):
        out.append(f'<line x1="{left}" x2="{w-10}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#ddd"/>'
                   f'<text x="{left-4}" y="{y(t)+4:.1f}" text-anchor="end" fill="#666">{t}</text>')
    out.append(f'<polygon points="{band}" fill="#5b9bd5" fill-opacity="0.25"/>')
    out.append(f'<polyline points="{line}" fill="none" stroke="#2e75b6" stroke-width="2"/>')
    for i, r in enumerate(rows):
        out.append(f'<text x="{x(i):.1f}" y="{h-12}" text-anchor="middle" fill="#333">{r["month"][2:]}</text>')
    out.append('</svg>')
    return f'<div class="card"><h3>{html.escape(title)}</h3>{"".join(out)}</div>'


def retention(rows, w=640, h=260, lo=0.5, hi=1.0, title=""):
    """Kaplan-Meier step curves per category with their 95% bands (nps_retention)."""
    left, bottom, top = 40, 30, 20
    pw, ph = w - left - 110, h - bottom - top
    days = lambda r: float(r["day"])
    dmax = max((days(r) for r in rows), default=1.0)
    x = lambda d: left + pw * d / dmax
    y = lambda v: top + ph * (hi - max(min(v, hi), lo)) / (hi - lo)
    colors = {"detractor": "#d9534f", "passive": "#f0ad4e", "promoter": "#2e75b6"}
    out = [f'<svg width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg" font-family="DejaVu Sans" font-size="11">']
    for t in range(50, 101, 10):
        out.append(f'<line x1="{left}" x2="{left+pw}" y1="{y(t/100):.1f}" y2="{y(t/100):.1f}" stroke="#ddd"/>'
                   f'<text x="{left-4}" y="{y(t/100)+4:.1f}" text-anchor="end" fill="#666">{t}%</text>')
    for k, (cat, color) in enumerate(colors.items()):
        pts = [(0.0, 1.0, 1.0, 1.0)] + [(days(r), f(r["survival"]), f(r["ci_low"]), f(r["ci_high"]))
                                       for r in rows if r["category"] == cat and r["survival"]]
        if len(pts) < 2:
            continue
        upper = " ".join(f"{x(pts[n][0]):.1f},{y(pts[n][3]):.1f} {x(pts[n+1][0]):.1f},{y(pts[n][3]):.1f}" for n in range(len(pts) - 1))
        lower = " ".join(f"{x(pts[n+1][0]):.1f},{y(pts[n][2]):.1f} {x(pts[n][0]):.1f},{y(pts[n][2]):.1f}" for n in reversed(range(len(pts) - 1)))
        out.append(f'<polygon points="{upper} {lower}" fill="{color}" fill-opacity="0.15"/>')
        line = " ".join(f"{x(pts[n][0]):.1f},{y(pts[n][1]):.1f} {x(pts[n+1][0]):.1f},{y(pts[n][1]):.1f} "
                        f"{x(pts[n+1][0]):.1f},{y(pts[n+1][1]):.1f}" for n in range(len(pts) - 1))
        out.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{left+pw+8}" y="{top+14+16*k}" fill="{color}">{cat}</text>')
    for d in sorted({days(r) for r in rows}):
        out.append(f'<text x="{x(d):.1f}" y="{h-12}" text-anchor="middle" fill="#333">{int(d)}</text>')
    out.append('</svg>')
    return f'<div class="card"><h3>{html.escape(title)}</h3>{"".join(out)}</div>'


def table(rows, title, cols=None):
    cols = cols or list(rows[0].keys())
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(r[c] or '')}</td>" for c in cols) + "</tr>" for r in rows)
    return f'<div class="card"><h3>{html.escape(title)}</h3><table><tr>{head}</tr>{body}</table></div>'


def main():
    days = q("SELECT day, responses, nps, ci_low, ci_high FROM nps_billing.nps_by_days_since_payment(27)")
    method = q(f"SELECT value, responses, nps, ci_low, ci_high FROM nps_billing.nps_by('method', '{SINCE}', '{UNTIL}')")
    collection = q(f"SELECT value, responses, nps, ci_low, ci_high FROM nps_billing.nps_by('collection', '{SINCE}', '{UNTIL}')")
    months = q(f"SELECT to_char(bucket_start, 'YYYY-MM') AS month, nps, ci_low, ci_high "
               f"FROM nps_billing.nps_trend('1 month', '{SINCE}', '{UNTIL}')")
    funnel = q(f"SELECT created, sent, responded, expired, failed, round(response_rate::numeric, 3) AS response_rate, "
               f"date_trunc('minute', median_time_to_answer)::text AS median_time_to_answer FROM nps_billing.survey_funnel('{SINCE}')")
    alerts = q("SELECT dimension, coalesce(value, '') AS value, round(previous_nps::numeric, 1) AS previous_nps, "
               "round(current_nps::numeric, 1) AS current_nps, round(nps_drop::numeric, 1) AS drop, "
               "to_char(p_value, '9.9EEEE') AS p_value FROM nps_billing.nps_alerts('30 days', 10, as_of => '2026-09-01')")
    failed = q("SELECT CASE WHEN failed_payment THEN 'failed payment in 30 d' ELSE 'no failed payment' END AS customers, "
               "responses, round(nps::numeric, 1) AS nps, round(ci_low::numeric, 1) AS ci_low, "
               "round(ci_high::numeric, 1) AS ci_high FROM nps_billing.nps_failed_payments()")
    churn = q("SELECT category, customers, churned, round(100 * churn_rate::numeric, 1) AS churn_pct, "
              "round(100 * ci_low::numeric, 1) AS ci_low, round(100 * ci_high::numeric, 1) AS ci_high, "
              "round(lift::numeric, 2) AS lift, to_char(p_value, '9.9EEEE') AS p_value "
              "FROM nps_billing.nps_churn('45 days', as_of => '2026-10-01')")
    curves = q("SELECT category, extract(epoch FROM bucket_end) / 86400 AS day, survival, ci_low, ci_high "
               "FROM nps_billing.nps_retention('30 days', '240 days', as_of => '2026-10-01')")
    drivers = q("SELECT attribute, coalesce(value, '') AS value, responses, round(nps::numeric, 1) AS nps, "
                "round(difference::numeric, 1) AS vs_rest, to_char(q_value, '9.9EEEE') AS q_value, round(impact::numeric) AS impact "
                "FROM nps_billing.nps_drivers('{collection,method,plan}') LIMIT 8")
    terms = q("SELECT term, answers, round(100 * share::numeric, 1) AS pct_detractors, "
              "round(100 * other_share::numeric, 1) AS pct_others, round(z::numeric, 1) AS z "
              "FROM nps_billing.comment_terms('detractor') LIMIT 8")
    seg = [dict(r, label=r["value"]) for r in collection + method]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>nps_billing demo</title>
<style>body{{font-family:'DejaVu Sans',sans-serif;margin:16px;background:#f4f5f7;color:#222}}
h1{{font-size:20px;margin:0 0 10px}} h3{{font-size:13px;margin:0 0 6px;color:#444}}
.grid{{display:grid;grid-template-columns:660px 660px;gap:12px}}
.card{{background:#fff;border-radius:6px;padding:10px;box-shadow:0 1px 2px #0002}}
table{{border-collapse:collapse;font-size:12px}} td,th{{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}}
th{{color:#555}} td:first-child,th:first-child{{text-align:left}}</style></head><body>
<h1>NPS next to billing — nps_billing demo (Stripe-sync data, Oct 2025 – Oct 2026)</h1>
<div class="grid">
{bars_with_ci(days, "day", title="NPS by days since the last payment, 95% CI — nps_by_days_since_payment(27)")}
{bars_with_ci(seg, "label", lo=-20, hi=60, title="NPS by collection and payment method, 95% CI — nps_by('collection'), nps_by('method')")}
{trend(months, title="Monthly NPS with 95% CI — nps_trend('1 month', ...) (Pro price rise on 2026-08-01)")}
{table(alerts, "nps_alerts('30 days', 10, as_of => '2026-09-01')")}
{table(funnel, "survey_funnel('2025-10-01')")}
{table(failed, "nps_failed_payments()")}
{retention(curves, title="Still paying after the answer, by category (Kaplan-Meier, 95% band) — nps_retention('30 days', '240 days')")}
{table(churn, "Churn within 45 days of the answer, % with 95% Wilson CI — nps_churn('45 days')")}
{table(drivers, "Drivers with Benjamini-Hochberg q-values — nps_drivers('{collection,method,plan}')")}
{table(terms, "What detractors say — comment_terms('detractor')")}
</div></body></html>"""
    sys.stdout.write(page)


if __name__ == "__main__":
    main()
