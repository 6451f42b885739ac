/* `{{name}}`: a shoal record processor in C.
 *
 * shoal calls `exports_processor_initialize` once per shard instance,
 * `exports_processor_process` for every batch, and `exports_processor_shutdown`
 * when the instance stops serving the shard. The types and the `processor_log`
 * import come from gen/processor.h, generated from wit/ by wit-bindgen.
 *
 * Ownership: arguments are ours to free (the *_free functions below); strings
 * we pass to `processor_log` stay ours. To fail a batch, set `err->tag` to
 * SHOAL_PROCESSOR_TYPES_PROCESS_ERROR_RETRY (the batch comes again) or
 * ..._FATAL (the poison policy) with a message, and return false. abort() or a
 * crash traps the instance: shoal builds a fresh one and retries the batch.
 *
 * Build with `bash build.sh`; try it with `shoal run --config shoal.toml`. */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "processor.h"

static uint64_t g_records, g_bytes, g_since_report, g_report_every = 100;

/* Formats a line and hands it to the host's `log` import. */
__attribute__((format(printf, 2, 3)))
static void log_line(processor_log_level_t level, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    processor_string_t message = {(uint8_t *)buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1};
    processor_log(level, &message);
}

#define STR(s) (int)(s).len, (const char *)(s).ptr

bool exports_processor_initialize(processor_shard_info_t *shard,
                                  processor_list_tuple2_string_string_t *settings,
                                  processor_process_error_t *err) {
    (void)err;
    for (size_t i = 0; i < settings->len; i++) {
        const processor_tuple2_string_string_t *kv = &settings->ptr[i];
        if (kv->f0.len == 12 && memcmp(kv->f0.ptr, "report_every", 12) == 0) {
            char text[32] = {0};
            memcpy(text, kv->f1.ptr, kv->f1.len < sizeof text - 1 ? kv->f1.len : sizeof text - 1);
            unsigned long long every = strtoull(text, NULL, 10);
            g_report_every = every > 0 ? every : 1;
        }
    }
    log_line(SHOAL_PROCESSOR_TYPES_LOG_LEVEL_INFO, "%.*s: starting, reporting every %llu records",
             STR(shard->shard_id), (unsigned long long)g_report_every);
    processor_shard_info_free(shard);
    processor_list_tuple2_string_string_free(settings);
    return true;
}

bool exports_processor_process(processor_shard_info_t *shard, processor_batch_t *batch,
                               processor_checkpoint_directive_t *ret,
                               processor_process_error_t *err) {
    (void)err;
    for (size_t i = 0; i < batch->records.len; i++) {
        /* Deliver batch->records.ptr[i].data to its destination here. */
        g_records++;
        g_bytes += batch->records.ptr[i].data.len;
        g_since_report++;
    }
    if (g_since_report >= g_report_every) {
        log_line(SHOAL_PROCESSOR_TYPES_LOG_LEVEL_INFO, "%.*s: %llu records, %llu bytes so far",
                 STR(shard->shard_id), (unsigned long long)g_records, (unsigned long long)g_bytes);
        g_since_report = 0;
    }
    /* Everything up to the batch's last record is done: checkpoint it. */
    ret->tag = SHOAL_PROCESSOR_TYPES_CHECKPOINT_DIRECTIVE_BATCH_END;
    processor_shard_info_free(shard);
    processor_batch_free(batch);
    return true;
}

void exports_processor_shutdown(processor_shard_info_t *shard,
                                processor_shutdown_reason_t reason) {
    static const char *const names[] = {
        [SHOAL_PROCESSOR_TYPES_SHUTDOWN_REASON_SHARD_END] = "shard end",
        [SHOAL_PROCESSOR_TYPES_SHUTDOWN_REASON_LEASE_LOST] = "lease lost",
        [SHOAL_PROCESSOR_TYPES_SHUTDOWN_REASON_REQUESTED] = "shutdown requested",
    };
    const char *why = reason < sizeof names / sizeof names[0] ? names[reason] : "unknown";
    log_line(SHOAL_PROCESSOR_TYPES_LOG_LEVEL_INFO, "%.*s: %s after %llu records",
             STR(shard->shard_id), why, (unsigned long long)g_records);
    processor_shard_info_free(shard);
}
