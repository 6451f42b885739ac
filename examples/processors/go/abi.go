// abi.go: hand-written component-model glue for the `processor` world of
// wit/processor.wit (shoal:processor@0.1.0).
//
// `wit-bindgen go` would generate this, but its output imports a Go module
// (go.bytecodealliance.org/cm) that has to be downloaded; this file needs only
// the standard library. It is the Go equivalent of the C bindings in
// ../c/gen/processor.c, and follows the same canonical ABI (wasm32):
//
//   - Parameters are flattened into core wasm values: a string is (ptr, len),
//     a list is (ptr, len), a record is its fields in order, an enum is an i32.
//     An export whose flattened parameters fit in 16 values receives them
//     directly; one whose result needs more than one value returns a pointer to
//     a "return area" holding the result in its memory layout.
//   - The host copies strings and lists into our memory before calling an
//     export, allocating through our `cabi_realloc` export; after it has read
//     an export's result, it calls `cabi_post_<name>` so we can free it.
//
// When we may not call imports: the component model forbids a component to call out
// (to an import, WASI included) while the host is inside `cabi_realloc` lowering
// arguments, and inside `cabi_post_*`; wasmtime traps with "cannot leave component
// instance". Go's allocator may do exactly that: starting a GC cycle or scavenging
// reads the clock (`clock_time_get`), which the first version of this file hit under
// load (trap in runtime.nanotime1 <- mheap.allocSpan <- mallocgc <- cabi_realloc). So
// the collector is switched off (SetGCPercent(-1)) whenever we return to the host, and
// back on only while an export runs (gcOn/gcOff below): allocation with the collector
// off just takes memory, with no clock reads, and the next export collects.
//
// Memory: Go's garbage collector does not know what the host holds, so every
// buffer handed out by cabi_realloc is kept alive in `hostAllocs` until the
// export that receives it has copied what it needs into ordinary Go values;
// every buffer we return is kept alive in `resultAllocs` until cabi_post_*.
// Go's heap never moves objects, so the addresses stay valid meanwhile.
//
// Layouts used below (offsets in bytes, wasm32: pointers and lengths are u32):
//
//	string                  ptr@0 len@4                              size 8,  align 4
//	tuple<string,string>    f0@0 f1@8                                size 16, align 4
//	kinesis-record          partition-key@0 sequence-number@8
//	                        sub-sequence-number@16 (u64)
//	                        approximate-arrival-ms@24 (s64)
//	                        explicit-hash-key@32 (option: tag u8@32, string@36)
//	                        data@44 (list<u8>: ptr@44 len@48)        size 56, align 8
//	result<_, process-error>            (initialize's return area)
//	                        is-err u8@0, error tag u8@4, message string@8
//	                                                                 size 16, align 4
//	result<checkpoint-directive, process-error>   (process's return area)
//	                        is-err u8@0, case tag u8@8,
//	                        ok at/rewind: position sequence-number string@16,
//	                                      sub-sequence-number u64@24
//	                        err retry/fatal: message string@12       size 32, align 8
package main

import (
	"runtime/debug"
	"unsafe"
)

// ---- the world's types, as plain Go values ------------------------------------------

// ShardInfo is `record shard-info`.
type ShardInfo struct {
	StreamName string
	ShardID    string
}

// KinesisRecord is `record kinesis-record`.
type KinesisRecord struct {
	PartitionKey         string
	SequenceNumber       string
	SubSequenceNumber    uint64
	ApproximateArrivalMs int64
	ExplicitHashKey      *string // nil: none
	Data                 []byte
}

// Batch is `record batch`.
type Batch struct {
	Records            []KinesisRecord
	MillisBehindLatest uint64
}

// Position is `record position`.
type Position struct {
	SequenceNumber    string
	SubSequenceNumber uint64
}

// DirectiveKind is the case of `variant checkpoint-directive` (its discriminant).
type DirectiveKind uint8

const (
	DirectiveNone     DirectiveKind = 0
	DirectiveBatchEnd DirectiveKind = 1
	DirectiveAt       DirectiveKind = 2 // Position is set
	DirectiveRewind   DirectiveKind = 3 // Position is set
)

// CheckpointDirective is `variant checkpoint-directive`.
type CheckpointDirective struct {
	Kind     DirectiveKind
	Position Position // only for DirectiveAt and DirectiveRewind
}

// ProcessError is `variant process-error`; it implements `error`.
type ProcessError struct {
	Fatal   bool // false: retry(message), true: fatal(message)
	Message string
}

func (e *ProcessError) Error() string { return e.Message }

// Retry is the `retry(message)` case of process-error.
func Retry(message string) *ProcessError { return &ProcessError{Fatal: false, Message: message} }

// Fatal is the `fatal(message)` case of process-error.
func Fatal(message string) *ProcessError { return &ProcessError{Fatal: true, Message: message} }

// ShutdownReason is `enum shutdown-reason`.
type ShutdownReason uint8

const (
	ShardEnd  ShutdownReason = 0
	LeaseLost ShutdownReason = 1
	Requested ShutdownReason = 2
)

func (r ShutdownReason) String() string {
	switch r {
	case ShardEnd:
		return "shard-end"
	case LeaseLost:
		return "lease-lost"
	case Requested:
		return "requested"
	}
	return "unknown"
}

// LogLevel is `enum log-level`.
type LogLevel uint8

const (
	Trace LogLevel = 0
	Debug LogLevel = 1
	Info  LogLevel = 2
	Warn  LogLevel = 3
	Error LogLevel = 4
)

// ---- the `log` import -----------------------------------------------------------------

// The world-level import `log: func(level: log-level, message: string)` is the core
// function `$root`.`log` with the flattened signature (i32, i32, i32) -> ().
//
//go:wasmimport $root log
//go:noescape
func wasmImportLog(level uint32, ptr unsafe.Pointer, length uint32)

// Log writes a line to the host's log. The host copies the message during the call.
func Log(level LogLevel, message string) {
	wasmImportLog(uint32(level), unsafe.Pointer(unsafe.StringData(message)), uint32(len(message)))
}

// ---- the `lease-token` import -----------------------------------------------------------

// FencingToken is the WIT record `fencing-token`: which holding of the shard's lease an
// instance's calls run under. Epoch grows with every later holder of the lease; a sink
// that refuses epochs below the highest it has seen refuses a stale holder's writes.
type FencingToken struct {
	Epoch uint64
	Owner string
}

// The world-level import `lease-token: func() -> fencing-token` returns three flat values
// (u64, string ptr, string len), more than one, so its core function takes a pointer to a
// return area the host fills: epoch u64@0, owner ptr@8 len@12 (size 16, align 8). The
// host copies `owner` into a buffer it allocates through our cabi_realloc during the call.
//
//go:wasmimport $root lease-token
//go:noescape
func wasmImportLeaseToken(ret unsafe.Pointer)

// leaseTokenArea is the return area: static data, because a goroutine stack may move
// while the host runs our cabi_realloc.
var leaseTokenArea [2]uint64

// LeaseToken returns the fencing token of the lease this instance's calls run under.
// Call it from inside an export only (Initialize, Process, Shutdown).
func LeaseToken() FencingToken {
	// The host calls cabi_realloc while the import runs, when the collector must be off,
	// as whenever the host is in control (see gcOff).
	gcOff()
	wasmImportLeaseToken(unsafe.Pointer(&leaseTokenArea))
	gcOn()
	base := unsafe.Pointer(&leaseTokenArea)
	token := FencingToken{Epoch: at[uint64](base, 0), Owner: loadStringAt(base, 8)}
	hostAllocs = nil // the owner's buffer is copied: the GC may reclaim it
	return token
}

// ---- the collector is on only inside exports -------------------------------------------

// init runs in `_initialize`, when the host instantiates the component (imports allowed).
func init() { gcOff() }

// gcOn lets the collector run (and catch up on what lowering allocated): call it at
// the start of an export, once the host has finished writing our arguments.
func gcOn() { debug.SetGCPercent(100) }

// gcOff stops the collector and waits for a cycle in progress to finish: call it last
// before returning to the host, which then calls cabi_post_* and, for the next call,
// cabi_realloc, where the runtime must not read the clock or call anything else.
func gcOff() { debug.SetGCPercent(-1) }

// ---- cabi_realloc: how the host allocates in our memory --------------------------------

// hostAllocs keeps every buffer cabi_realloc handed out reachable by the GC until the
// export they are arguments of has read them (see takeHostAllocs).
var hostAllocs [][]uint64

var zeroSized uint64

// cabi_realloc(old_ptr, old_size, align, new_size) -> ptr, the canonical ABI's
// allocator. Buffers are []uint64, so they are 8-byte aligned (the largest alignment in
// this world) and "noscan": the GC does not look inside them, which is right, because
// the pointers the host writes into them (a list of records holding strings) point at
// buffers that hostAllocs keeps alive anyway.
//
//go:wasmexport cabi_realloc
func cabiRealloc(oldPtr unsafe.Pointer, oldSize, align, newSize uint32) unsafe.Pointer {
	if newSize == 0 {
		return unsafe.Pointer(&zeroSized) // non-null and 8-aligned; nothing is written to it
	}
	if align > 8 {
		panic("cabi_realloc: alignment above 8 is not supported")
	}
	buf := make([]uint64, (newSize+7)/8)
	p := unsafe.Pointer(unsafe.SliceData(buf))
	if oldPtr != nil && oldSize > 0 {
		copy(unsafe.Slice((*byte)(p), newSize), unsafe.Slice((*byte)(oldPtr), min(oldSize, newSize)))
	}
	hostAllocs = append(hostAllocs, buf)
	return p
}

// takeHostAllocs forgets the host's allocations once an export has copied its
// arguments into Go values: the GC may reclaim them from then on.
func takeHostAllocs() { hostAllocs = nil }

// ---- reading arguments out of linear memory -------------------------------------------

func loadString(ptr unsafe.Pointer, length uint32) string {
	if length == 0 {
		return ""
	}
	return string(unsafe.Slice((*byte)(ptr), length)) // a copy
}

func loadBytes(ptr unsafe.Pointer, length uint32) []byte {
	if length == 0 {
		return nil
	}
	out := make([]byte, length)
	copy(out, unsafe.Slice((*byte)(ptr), length))
	return out
}

func at[T any](base unsafe.Pointer, offset uintptr) T { return *(*T)(unsafe.Add(base, offset)) }

func loadStringAt(base unsafe.Pointer, offset uintptr) string {
	return loadString(at[unsafe.Pointer](base, offset), at[uint32](base, offset+4))
}

// ---- results: the return area and the strings it points at ----------------------------

// retArea is the static return area (32 bytes, 8-aligned: the larger of the two
// exports' result layouts). The host reads it right after the export returns.
var retArea [4]uint64

// resultAllocs keeps the strings a result points at alive until cabi_post_*.
var resultAllocs [][]byte

func retBase() unsafe.Pointer {
	clear(retArea[:])
	return unsafe.Pointer(&retArea)
}

// storeString writes a string's (ptr, len) at base+offset, pointing at a copy that stays
// alive until the host calls cabi_post_*.
func storeString(base unsafe.Pointer, offset uintptr, s string) {
	buf := []byte(s)
	resultAllocs = append(resultAllocs, buf)
	*(*uint32)(unsafe.Add(base, offset)) = uint32(uintptr(unsafe.Pointer(unsafe.SliceData(buf))))
	*(*uint32)(unsafe.Add(base, offset+4)) = uint32(len(buf))
}

func storeError(base unsafe.Pointer, tagOffset, stringOffset uintptr, err *ProcessError) {
	*(*uint8)(base) = 1 // result: err
	if err.Fatal {
		*(*uint8)(unsafe.Add(base, tagOffset)) = 1
	} else {
		*(*uint8)(unsafe.Add(base, tagOffset)) = 0
	}
	storeString(base, stringOffset, err.Message)
}

// ---- the exports ------------------------------------------------------------------------

// initialize: func(shard: shard-info, settings: list<tuple<string, string>>)
//
//	-> result<_, process-error>
//
// Core signature: (i32 i32 i32 i32 i32 i32) -> i32 (a pointer to the return area).
//
//go:wasmexport initialize
func wasmExportInitialize(streamPtr unsafe.Pointer, streamLen uint32, shardPtr unsafe.Pointer,
	shardLen uint32, settingsPtr unsafe.Pointer, settingsLen uint32) unsafe.Pointer {
	shard := ShardInfo{loadString(streamPtr, streamLen), loadString(shardPtr, shardLen)}
	settings := make([][2]string, settingsLen)
	for i := range settings {
		kv := unsafe.Add(settingsPtr, uintptr(i)*16)
		settings[i] = [2]string{loadStringAt(kv, 0), loadStringAt(kv, 8)}
	}
	takeHostAllocs()
	gcOn()
	defer gcOff()

	err := Initialize(shard, settings)

	base := retBase()
	if err != nil {
		storeError(base, 4, 8, err)
	}
	return base
}

//go:wasmexport cabi_post_initialize
func wasmPostInitialize(unsafe.Pointer) { resultAllocs = nil }

// process: func(shard: shard-info, batch: batch) -> result<checkpoint-directive, process-error>
//
// Core signature: (i32 i32 i32 i32 i32 i32 i64) -> i32 (a pointer to the return area).
//
//go:wasmexport process
func wasmExportProcess(streamPtr unsafe.Pointer, streamLen uint32, shardPtr unsafe.Pointer,
	shardLen uint32, recordsPtr unsafe.Pointer, recordsLen uint32, millisBehind int64) unsafe.Pointer {
	shard := ShardInfo{loadString(streamPtr, streamLen), loadString(shardPtr, shardLen)}
	batch := Batch{Records: make([]KinesisRecord, recordsLen), MillisBehindLatest: uint64(millisBehind)}
	for i := range batch.Records {
		r := unsafe.Add(recordsPtr, uintptr(i)*56)
		rec := &batch.Records[i]
		rec.PartitionKey = loadStringAt(r, 0)
		rec.SequenceNumber = loadStringAt(r, 8)
		rec.SubSequenceNumber = at[uint64](r, 16)
		rec.ApproximateArrivalMs = at[int64](r, 24)
		if at[uint8](r, 32) != 0 {
			key := loadStringAt(r, 36)
			rec.ExplicitHashKey = &key
		}
		rec.Data = loadBytes(at[unsafe.Pointer](r, 44), at[uint32](r, 48))
	}
	takeHostAllocs()
	gcOn()
	defer gcOff()

	directive, err := Process(shard, batch)

	base := retBase()
	if err != nil {
		storeError(base, 8, 12, err)
		return base
	}
	*(*uint8)(base) = 0 // result: ok
	*(*uint8)(unsafe.Add(base, 8)) = uint8(directive.Kind)
	if directive.Kind == DirectiveAt || directive.Kind == DirectiveRewind {
		storeString(base, 16, directive.Position.SequenceNumber)
		*(*uint64)(unsafe.Add(base, 24)) = directive.Position.SubSequenceNumber
	}
	return base
}

//go:wasmexport cabi_post_process
func wasmPostProcess(unsafe.Pointer) { resultAllocs = nil }

// shutdown: func(shard: shard-info, reason: shutdown-reason)
//
// Core signature: (i32 i32 i32 i32 i32) -> ().
//
//go:wasmexport shutdown
func wasmExportShutdown(streamPtr unsafe.Pointer, streamLen uint32, shardPtr unsafe.Pointer,
	shardLen uint32, reason uint32) {
	shard := ShardInfo{loadString(streamPtr, streamLen), loadString(shardPtr, shardLen)}
	takeHostAllocs()
	gcOn()
	defer gcOff()
	Shutdown(shard, ShutdownReason(reason))
}
