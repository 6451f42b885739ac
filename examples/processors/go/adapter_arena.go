package main

// adapterArena is memory for the WASI preview1 adapter that `jco new --wasi-reactor`
// links in front of this module (it implements Go's wasip1 imports on top of WASI
// preview 2). See README.md, "Why the adapter needs an arena".
//
// The adapter allocates its state (and wit-component its stack) lazily, on the first
// WASI call, through the main module's `cabi_realloc_adapter` export if there is one,
// else `cabi_realloc`. Go's first WASI calls happen while the runtime itself is starting
// (inside `_initialize`), so a Go `cabi_realloc` cannot serve them: it would re-enter a
// runtime that is not up yet (observed: endless runtime.throw -> write -> fd_write ->
// cabi_realloc -> badsystemstack recursion, then an out-of-bounds table trap). Growing
// memory instead is no better: Go's allocator assumes every page above its static data
// is its own and would overwrite the adapter.
//
// So prepare_core.py adds a `cabi_realloc_adapter` written directly in wasm (no Go
// involved) that bump-allocates from this array, which lives in Go's static data where
// the Go heap never reaches. It finds the array in the data section by its marker; the
// rest of the array is zero, which the Go linker leaves out of the binary.
//
// The marker must stay in sync with ARENA_MARKER in prepare_core.py.
var adapterArena = [adapterArenaSize]byte{
	's', 'h', 'o', 'a', 'l', '-', 'g', 'o', '-', 'a', 'd', 'a', 'p', 't', 'e', 'r',
	'-', 'a', 'r', 'e', 'n', 'a', '-', 'v', '1', '-', '7', 'f', '3', 'c', '9', 'e',
}

// 256 KiB: the adapter takes its state and wit-component its 64 KiB adapter stack once per
// instance, between 96 and 128 KiB in all (measured: 96 KiB traps, 128 KiB works), so this
// is twice that. cabi_realloc_adapter traps (`unreachable`) if it runs out, on the first
// WASI call of every instance, so a shortfall cannot go unnoticed.
const adapterArenaSize = 256 << 10

// keepAdapterArena stops the linker from dropping the array: nothing in Go uses it.
//
//go:noinline
func keepAdapterArena() byte { return adapterArena[len(adapterArena)-1] }

func init() { _ = keepAdapterArena() }
