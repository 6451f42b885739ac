//! The only `bindgen!` in shoal: Rust types and call glue generated from `wit/processor.wit`.

wasmtime::component::bindgen!({
    world: "processor",
    path: "../wit",
    additional_derives: [PartialEq, Eq],
    // Exports are called with `call_async`, so a guest waiting in a WASI host call
    // (a sleep, a socket, a file) can be abandoned at its deadline.
    exports: { default: async },
});

// The world's `use types.{...}` re-exports the WIT types at this module's root:
// `Batch`, `KinesisRecord`, `CheckpointDirective`, `ProcessError`, `ShardInfo`, ...

impl std::fmt::Display for CheckpointDirective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckpointDirective::None => f.write_str("none"),
            CheckpointDirective::BatchEnd => f.write_str("batch-end"),
            CheckpointDirective::At(p) => {
                write!(f, "at({}/{})", p.sequence_number, p.sub_sequence_number)
            }
            CheckpointDirective::Rewind(p) => {
                write!(f, "rewind({}/{})", p.sequence_number, p.sub_sequence_number)
            }
        }
    }
}

impl FencingToken {
    /// The token of calls that run under no lease (`shoal replay`, benchmarks): epoch 0,
    /// which every leased holding's token exceeds.
    pub fn unleased() -> Self {
        Self {
            epoch: 0,
            owner: String::new(),
        }
    }
}

impl std::fmt::Display for FencingToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "epoch {} ({})", self.epoch, self.owner)
    }
}

impl std::fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ShutdownReason::ShardEnd => "shard-end",
            ShutdownReason::LeaseLost => "lease-lost",
            ShutdownReason::Requested => "requested",
        })
    }
}
