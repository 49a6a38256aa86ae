"""Reports of numbered-teeth evaluation: summary.json, summary.csv (per case), per_tooth.csv, and a
dental chart of the per-tooth Dice (docs/metrics.md)."""
from __future__ import annotations

from pathlib import Path

from rbmnet.evaluation.dental_chart import write_dental_chart
from rbmnet.evaluation.numbering_metrics import TEETH_COUNTS, TEETH_METRICS, summarize_teeth
from rbmnet.evaluation.reports import STATISTICS, json_ready, write_csv
from rbmnet.io.atomic import write_json
from rbmnet.layout import SUMMARY_CSV, SUMMARY_JSON

PER_TOOTH_CSV = "per_tooth.csv"
CHART_PNG = "dental_chart.png"
CASE_CHARTS_FOLDER = "dental_charts"


def write_teeth_summary(folder: str | Path, per_case: list[dict], extra: dict | None = None, numbering=None,
                        chart_path: str | Path | None = None, case_charts: bool = False) -> dict:
    """Write the numbered-teeth report of a set of cases (rows of teeth_case_metrics plus "case") into
    `folder`; the dental chart of the mean per-tooth Dice goes to `chart_path` (none when None), the
    per-case charts (`case_charts`) to <folder>/dental_charts/."""
    folder = Path(folder)
    summary = dict(extra or {})
    summary.update(summarize_teeth(per_case))
    summary["per_case"] = per_case
    write_json(folder / SUMMARY_JSON, json_ready(summary))
    columns = ["case", *TEETH_METRICS, *[c for c in TEETH_COUNTS if c in per_case[0]]]
    rows = [{k: row.get(k) for k in columns} for row in per_case]
    rows += [{"case": statistic, **summary[statistic]} for statistic in STATISTICS if statistic in summary]
    write_csv(folder / SUMMARY_CSV, rows, columns)
    per_tooth = [{"tooth": int(number), **values} for number, values in summary["per_tooth"].items()]
    write_csv(folder / PER_TOOTH_CSV, per_tooth, ["tooth", "dice_mean", "cases"])
    if chart_path is not None:
        scores = {int(number): values["dice_mean"] for number, values in summary["per_tooth"].items()}
        write_dental_chart(chart_path, scores, numbering, title=f"mean Dice per tooth, {summary['num_cases']} cases")
    if case_charts:
        for row in per_case:
            write_dental_chart(folder / CASE_CHARTS_FOLDER / f"{row['case']}.png",
                               {int(k): v for k, v in row["per_tooth_dice"].items()}, numbering,
                               title=f"{row['case']}: Dice per tooth")
    return summary

