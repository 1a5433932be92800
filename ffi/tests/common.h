/* Shared helpers of libtern's C tests: checks that count failures, a UTF-8 validator, and a
 * piece collector for streamed replies. Each test program takes the model path as argv[1]
 * and ends with the line "N passed, M failed". */
#ifndef TERN_TEST_COMMON_H
#define TERN_TEST_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tern.h"

static int checks_passed, checks_failed;

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (cond) {                                                                          \
            checks_passed++;                                                                 \
        } else {                                                                             \
            checks_failed++;                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n  tern_last_error: %s\n", __FILE__,    \
                    __LINE__, #cond, tern_last_error());                                     \
        }                                                                                    \
    } while (0)

/* Runs `call` and checks it returns `want`; prints both names otherwise. */
#define CHECK_STATUS(call, want)                                                             \
    do {                                                                                     \
        TernStatus got_ = (call);                                                            \
        if (got_ == (want)) {                                                                \
            checks_passed++;                                                                 \
        } else {                                                                             \
            checks_failed++;                                                                 \
            fprintf(stderr, "%s:%d: %s\n  returned %s, expected %s\n  tern_last_error: %s\n", \
                    __FILE__, __LINE__, #call, tern_status_name(got_),                       \
                    tern_status_name(want), tern_last_error());                              \
        }                                                                                    \
    } while (0)

#define CHECK_OK(call) CHECK_STATUS(call, TERN_OK)

/* Checks that the last error message contains `needle`. */
#define CHECK_ERROR_MENTIONS(needle)                                                         \
    do {                                                                                     \
        if (strstr(tern_last_error(), (needle))) {                                           \
            checks_passed++;                                                                 \
        } else {                                                                             \
            checks_failed++;                                                                 \
            fprintf(stderr, "%s:%d: last error does not mention \"%s\": %s\n", __FILE__,     \
                    __LINE__, (needle), tern_last_error());                                  \
        }                                                                                    \
    } while (0)

/* Prints the summary line and gives the exit code. */
static inline int finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, checks_passed, checks_failed);
    return checks_failed == 0 && checks_passed > 0 ? 0 : 1;
}

/* True when s[0..len) is well-formed UTF-8 (no overlongs, surrogates or values past
 * U+10FFFF), written here from the Unicode definition rather than taken from the library. */
static inline int utf8_valid(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned c = p[i];
        size_t n;
        unsigned cp, min;
        if (c < 0x80) { i++; continue; }
        else if ((c & 0xE0) == 0xC0) { n = 1; cp = c & 0x1F; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { n = 2; cp = c & 0x0F; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { n = 3; cp = c & 0x07; min = 0x10000; }
        else return 0;
        if (i + n >= len) return 0; /* runs past the end */
        for (size_t k = 1; k <= n; k++) {
            if ((p[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += n + 1;
    }
    return 1;
}

/* Collects the pieces of a streamed reply. */
typedef struct {
    char text[16384];
    size_t len;
    int pieces;
    int bad_pieces;   /* not UTF-8 on their own, or len disagreeing with the NUL */
    int stop_after;   /* return false at this piece (0: never) */
} Collector;

static inline bool collect(const char *piece, size_t len, void *user_data) {
    Collector *c = (Collector *)user_data;
    c->pieces++;
    if (!utf8_valid(piece, len) || strlen(piece) != len || len == 0) c->bad_pieces++;
    if (c->len + len < sizeof c->text) {
        memcpy(c->text + c->len, piece, len);
        c->len += len;
        c->text[c->len] = 0;
    }
    return c->stop_after == 0 || c->pieces < c->stop_after;
}

static inline TernStats stats_of(const TernSession *s) {
    TernStats st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    if (tern_session_stats(s, &st) != TERN_OK) st.size = 0;
    return st;
}

/* Session parameters used by most tests: greedy, a small f16 cache (whatever the board's
 * defaults), short replies. */
static inline TernSessionParams *small_params(uint32_t max_tokens) {
    TernSessionParams *p = NULL;
    if (tern_session_params_new(&p) != TERN_OK) return NULL;
    tern_session_params_set_sinks(p, 4);
    tern_session_params_set_window(p, 252);
    tern_session_params_set_kv_type(p, TERN_KV_F16);
    tern_session_params_set_max_tokens(p, max_tokens);
    return p;
}

static inline TernModel *load_model(const char *path, uint32_t threads) {
    TernModelParams *mp = NULL;
    TernModel *m = NULL;
    if (tern_model_params_new(&mp) != TERN_OK) return NULL;
    tern_model_params_set_threads(mp, threads);
    if (tern_model_load(path, mp, &m) != TERN_OK)
        fprintf(stderr, "loading %s failed: %s\n", path, tern_last_error());
    tern_model_params_free(mp);
    return m;
}

#endif
