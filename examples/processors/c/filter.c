/*
 * filter.c: shoal's example record processor in C.
 *
 * It implements the `processor` world of wit/processor.wit through the C
 * bindings that `wit-bindgen c` generated into gen/ (processor.h), and does
 * the work every example processor does (docs/CONFORMANCE.md): count the JSON
 * records whose field `<field>` equals `<value>`, sum their `amount`, log a
 * summary per batch, and react to the conformance suite's test records.
 *
 * Memory rules of the generated bindings (the part that is easy to get wrong):
 *   - Arguments of an export (`shard`, `settings`, `batch`) belong to us: the
 *     host allocated them in our memory through `cabi_realloc`. Free them with
 *     the generated `*_free` functions once done, or every call leaks.
 *   - Strings we *return* (an error message, a position's sequence number) must
 *     be heap copies (`processor_string_dup*`): after the host has read the
 *     result, the generated `cabi_post_*` function calls free() on them. Never
 *     return a string literal or a pointer into an argument we freed.
 *   - Strings we *pass* to an import (`processor_log`) stay ours; the host
 *     copies them during the call.
 *   - Component-model strings are (ptr, len) and not NUL-terminated: print them
 *     with "%.*s", compare them with a length.
 *
 * Build: examples/processors/c/build.sh (see README.md).
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "processor.h" /* generated: gen/processor.h */

/* ----------------------------------------------------------------------------------- */
/* Instance state. The host creates one instance (one linear memory) per shard, so     */
/* plain globals are per shard. After a trap the instance is thrown away and a new one */
/* is initialized: the state starts over.                                             */
/* ----------------------------------------------------------------------------------- */

typedef struct {
    char *ptr; /* heap copy, NUL-terminated */
    size_t len;
} text;

static text g_field; /* setting `field`, default "type" */
static text g_value; /* setting `value`, default "purchase" */
static double g_total; /* running sum of `amount` since initialize */

/* ----------------------------------------------------------------------------------- */
/* Small helpers                                                                        */
/* ----------------------------------------------------------------------------------- */

/* Formats a line and hands it to the host's `log` import. */
__attribute__((format(printf, 2, 3)))
static void log_line(processor_log_level_t level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    char *buf = malloc((size_t)n + 1);
    if (buf == NULL) abort();
    va_start(ap, fmt);
    vsnprintf(buf, (size_t)n + 1, fmt, ap);
    va_end(ap);
    processor_string_t message = {(uint8_t *)buf, (size_t)n};
    processor_log(level, &message); /* borrowed by the host for the call only */
    free(buf);
}

/* printf arguments for a component-model string: printf("%.*s", STR(s)). */
#define STR(s) (int)(s).len, (const char *)(s).ptr

static bool str_eq(const processor_string_t *s, const char *lit) {
    size_t n = strlen(lit);
    return s->len == n && memcmp(s->ptr, lit, n) == 0;
}

static text text_copy(const void *ptr, size_t len) {
    text t = {malloc(len + 1), len};
    if (t.ptr == NULL) abort();
    memcpy(t.ptr, ptr, len);
    t.ptr[len] = '\0';
    return t;
}

/* Whether a decoded JSON string is exactly `lit` (it may hold NULs: compare lengths). */
static bool is(const json_value *v, const char *lit) {
    return v->kind == JSON_STRING && v->str_len == strlen(lit) && memcmp(v->str, lit, v->str_len) == 0;
}

/* An error result. Its message is a heap copy: the bindings free it after the return. */
static void set_error(processor_process_error_t *err, uint8_t tag, const char *message) {
    err->tag = tag;
    if (tag == SHOAL_PROCESSOR_TYPES_PROCESS_ERROR_RETRY)
        processor_string_dup(&err->val.retry, message);
    else
        processor_string_dup(&err->val.fatal, message);
}

/* A checkpoint position naming `rec`; the sequence number is copied for the same reason. */
static processor_position_t position_of(const processor_kinesis_record_t *rec) {
    processor_position_t pos;
    processor_string_dup_n(&pos.sequence_number, (const char *)rec->sequence_number.ptr,
                           rec->sequence_number.len);
    pos.sub_sequence_number = rec->sub_sequence_number;
    return pos;
}

/* The total as an integer when it is one, else the shortest "%g" that reads back exactly. */
static void format_total(double total, char *buf, size_t size) {
    if (total == 0) { /* also folds -0 into 0 */
        snprintf(buf, size, "0");
        return;
    }
    if (isfinite(total) && total == trunc(total)) {
        snprintf(buf, size, "%.0f", total);
        return;
    }
    for (int precision = 1; precision <= 17; precision++) {
        snprintf(buf, size, "%.*g", precision, total);
        if (strtod(buf, NULL) == total) return;
    }
}

/* ----------------------------------------------------------------------------------- */
/* initialize                                                                           */
/* ----------------------------------------------------------------------------------- */

bool exports_processor_initialize(processor_shard_info_t *shard,
                                  processor_list_tuple2_string_string_t *settings,
                                  processor_process_error_t *err) {
    const char *field = "type", *value = "purchase";
    size_t field_len = strlen(field), value_len = strlen(value);
    for (size_t i = 0; i < settings->len; i++) {
        const processor_tuple2_string_string_t *kv = &settings->ptr[i];
        if (str_eq(&kv->f0, "field")) {
            field = (const char *)kv->f1.ptr;
            field_len = kv->f1.len;
        } else if (str_eq(&kv->f0, "value")) {
            value = (const char *)kv->f1.ptr;
            value_len = kv->f1.len;
        }
    }
    /* Copy what we keep before freeing the arguments it points into. */
    free(g_field.ptr);
    free(g_value.ptr);
    g_field = text_copy(field, field_len);
    g_value = text_copy(value, value_len);
    g_total = 0;

    log_line(SHOAL_PROCESSOR_TYPES_LOG_LEVEL_INFO, "initialize %.*s field=%s value=%s",
             STR(shard->shard_id), g_field.ptr, g_value.ptr);

    processor_shard_info_free(shard);
    processor_list_tuple2_string_string_free(settings);
    return true; /* ok; on failure: set_error(err, ...) and return false */
}

/* ----------------------------------------------------------------------------------- */
/* process                                                                              */
/* ----------------------------------------------------------------------------------- */

/* What the loop in `process` does after a record. */
typedef enum {
    NEXT_RECORD,   /* go on with the batch */
    RETURN_OK,     /* stop: return the directive in `ret` */
    RETURN_ERROR,  /* stop: return the error in `err` */
} step;

/* The top-level members a record may carry, in the order of `fields` below. */
enum { F_MATCH, F_AMOUNT, F_TEST, F_PATH, F_NAME, F_COUNT };

/* A test record of the conformance suite: {"shoal_test": "<command>", ...}. */
static step run_test_command(const processor_kinesis_record_t *rec, const json_field *fields,
                             processor_checkpoint_directive_t *ret,
                             processor_process_error_t *err) {
    const json_value *cmd = &fields[F_TEST].value;

    if (is(cmd, "retry")) {
        set_error(err, SHOAL_PROCESSOR_TYPES_PROCESS_ERROR_RETRY, "conformance retry");
        return RETURN_ERROR;
    }
    if (is(cmd, "fatal")) {
        set_error(err, SHOAL_PROCESSOR_TYPES_PROCESS_ERROR_FATAL, "conformance fatal");
        return RETURN_ERROR;
    }
    if (is(cmd, "trap")) {
        abort(); /* wasi-libc: compiles to `unreachable`, which the host sees as a trap */
    }
    if (is(cmd, "at")) {
        ret->tag = SHOAL_PROCESSOR_TYPES_CHECKPOINT_DIRECTIVE_AT;
        ret->val.at = position_of(rec);
        return RETURN_OK;
    }
    if (is(cmd, "rewind")) {
        ret->tag = SHOAL_PROCESSOR_TYPES_CHECKPOINT_DIRECTIVE_REWIND;
        ret->val.rewind = position_of(rec);
        return RETURN_OK;
    }
    if (is(cmd, "none")) {
        ret->tag = SHOAL_PROCESSOR_TYPES_CHECKPOINT_DIRECTIVE_NONE;
        return RETURN_OK;
    }
    if (is(cmd, "read-file")) {
        /* Files are reachable only under the directories the host's config grants. */
        const char *path = fields[F_PATH].value.kind == JSON_STRING ? fields[F_PATH].value.str : "";
        bool allowed = false;
        FILE *f = fopen(path, "rb");
        if (f != NULL) {
            char buf[256];
            size_t n = fread(buf, 1, sizeof buf, f);
            (void)n;
            allowed = !ferror(f);
            fclose(f);
        }
        log_line(SHOAL_PROCESSOR_TYPES_LOG_LEVEL_INFO, "read-file %s: %s", path,
                 allowed ? "allowed" : "denied");
        return NEXT_RECORD;
    }
    if (is(cmd, "env")) {
        /* The guest sees only the variables the host's config passes in. */
        const char *name = fields[F_NAME].value.kind == JSON_STRING ? fields[F_NAME].value.str : "";
        log_line(SHOAL_PROCESSOR_TYPES_LOG_LEVEL_INFO, "env %s: %s", name,
                 getenv(name) != NULL ? "set" : "unset");
        return NEXT_RECORD;
    }
    if (is(cmd, "lease-token")) {
        /* The fencing token of the lease this instance runs under; the host allocated
           `owner` with our cabi_realloc (malloc), so it is ours to free. */
        processor_fencing_token_t token;
        processor_lease_token(&token);
        log_line(SHOAL_PROCESSOR_TYPES_LOG_LEVEL_INFO, "lease-token epoch=%" PRIu64 " owner=%.*s",
                 token.epoch, STR(token.owner));
        processor_fencing_token_free(&token);
        return NEXT_RECORD;
    }
    log_line(SHOAL_PROCESSOR_TYPES_LOG_LEVEL_WARN, "unknown test command %s in record %.*s", cmd->str,
             STR(rec->sequence_number));
    return NEXT_RECORD;
}

bool exports_processor_process(processor_shard_info_t *shard, processor_batch_t *batch,
                               processor_checkpoint_directive_t *ret,
                               processor_process_error_t *err) {
    size_t matched = 0, skipped = 0;
    step outcome = NEXT_RECORD;

    for (size_t i = 0; i < batch->records.len && outcome == NEXT_RECORD; i++) {
        const processor_kinesis_record_t *rec = &batch->records.ptr[i];
        json_field fields[F_COUNT] = {
            [F_MATCH] = {.key = g_field.ptr, .key_len = g_field.len},
            [F_AMOUNT] = {.key = "amount", .key_len = 6},
            [F_TEST] = {.key = "shoal_test", .key_len = 10},
            [F_PATH] = {.key = "path", .key_len = 4},
            [F_NAME] = {.key = "name", .key_len = 4},
        };
        /* Decoded strings live in `arena` until the end of this iteration. */
        char *arena = malloc(rec->data.len + 1);
        if (arena == NULL) abort();

        if (!json_extract(rec->data.ptr, rec->data.len, fields, F_COUNT, arena)) {
            log_line(SHOAL_PROCESSOR_TYPES_LOG_LEVEL_WARN, "skip %.*s: not a JSON object",
                     STR(rec->sequence_number));
            skipped++;
        } else if (fields[F_TEST].value.kind == JSON_STRING) {
            outcome = run_test_command(rec, fields, ret, err);
        } else {
            const json_value *v = &fields[F_MATCH].value;
            if (v->kind == JSON_STRING && v->str_len == g_value.len &&
                memcmp(v->str, g_value.ptr, g_value.len) == 0) {
                matched++;
                if (fields[F_AMOUNT].value.kind == JSON_NUMBER) g_total += fields[F_AMOUNT].value.num;
            }
        }
        free(arena);
    }

    if (outcome == NEXT_RECORD) {
        char total[400]; /* "%.0f" of a huge double is up to ~310 digits */
        format_total(g_total, total, sizeof total);
        log_line(SHOAL_PROCESSOR_TYPES_LOG_LEVEL_INFO,
                 "batch %zu records %zu matched %zu skipped total %s", batch->records.len,
                 matched, skipped, total);
        ret->tag = SHOAL_PROCESSOR_TYPES_CHECKPOINT_DIRECTIVE_BATCH_END;
        outcome = RETURN_OK;
    }

    /* Everything we return was copied out of the batch above, so it can go now. */
    processor_shard_info_free(shard);
    processor_batch_free(batch);
    return outcome == RETURN_OK; /* true: `ret` is the result; false: `err` is */
}

/* ----------------------------------------------------------------------------------- */
/* shutdown                                                                             */
/* ----------------------------------------------------------------------------------- */

void exports_processor_shutdown(processor_shard_info_t *shard,
                                processor_shutdown_reason_t reason) {
    static const char *const names[] = {
        [SHOAL_PROCESSOR_TYPES_SHUTDOWN_REASON_SHARD_END] = "shard-end",
        [SHOAL_PROCESSOR_TYPES_SHUTDOWN_REASON_LEASE_LOST] = "lease-lost",
        [SHOAL_PROCESSOR_TYPES_SHUTDOWN_REASON_REQUESTED] = "requested",
    };
    const char *why = reason < sizeof names / sizeof names[0] ? names[reason] : "unknown";
    log_line(SHOAL_PROCESSOR_TYPES_LOG_LEVEL_INFO, "shutdown %.*s %s", STR(shard->shard_id), why);
    processor_shard_info_free(shard);
}
