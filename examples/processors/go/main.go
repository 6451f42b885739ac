// main.go: shoal's example record processor in Go.
//
// It implements the `processor` world of wit/processor.wit through the
// hand-written glue in abi.go, and does the work every example processor does
// (docs/CONFORMANCE.md): count the JSON records whose field `<field>` equals
// `<value>`, sum their `amount`, log a summary per batch, and react to the
// conformance suite's test records.
//
// Build: examples/processors/go/build.sh (see README.md). The module is built
// with GOOS=wasip1 GOARCH=wasm -buildmode=c-shared: a "reactor" with no main
// program running; the host calls the exports below through abi.go.
package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
)

// main is required by the Go toolchain but never runs in a c-shared (reactor) build.
func main() {}

// Instance state. The host creates one instance (one linear memory) per shard, so plain
// globals are per shard. After a trap the instance is thrown away and a new one is
// initialized: the state starts over.
var (
	field = "type"     // setting `field`
	value = "purchase" // setting `value`
	total float64      // running sum of `amount` since initialize
)

// Initialize is the `initialize` export. settings are the [plugin.settings] pairs.
func Initialize(shard ShardInfo, settings [][2]string) *ProcessError {
	field, value, total = "type", "purchase", 0
	for _, kv := range settings {
		switch kv[0] {
		case "field":
			field = kv[1]
		case "value":
			value = kv[1]
		}
	}
	Log(Info, fmt.Sprintf("initialize %s field=%s value=%s", shard.ShardID, field, value))
	return nil
}

// Process is the `process` export: returns the checkpoint directive, or an error.
func Process(shard ShardInfo, batch Batch) (CheckpointDirective, *ProcessError) {
	matched, skipped := 0, 0
	for i := range batch.Records {
		rec := &batch.Records[i]
		var object map[string]json.RawMessage
		if json.Unmarshal(rec.Data, &object) != nil || object == nil {
			Log(Warn, fmt.Sprintf("skip %s: not a JSON object", rec.SequenceNumber))
			skipped++
			continue
		}
		if command, ok := stringField(object, "shoal_test"); ok {
			directive, err, done := testCommand(command, rec, object)
			if done {
				return directive, err
			}
			continue
		}
		if v, ok := stringField(object, field); ok && v == value {
			matched++
			if amount, ok := numberField(object, "amount"); ok {
				total += amount
			}
		}
	}
	Log(Info, fmt.Sprintf("batch %d records %d matched %d skipped total %s",
		len(batch.Records), matched, skipped, formatTotal(total)))
	return CheckpointDirective{Kind: DirectiveBatchEnd}, nil
}

// Shutdown is the `shutdown` export.
func Shutdown(shard ShardInfo, reason ShutdownReason) {
	Log(Info, fmt.Sprintf("shutdown %s %s", shard.ShardID, reason))
}

// testCommand runs a conformance test record {"shoal_test": "<command>", ...}. done says
// whether `process` returns (directive, err) at once.
func testCommand(command string, rec *KinesisRecord, object map[string]json.RawMessage) (
	directive CheckpointDirective, err *ProcessError, done bool) {
	here := Position{SequenceNumber: rec.SequenceNumber, SubSequenceNumber: rec.SubSequenceNumber}
	switch command {
	case "retry":
		return directive, Retry("conformance retry"), true
	case "fatal":
		return directive, Fatal("conformance fatal"), true
	case "trap":
		// An unrecovered panic ends the Go program (exit code 2); the host sees the call
		// fail, not a process-error, and treats it as a trap.
		panic("conformance trap")
	case "at":
		return CheckpointDirective{Kind: DirectiveAt, Position: here}, nil, true
	case "rewind":
		return CheckpointDirective{Kind: DirectiveRewind, Position: here}, nil, true
	case "none":
		return CheckpointDirective{Kind: DirectiveNone}, nil, true
	case "read-file":
		// Files are reachable only under the directories the host's config grants.
		path, _ := stringField(object, "path")
		verdict := "denied"
		if _, err := os.ReadFile(path); err == nil {
			verdict = "allowed"
		}
		Log(Info, fmt.Sprintf("read-file %s: %s", path, verdict))
	case "env":
		// The guest sees only the variables the host's config passes in.
		name, _ := stringField(object, "name")
		verdict := "unset"
		if _, ok := os.LookupEnv(name); ok {
			verdict = "set"
		}
		Log(Info, fmt.Sprintf("env %s: %s", name, verdict))
	case "lease-token":
		token := LeaseToken()
		Log(Info, fmt.Sprintf("lease-token epoch=%d owner=%s", token.Epoch, token.Owner))
	default:
		Log(Warn, fmt.Sprintf("unknown test command %s in record %s", command, rec.SequenceNumber))
	}
	return directive, nil, false
}

// stringField returns object[key] if it is a JSON string.
func stringField(object map[string]json.RawMessage, key string) (string, bool) {
	var s string
	raw, ok := object[key]
	if !ok || json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// numberField returns object[key] if it is a JSON number.
func numberField(object map[string]json.RawMessage, key string) (float64, bool) {
	var n float64
	raw, ok := object[key]
	if !ok || len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) ||
		json.Unmarshal(raw, &n) != nil {
		return 0, false
	}
	return n, true
}

// formatTotal prints the total as an integer when it is one ("42"), else in Go's shortest
// round-trip form ("12.5").
func formatTotal(t float64) string {
	if t == 0 {
		return "0" // also folds -0
	}
	if !math.IsInf(t, 0) && t == math.Trunc(t) {
		return strconv.FormatFloat(t, 'f', 0, 64)
	}
	return strconv.FormatFloat(t, 'g', -1, 64)
}
