/*
 * json.c: see json.h. A recursive-descent validator that decodes only the
 * top-level members the caller asked for.
 */
#include "json.h"

#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 128 /* same nesting limit as serde_json */

typedef struct {
    const uint8_t *p;   /* next byte to read */
    const uint8_t *end; /* one past the last byte */
    char *arena;        /* decoded strings go here */
    size_t used;        /* bytes of the arena kept for results */
} parser;

static void skip_ws(parser *ps) {
    while (ps->p < ps->end &&
           (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static bool expect_literal(parser *ps, const char *lit) {
    size_t n = strlen(lit);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, lit, n) != 0) return false;
    ps->p += n;
    return true;
}

static int hex_digit(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Reads the 4 hex digits of a \u escape (the "\u" already consumed). */
static bool read_hex4(parser *ps, uint32_t *out) {
    if (ps->end - ps->p < 4) return false;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int d = hex_digit(ps->p[i]);
        if (d < 0) return false;
        v = (v << 4) | (uint32_t)d;
    }
    ps->p += 4;
    *out = v;
    return true;
}

/* Length of the well-formed UTF-8 sequence at p (1..4), or 0 if ill-formed. */
static size_t utf8_len(const uint8_t *p, const uint8_t *end) {
    uint8_t c = p[0];
    size_t n;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c == 0xE0) { n = 3; lo = 0xA0; }
    else if (c == 0xED) { n = 3; hi = 0x9F; } /* no UTF-16 surrogates */
    else if (c >= 0xE1 && c <= 0xEF) n = 3;
    else if (c == 0xF0) { n = 4; lo = 0x90; }
    else if (c == 0xF4) { n = 4; hi = 0x8F; } /* nothing above U+10FFFF */
    else if (c >= 0xF1 && c <= 0xF3) n = 4;
    else return 0;
    if ((size_t)(end - p) < n) return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    return n;
}

static size_t utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/*
 * Parses a string (at its opening quote) and decodes it into the free part of
 * the arena, NUL-terminated. The caller keeps it by adding `*len + 1` to
 * `ps->used`; otherwise the next string overwrites it. Decoded text is never
 * longer than its quoted source, so an arena of `len + 1` bytes always fits.
 */
static bool parse_string(parser *ps, const char **str, size_t *len) {
    char *out = ps->arena + ps->used;
    size_t n = 0;
    ps->p++; /* opening quote */
    for (;;) {
        if (ps->p >= ps->end) return false;
        uint8_t c = *ps->p;
        if (c == '"') {
            ps->p++;
            break;
        }
        if (c < 0x20) return false; /* raw control characters must be escaped */
        if (c != '\\') {
            size_t k = utf8_len(ps->p, ps->end);
            if (k == 0) return false;
            memcpy(out + n, ps->p, k);
            n += k;
            ps->p += k;
            continue;
        }
        ps->p++; /* backslash */
        if (ps->p >= ps->end) return false;
        c = *ps->p++;
        switch (c) {
        case '"': out[n++] = '"'; break;
        case '\\': out[n++] = '\\'; break;
        case '/': out[n++] = '/'; break;
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'n': out[n++] = '\n'; break;
        case 'r': out[n++] = '\r'; break;
        case 't': out[n++] = '\t'; break;
        case 'u': {
            uint32_t cp;
            if (!read_hex4(ps, &cp)) return false;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return false; /* lone low surrogate */
            if (cp >= 0xD800 && cp <= 0xDBFF) {             /* needs its low half */
                uint32_t low;
                if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u') return false;
                ps->p += 2;
                if (!read_hex4(ps, &low) || low < 0xDC00 || low > 0xDFFF) return false;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            }
            n += utf8_encode(cp, out + n);
            break;
        }
        default:
            return false;
        }
    }
    out[n] = '\0';
    *str = out;
    *len = n;
    return true;
}

static bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

/* Parses a number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool parse_number(parser *ps, double *out) {
    const uint8_t *start = ps->p;
    if (ps->p < ps->end && *ps->p == '-') ps->p++;
    if (ps->p >= ps->end || !is_digit(*ps->p)) return false;
    if (*ps->p == '0') ps->p++;
    else while (ps->p < ps->end && is_digit(*ps->p)) ps->p++;
    if (ps->p < ps->end && *ps->p == '.') {
        ps->p++;
        if (ps->p >= ps->end || !is_digit(*ps->p)) return false;
        while (ps->p < ps->end && is_digit(*ps->p)) ps->p++;
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-')) ps->p++;
        if (ps->p >= ps->end || !is_digit(*ps->p)) return false;
        while (ps->p < ps->end && is_digit(*ps->p)) ps->p++;
    }
    /* strtod needs a NUL-terminated copy: the record bytes are not terminated. */
    size_t n = (size_t)(ps->p - start);
    char small[64];
    char *text = n < sizeof small ? small : malloc(n + 1);
    if (text == NULL) return false;
    memcpy(text, start, n);
    text[n] = '\0';
    *out = strtod(text, NULL);
    if (text != small) free(text);
    return true;
}

static bool parse_value(parser *ps, int depth, json_value *out);

/*
 * Parses an object (at its '{'). At the top level `fields` receives the
 * members asked for; nested objects pass NULL and are only validated.
 */
static bool parse_object(parser *ps, int depth, json_field *fields, size_t nfields) {
    if (depth > MAX_DEPTH) return false;
    ps->p++; /* '{' */
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
        return true;
    }
    for (;;) {
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != '"') return false;
        const char *key;
        size_t key_len;
        if (!parse_string(ps, &key, &key_len)) return false;

        /* Which requested fields does this member fill? (Usually none.) */
        uint64_t wanted = 0;
        for (size_t i = 0; i < nfields && i < 64; i++)
            if (fields[i].key_len == key_len && memcmp(fields[i].key, key, key_len) == 0)
                wanted |= (uint64_t)1 << i;

        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != ':') return false;
        ps->p++;
        skip_ws(ps);

        json_value v;
        if (!parse_value(ps, depth, &v)) return false;
        if (wanted) {
            if (v.kind == JSON_STRING) ps->used += v.str_len + 1; /* keep it */
            for (size_t i = 0; i < nfields && i < 64; i++)
                if (wanted & ((uint64_t)1 << i)) fields[i].value = v;
        }

        skip_ws(ps);
        if (ps->p >= ps->end) return false;
        if (*ps->p == ',') {
            ps->p++;
            continue;
        }
        if (*ps->p == '}') {
            ps->p++;
            return true;
        }
        return false;
    }
}

static bool parse_array(parser *ps, int depth) {
    if (depth > MAX_DEPTH) return false;
    ps->p++; /* '[' */
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ']') {
        ps->p++;
        return true;
    }
    for (;;) {
        json_value ignored;
        skip_ws(ps);
        if (!parse_value(ps, depth, &ignored)) return false;
        skip_ws(ps);
        if (ps->p >= ps->end) return false;
        if (*ps->p == ',') {
            ps->p++;
            continue;
        }
        if (*ps->p == ']') {
            ps->p++;
            return true;
        }
        return false;
    }
}

/* Parses any value at ps->p (whitespace already skipped). */
static bool parse_value(parser *ps, int depth, json_value *out) {
    memset(out, 0, sizeof *out);
    if (ps->p >= ps->end) return false;
    switch (*ps->p) {
    case '{':
        out->kind = JSON_OTHER;
        return parse_object(ps, depth + 1, NULL, 0);
    case '[':
        out->kind = JSON_OTHER;
        return parse_array(ps, depth + 1);
    case '"':
        out->kind = JSON_STRING;
        return parse_string(ps, &out->str, &out->str_len);
    case 't':
        out->kind = JSON_OTHER;
        return expect_literal(ps, "true");
    case 'f':
        out->kind = JSON_OTHER;
        return expect_literal(ps, "false");
    case 'n':
        out->kind = JSON_OTHER;
        return expect_literal(ps, "null");
    default:
        out->kind = JSON_NUMBER;
        return parse_number(ps, &out->num);
    }
}

bool json_extract(const uint8_t *data, size_t len, json_field *fields, size_t nfields,
                  char *arena) {
    parser ps = {.p = data, .end = data + len, .arena = arena, .used = 0};
    for (size_t i = 0; i < nfields; i++) memset(&fields[i].value, 0, sizeof fields[i].value);
    skip_ws(&ps);
    if (ps.p >= ps.end || *ps.p != '{') return false;
    if (!parse_object(&ps, 1, fields, nfields)) return false;
    skip_ws(&ps);
    return ps.p == ps.end; /* nothing may follow the object */
}
