#!/usr/bin/env python3
"""Prepare Go's wasip1 core module for `jco new --wasi-reactor`.

    prepare_core.py <component-type object> <core module in> <core module out>

Two edits to the module Go wrote, both with plain byte surgery on the wasm binary format
(no new definitions are inserted before existing ones, so no index changes):

1. Add `cabi_realloc_adapter`: a 20-instruction bump allocator written in wasm that hands
   the WASI adapter memory from `adapterArena` (adapter_arena.go), found by its marker in
   the data section. wit-component gives the adapter this export instead of `cabi_realloc`
   (wasm-tools PR #989), so the adapter never calls into the Go runtime. Why that matters:
   adapter_arena.go.

2. Append the world's `component-type:processor` custom section, which tells `jco new`
   which world the module implements. C and Rust get it from their bindings generator;
   here it is copied from the 1 KiB object `wit-bindgen c` made for the C example
   (examples/processors/c/gen/processor_component_type.o), which encodes
   wit/processor.wit. (`jco embed --wit wit` would do the same, but jco 1.35's embed
   panics with "No such file or directory" whatever path it is given.)
"""
import sys

MAGIC = b"\0asm\1\0\0\0"
WORLD_SECTION = b"component-type:processor"
ARENA_MARKER = b"shoal-go-adapter-arena-v1-7f3c9e"  # adapter_arena.go
ARENA_SIZE = 256 << 10  # adapter_arena.go: adapterArenaSize
EXPORT = b"cabi_realloc_adapter"

SEC_CUSTOM, SEC_TYPE, SEC_IMPORT, SEC_FUNC, SEC_GLOBAL, SEC_EXPORT, SEC_CODE, SEC_DATA = 0, 1, 2, 3, 6, 7, 10, 11
I32 = 0x7F


def uleb(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def sleb(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if (n == 0 and not byte & 0x40) or (n == -1 and byte & 0x40):
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def read_uleb(data, i):
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def read_sleb(data, i):
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            if byte & 0x40:
                value -= 1 << shift
            return value, i


def sections(data):
    """[(id, body)] of a module."""
    assert data[:8] == MAGIC, "not a core wasm module"
    out, i = [], 8
    while i < len(data):
        sid = data[i]
        size, body = read_uleb(data, i + 1)
        out.append((sid, data[body:body + size]))
        i = body + size
    return out


def custom_name(body):
    length, i = read_uleb(body, 0)
    return body[i:i + length]


def vec_items(body):
    """(count, index just after the count) of a vector section."""
    return read_uleb(body, 0)


def append_to_vec(body, *items):
    count, i = read_uleb(body, 0)
    return uleb(count + len(items)) + body[i:] + b"".join(items)


def count_func_imports(body):
    count, i = read_uleb(body, 0)
    funcs = 0
    for _ in range(count):
        for _ in range(2):  # module and field names
            n, i = read_uleb(body, i)
            i += n
        kind = body[i]
        i += 1
        if kind == 0:  # func: type index
            _, i = read_uleb(body, i)
            funcs += 1
        elif kind == 1:  # table: reftype, limits
            i += 1
            flags = body[i]
            _, i = read_uleb(body, i + 1)
            if flags & 1:
                _, i = read_uleb(body, i)
        elif kind == 2:  # memory: limits
            flags = body[i]
            _, i = read_uleb(body, i + 1)
            if flags & 1:
                _, i = read_uleb(body, i)
        elif kind == 3:  # global: valtype, mutability
            i += 2
        else:
            raise SystemExit(f"prepare_core.py: unexpected import kind {kind}")
    return funcs


def count_global_imports(body):
    count, i = read_uleb(body, 0)
    globals_ = 0
    for _ in range(count):
        for _ in range(2):
            n, i = read_uleb(body, i)
            i += n
        kind = body[i]
        i += 1
        if kind == 0:
            _, i = read_uleb(body, i)
        elif kind in (1, 2):
            if kind == 1:
                i += 1
            flags = body[i]
            _, i = read_uleb(body, i + 1)
            if flags & 1:
                _, i = read_uleb(body, i)
        elif kind == 3:
            i += 2
            globals_ += 1
    return globals_


def find_arena(body):
    """Address of ARENA_MARKER in the data section's active segments."""
    count, i = read_uleb(body, 0)
    found = []
    for _ in range(count):
        flags, i = read_uleb(body, i)
        if flags == 2:  # active, explicit memory index
            _, i = read_uleb(body, i)
        base = None
        if flags in (0, 2):
            assert body[i] == 0x41, "data offset is not i32.const"
            base, i = read_sleb(body, i + 1)
            assert body[i] == 0x0B
            i += 1
        size, i = read_uleb(body, i)
        segment = body[i:i + size]
        at = segment.find(ARENA_MARKER)
        if base is not None and at >= 0:
            found.append(base + at)
        i += size
    if len(found) != 1:
        raise SystemExit(f"prepare_core.py: found the adapter arena marker {len(found)} times")
    return found[0]


def realloc_body(bump_global, arena_end):
    """cabi_realloc_adapter(old_ptr, old_size, align, new_size) -> ptr: bump allocation."""
    code = bytes([
        0x20, 0, 0x04, 0x40, 0x00, 0x0B,  # if old_ptr != 0: unreachable (never reallocates)
        0x23, *uleb(bump_global),  # global.get bump
        0x20, 2, 0x6A,  # + align
        0x41, 1, 0x6B,  # - 1
        0x41, 0, 0x20, 2, 0x6B, 0x71,  # & -align
        0x22, 4,  # local.tee ptr
        0x20, 3, 0x6A,  # + new_size
        0x22, 5,  # local.tee end
        0x41, *sleb(arena_end), 0x4B,  # > arena end (unsigned)
        0x04, 0x40, 0x00, 0x0B,  # if: unreachable (arena exhausted)
        0x20, 5, 0x24, *uleb(bump_global),  # bump = end
        0x20, 4,  # return ptr
        0x0B,
    ])
    body = uleb(1) + uleb(2) + bytes([I32]) + code  # locals: 2 x i32 (ptr, end)
    return uleb(len(body)) + body


def main(world_obj, in_path, out_path):
    world = [body for sid, body in sections(open(world_obj, "rb").read())
             if sid == SEC_CUSTOM and custom_name(body) == WORLD_SECTION]
    if len(world) != 1:
        raise SystemExit(f"prepare_core.py: no {WORLD_SECTION.decode()} section in {world_obj}")

    secs = [(sid, body) for sid, body in sections(open(in_path, "rb").read())
            if not (sid == SEC_CUSTOM and custom_name(body).startswith(b"component-type:"))]
    by_id = {sid: body for sid, body in secs if sid != SEC_CUSTOM}
    for sid in (SEC_TYPE, SEC_IMPORT, SEC_FUNC, SEC_GLOBAL, SEC_EXPORT, SEC_CODE, SEC_DATA):
        if sid not in by_id:
            raise SystemExit(f"prepare_core.py: module has no section {sid}")
    if EXPORT in by_id[SEC_EXPORT]:
        raise SystemExit(f"prepare_core.py: {in_path} already has {EXPORT.decode()}")

    arena = find_arena(by_id[SEC_DATA])
    type_index = vec_items(by_id[SEC_TYPE])[0]
    func_index = count_func_imports(by_id[SEC_IMPORT]) + vec_items(by_id[SEC_FUNC])[0]
    global_index = count_global_imports(by_id[SEC_IMPORT]) + vec_items(by_id[SEC_GLOBAL])[0]

    new = {
        SEC_TYPE: append_to_vec(by_id[SEC_TYPE], bytes([0x60, 4, I32, I32, I32, I32, 1, I32])),
        SEC_FUNC: append_to_vec(by_id[SEC_FUNC], uleb(type_index)),
        # (global (mut i32) (i32.const arena)): the bump pointer.
        SEC_GLOBAL: append_to_vec(by_id[SEC_GLOBAL], bytes([I32, 1, 0x41]) + sleb(arena) + b"\x0b"),
        SEC_EXPORT: append_to_vec(by_id[SEC_EXPORT], uleb(len(EXPORT)) + EXPORT + b"\x00" + uleb(func_index)),
        SEC_CODE: append_to_vec(by_id[SEC_CODE], realloc_body(global_index, arena + ARENA_SIZE)),
    }
    out = bytearray(MAGIC)
    for sid, body in secs:
        body = new.get(sid, body) if sid != SEC_CUSTOM else body
        out += bytes([sid]) + uleb(len(body)) + body
    out += bytes([SEC_CUSTOM]) + uleb(len(world[0])) + world[0]
    open(out_path, "wb").write(out)
    print(f"prepare_core.py: adapter arena at {arena:#x}, {ARENA_SIZE >> 10} KiB; "
          f"cabi_realloc_adapter is function {func_index}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
