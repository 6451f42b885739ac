"""Rename one top-level export of a WebAssembly component, in place.

    python3 rename_export.py COMPONENT.wasm OLD-NAME NEW-NAME

Why build.sh needs this: componentize-py links the Python runtime and wasi-libc into the
component as shared libraries, and its linker panics ("one or more duplicate items detected
when collecting into set or map") when a world-level export has the same name as a libc
function with a different signature. The `processor` world exports `shutdown`, which is also
libc's socket `shutdown(2)`. So build.sh builds against a copy of the world whose export is
called `shoal-shutdown`, then renames that export back to `shutdown` here. Only the name in
the component's own export section changes; the function, its type and everything inside
stay as componentize-py made them, and `shoal plugin check` validates the result.

Standard library only. Understands the export section of the component binary format
(https://github.com/WebAssembly/component-model/blob/main/design/mvp/Binary.md).
"""

import sys

PREAMBLE = b"\x00asm\x0d\x00\x01\x00"  # magic, version 0xd, layer 1 (component)
EXPORT_SECTION = 11


def read_u32(data: bytes, pos: int) -> tuple[int, int]:
    """Decode an unsigned LEB128 at `pos`; return (value, position after it)."""
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def write_u32(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def skip_export_rest(data: bytes, pos: int) -> int:
    """Skip an export's sortidx and optional externdesc; return the position after them."""
    sort = data[pos]
    pos += 2 if sort == 0x00 else 1  # core sorts carry a second byte
    _, pos = read_u32(data, pos)  # index
    has_desc = data[pos]
    pos += 1
    if has_desc == 0x00:
        return pos
    kind = data[pos]
    pos += 1
    if kind == 0x00:  # core module: 0x11 typeidx
        return read_u32(data, pos + 1)[1]
    if kind in (0x01, 0x04, 0x05):  # func, component, instance: typeidx
        return read_u32(data, pos)[1]
    if kind == 0x03:  # type bound: eq typeidx | sub resource
        bound = data[pos]
        return read_u32(data, pos + 1)[1] if bound == 0x00 else pos + 1
    raise ValueError(f"unsupported export descriptor kind {kind:#x}")


def rename_export(component: bytes, old: str, new: str) -> bytes:
    if not component.startswith(PREAMBLE):
        raise ValueError("not a WebAssembly component")
    out = bytearray(PREAMBLE)
    pos, renamed = len(PREAMBLE), 0
    while pos < len(component):
        section_id = component[pos]
        size, body = read_u32(component, pos + 1)
        end = body + size
        if section_id != EXPORT_SECTION:
            out += component[pos:end]
            pos = end
            continue
        count, p = read_u32(component, body)
        entries = bytearray(write_u32(count))
        for _ in range(count):
            if component[p] != 0x00:
                raise ValueError(f"unsupported export name encoding {component[p]:#x}")
            length, name_start = read_u32(component, p + 1)
            name = component[name_start : name_start + length].decode("utf-8")
            rest_start = name_start + length
            rest_end = skip_export_rest(component, rest_start)
            if name == new:
                raise ValueError(f"the component already exports {new!r}")
            if name == old:
                name, renamed = new, renamed + 1
            encoded = name.encode("utf-8")
            entries += b"\x00" + write_u32(len(encoded)) + encoded + component[rest_start:rest_end]
            p = rest_end
        if p != end:
            raise ValueError("export section has trailing bytes")
        out += bytes([EXPORT_SECTION]) + write_u32(len(entries)) + entries
        pos = end
    if renamed != 1:
        raise ValueError(f"expected one top-level export named {old!r}, found {renamed}")
    return bytes(out)


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    path, old, new = sys.argv[1:]
    with open(path, "rb") as file:
        component = file.read()
    try:
        patched = rename_export(component, old, new)
    except (ValueError, IndexError, UnicodeDecodeError) as error:
        sys.exit(f"rename_export: {path}: {error}")
    with open(path, "wb") as file:
        file.write(patched)


if __name__ == "__main__":
    main()
