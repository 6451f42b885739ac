"""Make real KPL aggregates with the aws-kinesis-agg package (the format the KPL writes).

Reads JSON lines `[partition_key, data]` on stdin; writes one JSON line
`{"partition_key", "data_base64"}` per aggregate of `N` user records (argv[1]) on stdout.
"""
import base64
import json
import sys

from aws_kinesis_agg.aggregator import RecordAggregator


def main() -> None:
    per_aggregate = int(sys.argv[1])
    aggregator = RecordAggregator()

    def flush() -> None:
        record = aggregator.clear_and_get()
        if record is None:
            return
        partition_key, _explicit_hash_key, data = record.get_contents()
        print(json.dumps({
            "partition_key": partition_key,
            "data_base64": base64.b64encode(data).decode(),
        }))

    for line in sys.stdin:
        partition_key, data = json.loads(line)
        full = aggregator.add_user_record(partition_key, data.encode())
        if full is not None:
            sys.exit("aggregate filled up by size before the requested count")
        if aggregator.get_num_user_records() == per_aggregate:
            flush()
    flush()


if __name__ == "__main__":
    main()
