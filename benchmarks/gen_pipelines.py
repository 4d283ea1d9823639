"""Generate N realistic pipeline files of 10 tasks (~70 lines each) for the benchmarks.

Every file has its own expressions (they embed the file's number), so no cache inside
flowctl can serve one file's work from another's.
"""

from __future__ import annotations

import sys
from pathlib import Path

TEMPLATE = """\
# yaml-language-server: $schema=../../flowctl/schemas/pipeline.schema.json
apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: bench-{i}
  description: Generated pipeline number {i} for the validation benchmark
  labels: {{team: bench, shard: "s{shard}"}}
spec:
  params:
    customer: {{type: string, default: "c-{i}"}}
    limit: {{type: integer, default: {i}}}
    dry_run: {{type: boolean, default: false}}
  schedule: "{minute} 6 * * *"
  defaults: {{retries: 2, retry_delay: 5s, timeout: 60s}}
  max_parallel: 4
  tasks:
    - id: fetch
      executor: http
      with:
        url: "https://api.example.com/customers/{{{{ params.customer }}}}?n={i}"
        headers: {{Accept: application/json}}
        expect_status: [200]
    - id: entries
      executor: transform
      with:
        value: "{{{{ tasks.fetch.output.json['items'][:params.limit + {i}] }}}}"
    - id: summarize
      executor: llm
      for_each: "{{{{ tasks.entries.output }}}}"
      with:
        model: gpt-4o-mini
        prompt: "Summarize item {i}: {{{{ item.title | upper }}}}"
        max_tokens: 200
    - id: shape
      executor: transform
      with:
        value:
          customer: "{{{{ params.customer }}}}"
          count: "{{{{ tasks.entries.output | length }}}}"
          tag: "run-{i}"
    - id: check
      executor: validate
      with:
        data: "{{{{ tasks.shape.output }}}}"
        schema: {{type: object, required: [customer, count]}}
    - id: store
      executor: sql
      when: "{{{{ tasks.check.output.valid and not params.dry_run }}}}"
      with:
        connection: warehouse
        statement: "insert into summaries_{i}(customer, n) values (:customer, :n)"
        parameters:
          customer: "{{{{ params.customer }}}}"
          n: "{{{{ tasks.shape.output.count }}}}"
    - id: notify
      executor: http
      on_failure: continue
      with:
        method: POST
        url: https://hooks.example.com/done
        json: {{pipeline: bench-{i}, rows: "{{{{ tasks.store.output.rowcount }}}}"}}
    - id: audit
      executor: transform
      needs: [notify]
      with: {{value: "done {i}"}}
    - id: report
      executor: transform
      with: {{value: "{{{{ tasks.summarize.output | map(attribute='text') | join(', ') }}}}"}}
    - id: final
      executor: transform
      needs: [audit, report]
      with: {{value: "{{{{ tasks.report.output ~ ' #{i}' }}}}"}}
  output: "{{{{ tasks.final.output }}}}"
"""


def generate(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        text = TEMPLATE.format(i=i, shard=i % 7, minute=i % 60)
        (folder / f"bench-{i:04d}.yaml").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    generate(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1000)
