/*
 * json.h: a deliberately small, self-contained JSON reader for processors.
 *
 * It answers one question well: "is this record one JSON object, and what are
 * the values of these few top-level fields?". It validates the whole document
 * (RFC 8259: strings with escapes and UTF-8, numbers, true/false/null, nested
 * objects and arrays), but only hands back top-level members you ask for;
 * everything else is checked and skipped. No allocation except when a number
 * literal is unusually long, no global state, no dependencies beyond libc.
 */
#ifndef SHOAL_EXAMPLE_JSON_H
#define SHOAL_EXAMPLE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    JSON_ABSENT = 0, /* the member is not in the object */
    JSON_STRING,     /* `str` / `str_len` hold the decoded text */
    JSON_NUMBER,     /* `num` holds the value */
    JSON_OTHER,      /* true, false, null, an object or an array */
} json_kind;

typedef struct {
    json_kind kind;
    /* JSON_STRING: decoded UTF-8, NUL-terminated, pointing into the arena.
     * It may contain NUL bytes itself (from "\u0000"): compare with str_len. */
    const char *str;
    size_t str_len;
    double num; /* JSON_NUMBER */
} json_value;

typedef struct {
    const char *key; /* in: the member name to look for (UTF-8) */
    size_t key_len;  /* in */
    json_value value; /* out: the last member with that name wins, as in most JSON libraries */
} json_field;

/*
 * Parse `data[0..len)` as a single JSON document. Returns true if it is valid
 * JSON whose top-level value is an object (whitespace around it is allowed),
 * false otherwise (invalid JSON, invalid UTF-8, nesting deeper than 128, or a
 * valid non-object such as an array or a number).
 *
 * For each entry of `fields`, `value` is set from the top-level member with
 * that name. Decoded strings are written into `arena`, which must have room
 * for at least `len + 1` bytes and must outlive the use of the results. When
 * false is returned, the contents of `fields` are unspecified.
 */
bool json_extract(const uint8_t *data, size_t len, json_field *fields, size_t nfields,
                  char *arena);

#endif
