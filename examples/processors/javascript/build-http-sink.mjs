// Builds `http-sink.js` into build/http-sink.wasm: `npm run build:http-sink`, which
// `build.sh` runs. Plain Node.js, no packages beyond componentize-qjs.
//
// Why not just `componentize-qjs --wit wit/http-sink --world http-sink ...` like the
// filter: componentize-qjs 0.4.5 runs the JavaScript's top level once at build time
// (Wizer), in a wasmtime that links WASI 0.2 but not wasi:http, and stands in for
// every other import with a trap whose resources are all one placeholder type. The
// stand-in `wasi:http/types` then re-exports a placeholder `input-stream` while the
// real `wasi:io/streams` exports the real one, so the build stops with
//
//   component imports instance `wasi:http/types@0.2.12`, but a matching
//   implementation was not found in the linker: instance export `input-stream`
//   has the wrong type: mismatched resource types
//
// before any JavaScript runs. So this script builds in three steps:
//
// 1. It writes build/http-sink-wit/: the world of `wit/http-sink/http-sink.wit` with
//    `wasi:http` and `wasi:io` renamed `shim:http` and `shim:io` (renamed copies of
//    wit/deps/wasi-http.wit and wasi-io.wit, so both are stand-ins at build time and
//    agree with each other) plus explicit imports of the real wasi:io interfaces (see
//    `withRealIo`), and build/http-sink.shim.js: `http-sink.js` with its
//    `wasi:http/...` and `wasi:io/...` module specifiers renamed the same way.
// 2. It runs componentize-qjs (`sync: true`, the same as `--sync`) on those.
// 3. It renames the imports back (`unshim` below): the component's top-level
//    `shim:http/*` imports become `wasi:http/*`, and each `shim:io/*` import is
//    replaced by the component's own `wasi:io/*` import of the same interface (an
//    empty instance keeps the index; every reference to it is pointed at the real
//    one). The result imports exactly what a component built from
//    `wit/http-sink/http-sink.wit` would, and nothing named `shim`.
//
// The JavaScript is not changed beyond the specifiers; the nested core code keeps
// the `shim:` names internally, which no host sees.

import { componentize } from 'componentize-qjs';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const SHIMMED = ['http', 'io']; // the wasi packages renamed during the build
const SHIM = 'shim';

main().catch((e) => {
    console.error(`build-http-sink: ${e?.stack ?? e}`);
    process.exit(1);
});

async function main() {
    const build = path.join(here, 'build');
    const witDir = path.join(build, 'http-sink-wit');
    fs.rmSync(witDir, { recursive: true, force: true });
    fs.mkdirSync(path.join(witDir, 'deps'), { recursive: true });

    // 1. The renamed world, its dependencies and the renamed JavaScript.
    const world = fs.readFileSync(path.join(here, 'wit/http-sink/http-sink.wit'), 'utf8');
    fs.writeFileSync(path.join(witDir, 'http-sink.wit'), withRealIo(rename(world)));
    const deps = path.join(here, 'wit/deps');
    for (const entry of fs.readdirSync(deps)) {
        const source = fs.realpathSync(path.join(deps, entry));
        fs.symlinkSync(source, path.join(witDir, 'deps', entry));
        const m = /^wasi-(.+)\.wit$/.exec(entry);
        if (m && SHIMMED.includes(m[1])) {
            const text = fs.readFileSync(source, 'utf8');
            fs.writeFileSync(path.join(witDir, 'deps', `${SHIM}-${m[1]}.wit`), rename(text));
        }
    }
    const js = fs.readFileSync(path.join(here, 'http-sink.js'), 'utf8');
    const jsPath = path.join(build, 'http-sink.shim.js');
    fs.writeFileSync(jsPath, renameSpecifiers(js));

    // 2. componentize-qjs.
    const { component } = await componentize({
        witPath: witDir,
        world: 'http-sink',
        jsSource: fs.readFileSync(jsPath, 'utf8'),
        jsPath,
        sync: true,
    });
    fs.writeFileSync(path.join(build, 'http-sink.shim.wasm'), component);

    // 3. The real names back.
    const out = unshim(new Uint8Array(component));
    const tmp = path.join(build, 'http-sink.wasm.tmp');
    fs.writeFileSync(tmp, out);
    fs.renameSync(tmp, path.join(build, 'http-sink.wasm'));
    console.log(`http-sink.wasm: ${out.length} bytes`);
}

/** WIT text with `wasi:http` / `wasi:io` package references renamed to `shim:...`. */
function rename(text) {
    return text.replace(new RegExp(`\\bwasi:(${SHIMMED.join('|')})([/@])`, 'g'), `${SHIM}:$1$2`);
}

/**
 * The renamed world plus explicit imports of the real wasi:io interfaces. The
 * QuickJS runtime imports wasi:io itself, but only the functions it calls, and a
 * component's import is typed by what it uses; imported by the world, an interface
 * is bound (and typed) whole, the same as its `shim:io` copy, so that `unshim` can
 * hand the real import to code built against the copy.
 */
function withRealIo(text) {
    const io = fs.readFileSync(path.join(here, 'wit/deps/wasi-io.wit'), 'utf8');
    const version = /^package wasi:io@([^;\s]+);/m.exec(io)[1];
    const imports = [...io.matchAll(/^interface ([a-z][a-z0-9-]*)/gm)].map(
        (m) => `    import wasi:io/${m[1]}@${version};\n`,
    );
    const end = text.lastIndexOf('}');
    return `${text.slice(0, end)}\n    // added by build-http-sink.mjs\n${imports.join('')}${text.slice(end)}`;
}

/** JavaScript with `from 'wasi:http/...'` (and `wasi:io`) module specifiers renamed. */
function renameSpecifiers(text) {
    const re = new RegExp(`(\\bfrom\\s*|\\bimport\\s*\\(?\\s*)(['"])wasi:(${SHIMMED.join('|')})/`, 'g');
    return text.replace(re, `$1$2${SHIM}:$3/`);
}

// ---------------------------------------------------------------------------
// A minimal reader and writer of the component binary's top level
// (https://github.com/WebAssembly/component-model/blob/main/design/mvp/Binary.md).
// Only the sections that hold instance references are decoded; nested components,
// core modules, types and custom sections are copied byte for byte.

const SECTION = { custom: 0, coreModule: 1, coreInstance: 2, coreType: 3, component: 4, instance: 5, alias: 6, type: 7, canon: 8, start: 9, import: 10, export: 11, value: 12 };
const SORT_INSTANCE = 0x05;

class Reader {
    constructor(bytes, pos = 0, end = bytes.length) {
        this.bytes = bytes;
        this.pos = pos;
        this.end = end;
    }
    done() {
        return this.pos >= this.end;
    }
    byte() {
        if (this.pos >= this.end) throw new Error('unexpected end of component');
        return this.bytes[this.pos++];
    }
    u32() {
        let result = 0;
        let shift = 0;
        for (;;) {
            const b = this.byte();
            result += (b & 0x7f) * 2 ** shift;
            if ((b & 0x80) === 0) return result;
            shift += 7;
            if (shift > 35) throw new Error('LEB128 too long');
        }
    }
    string() {
        const len = this.u32();
        const s = Buffer.from(this.bytes.subarray(this.pos, this.pos + len)).toString('utf8');
        this.pos += len;
        return s;
    }
    bytesUpTo(start) {
        return this.bytes.subarray(start, this.pos);
    }
}

const u32 = (n) => {
    const out = [];
    do {
        let b = n & 0x7f;
        n = Math.floor(n / 128);
        if (n !== 0) b |= 0x80;
        out.push(b);
    } while (n !== 0);
    return Uint8Array.from(out);
};
const str = (s) => {
    const b = Buffer.from(s, 'utf8');
    return concat([u32(b.length), b]);
};
const concat = (parts) => Buffer.concat(parts.map((p) => (p instanceof Uint8Array ? p : Uint8Array.from(p))));
const section = (id, count, items) => {
    const body = concat([u32(count), ...items]);
    return concat([[id], u32(body.length), body]);
};

/** The component with `shim:` imports turned back into the real WASI ones (see the header). */
function unshim(bytes) {
    const preamble = bytes.subarray(0, 8);
    const expected = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
    if (!expected.every((b, i) => preamble[i] === b)) {
        throw new Error('not a WebAssembly component (layer 1, version 0x0d)');
    }
    const r = new Reader(bytes, 8);
    const sections = [];
    while (!r.done()) {
        const id = r.byte();
        const size = r.u32();
        sections.push({ id, start: r.pos, end: r.pos + size });
        r.pos += size;
    }

    // First pass: the top-level instance index of every imported interface.
    let instances = 0;
    const imported = new Map(); // name -> instance index
    for (const s of sections) {
        const sr = new Reader(bytes, s.start, s.end);
        if (s.id === SECTION.import) {
            for (let n = sr.u32(); n > 0; n -= 1) {
                const { name, kind } = readImport(sr);
                if (kind === 0x05) imported.set(name, instances++);
            }
        } else if (s.id === SECTION.instance) {
            instances += sr.u32();
        } else if (s.id === SECTION.alias) {
            for (let n = sr.u32(); n > 0; n -= 1) if (readAlias(sr).sort === SORT_INSTANCE) instances += 1;
        } else if (s.id === SECTION.export) {
            for (let n = sr.u32(); n > 0; n -= 1) if (readExport(sr).sort === SORT_INSTANCE) instances += 1;
        }
    }
    const isShim = (name) => SHIMMED.some((p) => name.startsWith(`${SHIM}:${p}/`));
    const real = (name) => `wasi:${name.slice(SHIM.length + 1)}`;
    // shim:io/* instances that the component also imports under the real name are merged
    // into that import; the others (shim:http/*) are renamed.
    const redirect = new Map(); // shim instance index -> real instance index
    for (const [name, index] of imported) {
        if (isShim(name) && imported.has(real(name))) {
            redirect.set(index, imported.get(real(name)));
        }
    }
    const remap = (index) => redirect.get(index) ?? index;

    // Second pass: rewrite the import, alias and instance sections.
    const out = [preamble];
    for (const s of sections) {
        const raw = bytes.subarray(s.start, s.end);
        const sr = new Reader(bytes, s.start, s.end);
        if (s.id === SECTION.import) {
            // Split around merged imports: each becomes an empty instance in place.
            let run = [];
            const flush = () => {
                if (run.length > 0) out.push(section(SECTION.import, run.length, run));
                run = [];
            };
            for (let n = sr.u32(); n > 0; n -= 1) {
                const start = sr.pos;
                const { name, kind, tag, descStart } = readImport(sr);
                if (kind === 0x05 && isShim(name) && redirect.has(imported.get(name))) {
                    flush();
                    out.push(section(SECTION.instance, 1, [[0x01, 0x00]])); // (instance) with no exports
                } else if (isShim(name)) {
                    run.push(concat([[tag], str(real(name)), bytes.subarray(descStart, sr.pos)]));
                } else {
                    run.push(sr.bytesUpTo(start));
                }
            }
            flush();
        } else if (s.id === SECTION.alias) {
            const items = [];
            let count = 0;
            for (let n = sr.u32(); n > 0; n -= 1, count += 1) {
                const start = sr.pos;
                const a = readAlias(sr);
                if (a.target === 0x00 && redirect.has(a.instance)) {
                    items.push(concat([a.sortBytes, [0x00], u32(remap(a.instance)), str(a.name)]));
                } else {
                    items.push(sr.bytesUpTo(start));
                }
            }
            out.push(section(SECTION.alias, count, items));
        } else if (s.id === SECTION.instance) {
            const items = [];
            let count = 0;
            for (let n = sr.u32(); n > 0; n -= 1, count += 1) {
                items.push(rewriteInstance(sr, remap));
            }
            out.push(section(SECTION.instance, count, items));
        } else if (s.id === SECTION.export) {
            for (let n = sr.u32(); n > 0; n -= 1) {
                const e = readExport(sr);
                if (e.sort === SORT_INSTANCE && redirect.has(e.index)) {
                    throw new Error('a merged shim instance is exported; not supported');
                }
            }
            out.push(concat([[s.id], u32(raw.length), raw]));
        } else {
            out.push(concat([[s.id], u32(raw.length), raw]));
        }
    }
    const result = concat(out);

    // Check: no top-level import is still named shim:.
    const check = new Reader(result, 8);
    while (!check.done()) {
        const id = check.byte();
        const size = check.u32();
        const end = check.pos + size;
        if (id === SECTION.import) {
            const sr = new Reader(result, check.pos, end);
            for (let n = sr.u32(); n > 0; n -= 1) {
                const { name } = readImport(sr);
                if (name.startsWith(`${SHIM}:`)) throw new Error(`import ${name} left after unshim`);
            }
        }
        check.pos = end;
    }
    return result;
}

/** import ::= name:<importname'> desc:<externdesc>; returns the name and the desc's kind. */
function readImport(r) {
    const tag = r.byte(); // 0x00 (or the older 0x01): a plain name follows
    if (tag !== 0x00 && tag !== 0x01) throw new Error(`import name tag 0x${tag.toString(16)}`);
    const name = r.string();
    const descStart = r.pos;
    const kind = readExternDesc(r);
    return { name, kind, tag, descStart };
}

function readExternDesc(r) {
    const kind = r.byte();
    switch (kind) {
        case 0x00: // core module: 0x11 typeidx
            r.byte();
            r.u32();
            break;
        case 0x01: // func
        case 0x04: // component
        case 0x05: // instance
            r.u32();
            break;
        case 0x03: // type bound: eq typeidx | sub resource
            if (r.byte() === 0x00) r.u32();
            break;
        default:
            throw new Error(`extern desc kind 0x${kind.toString(16)} not supported`);
    }
    return kind;
}

/** sort ::= 0x00 core:sort | 0x01..0x05; returns the sort (core sorts as 0x100 + byte) and its bytes. */
function readSort(r) {
    const start = r.pos;
    const b = r.byte();
    const sort = b === 0x00 ? 0x100 + r.byte() : b;
    return { sort, sortBytes: r.bytesUpTo(start) };
}

function readAlias(r) {
    const { sort, sortBytes } = readSort(r);
    const target = r.byte();
    if (target === 0x00 || target === 0x01) {
        const instance = r.u32();
        const name = r.string();
        return { sort, sortBytes, target, instance, name };
    }
    if (target === 0x02) {
        r.u32();
        r.u32();
        return { sort, sortBytes, target };
    }
    throw new Error(`alias target 0x${target.toString(16)}`);
}

function readExport(r) {
    const tag = r.byte();
    if (tag !== 0x00 && tag !== 0x01) throw new Error(`export name tag 0x${tag.toString(16)}`);
    r.string();
    const { sort } = readSort(r);
    const index = r.u32();
    if (r.byte() === 0x01) readExternDesc(r); // an optional ascribed type
    return { sort, index };
}

/** instance ::= 0x00 componentidx vec(arg) | 0x01 vec(inlineexport), instance refs remapped. */
function rewriteInstance(r, remap) {
    const kind = r.byte();
    const parts = [[kind]];
    if (kind === 0x00) {
        parts.push(u32(r.u32()));
        const n = r.u32();
        parts.push(u32(n));
        for (let i = 0; i < n; i += 1) {
            const name = r.string();
            const { sort, sortBytes } = readSort(r);
            const index = r.u32();
            parts.push(str(name), sortBytes, u32(sort === SORT_INSTANCE ? remap(index) : index));
        }
    } else if (kind === 0x01 && r.u32() === 0) {
        parts.push([0x00]); // (instance) with no exports
    } else {
        throw new Error(`instance kind 0x${kind.toString(16)} (or inline exports) not supported`);
    }
    return concat(parts);
}
