"""Parse OpenMetrics text from stdin with the Prometheus project's own Python parser
(prometheus_client.openmetrics.parser, strict: it rejects anything the format does not
allow) and print the families as JSON. Exit status 1, with the parser's error, if the
text does not parse. Used by the metrics tests (tests/runtime/operate.rs)."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main() -> int:
    text = sys.stdin.read()
    try:
        families = [
            {
                "name": family.name,
                "type": family.type,
                "unit": family.unit,
                "samples": [
                    {"name": s.name, "labels": s.labels, "value": s.value}
                    for s in family.samples
                ],
            }
            for family in text_string_to_metric_families(text)
        ]
    except Exception as e:  # the parser raises ValueError (and others) on bad input
        print(f"not valid OpenMetrics: {e}", file=sys.stderr)
        return 1
    json.dump(families, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
