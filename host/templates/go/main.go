// `{{name}}`: a shoal record processor in Go.
//
// shoal calls Initialize once per shard instance, Process for every batch, and Shutdown
// when the instance stops serving the shard, through the component-model glue in abi.go.
// Return Retry("...") from Process when a destination is unavailable (the batch comes
// again) or Fatal("...") when it can never be processed (the poison policy); a panic traps
// the instance: shoal builds a fresh one and retries the batch.
//
// Build with `bash build.sh`; try it with `shoal run --config shoal.toml`.
package main

import (
	"fmt"
	"strconv"
)

// main is required by the Go toolchain but never runs in a reactor (c-shared) build.
func main() {}

// One instance (one linear memory) per shard: globals are per-shard state.
var (
	records, bytes, sinceReport uint64
	reportEvery                 uint64 = 100
)

// Initialize is the `initialize` export; settings are the [plugin.settings] pairs.
func Initialize(shard ShardInfo, settings [][2]string) *ProcessError {
	for _, kv := range settings {
		if kv[0] == "report_every" {
			if n, err := strconv.ParseUint(kv[1], 10, 64); err == nil && n > 0 {
				reportEvery = n
			}
		}
	}
	Log(Info, fmt.Sprintf("%s: starting, reporting every %d records", shard.ShardID, reportEvery))
	return nil
}

// Process is the `process` export: the checkpoint directive, or an error.
func Process(shard ShardInfo, batch Batch) (CheckpointDirective, *ProcessError) {
	for i := range batch.Records {
		// Deliver batch.Records[i].Data to its destination here.
		records++
		bytes += uint64(len(batch.Records[i].Data))
		sinceReport++
	}
	if sinceReport >= reportEvery {
		Log(Info, fmt.Sprintf("%s: %d records, %d bytes so far", shard.ShardID, records, bytes))
		sinceReport = 0
	}
	// Everything up to the batch's last record is done: checkpoint it.
	return CheckpointDirective{Kind: DirectiveBatchEnd}, nil
}

// Shutdown is the `shutdown` export.
func Shutdown(shard ShardInfo, reason ShutdownReason) {
	Log(Info, fmt.Sprintf("%s: %s after %d records", shard.ShardID, reason, records))
}
