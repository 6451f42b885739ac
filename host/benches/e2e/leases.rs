//! Reading a lease table (shoal's and the KCL's share the item layout: `leaseKey`,
//! `leaseOwner`, `checkpoint`) to see progress and ownership from outside the workers.

use std::collections::BTreeMap;

use crate::emulators::AwsStream;

/// One lease as the benchmark sees it.
#[derive(Debug, Clone)]
pub struct Lease {
    pub owner: Option<String>,
    /// A sequence number, or a sentinel such as `TRIM_HORIZON` before the first checkpoint.
    pub checkpoint: Option<String>,
}

/// Every lease of `table` by lease key (shard id); empty while the table does not exist.
pub fn scan(stream: &AwsStream, table: &str) -> BTreeMap<String, Lease> {
    stream.block_on(async {
        let mut out = BTreeMap::new();
        let mut start = None;
        loop {
            let Ok(page) = stream
                .dynamodb
                .scan()
                .table_name(table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
            else {
                return out;
            };
            for item in page.items() {
                let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
                if let Some(key) = text("leaseKey") {
                    out.insert(
                        key,
                        Lease {
                            owner: text("leaseOwner"),
                            checkpoint: text("checkpoint"),
                        },
                    );
                }
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return out;
            }
        }
    })
}
