/* Every error path: NULL pointers, invalid UTF-8, missing and corrupt model files, bad
 * values, closed and foreign handles, a busy session. Each is a status code and a message
 * naming what is wrong, never a crash; outputs are NULL after a failure. */
#include <pthread.h>
#include <unistd.h>

#include "common.h"

static const char *BAD_UTF8 = "caf\xc3"; /* a 2-byte character cut after its first byte */

static int write_bytes(const char *path, const char *bytes, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(bytes, 1, len, f);
    return fclose(f) == 0;
}

static int copy_prefix(const char *from, const char *to, size_t limit) {
    FILE *in = fopen(from, "rb");
    if (!in) return 0;
    char *buf = malloc(limit);
    size_t n = fread(buf, 1, limit, in);
    fclose(in);
    int ok = write_bytes(to, buf, n);
    free(buf);
    return ok;
}

/* Calls into the session from its own piece callback: the session is busy. */
typedef struct {
    TernSession *session;
    TernStatus inner[3];
    int calls;
} Reentry;

static bool reenter(const char *piece, size_t len, void *user_data) {
    (void)piece;
    (void)len;
    Reentry *r = (Reentry *)user_data;
    if (r->calls++ == 0) {
        r->inner[0] = tern_session_generate(r->session, NULL, NULL, NULL);
        r->inner[1] = tern_session_add_message(r->session, "user", "hi");
        TernStats st = {.size = sizeof st};
        r->inner[2] = tern_session_stats(r->session, &st); /* stats never wait */
    }
    return r->calls < 3;
}

static void *fresh_thread_error(void *arg) {
    *(int *)arg = strcmp(tern_last_error(), "") == 0;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
        return 2;
    }
    char dir[] = "/tmp/tern-ffi-errors-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char garbage[256], truncated[256], empty[256];
    snprintf(garbage, sizeof garbage, "%s/garbage.gguf", dir);
    snprintf(truncated, sizeof truncated, "%s/truncated.gguf", dir);
    snprintf(empty, sizeof empty, "%s/empty.gguf", dir);

    /* Names of statuses, and the message on a thread where nothing failed. */
    CHECK(strcmp(tern_status_name(TERN_ERR_IO), "TERN_ERR_IO") == 0);
    CHECK(strcmp(tern_status_name(99), "TERN_UNKNOWN_STATUS") == 0);
    int fresh_ok = 0;
    pthread_t t;
    pthread_create(&t, NULL, fresh_thread_error, &fresh_ok);
    pthread_join(t, NULL);
    CHECK(fresh_ok);

    /* Model parameters. */
    CHECK_STATUS(tern_model_params_new(NULL), TERN_ERR_NULL_POINTER);
    CHECK_ERROR_MENTIONS("tern_model_params_new: `out` is NULL");
    TernModelParams *mp = NULL;
    CHECK_OK(tern_model_params_new(&mp));
    CHECK_STATUS(tern_model_params_set_threads(mp, 100000), TERN_ERR_INVALID_ARGUMENT);
    CHECK_ERROR_MENTIONS("threads");
    CHECK_STATUS(tern_model_params_set_threads(NULL, 1), TERN_ERR_NULL_POINTER);
    CHECK_STATUS(tern_model_params_set_board(mp, NULL), TERN_ERR_NULL_POINTER);
    CHECK_STATUS(tern_model_params_set_board(mp, ""), TERN_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tern_model_params_set_board(mp, "toaster"), TERN_ERR_INVALID_ARGUMENT);
    CHECK_ERROR_MENTIONS("unknown board `toaster` (known: auto, ");
    CHECK_ERROR_MENTIONS("rpi4");
    CHECK_OK(tern_model_params_set_board(mp, "rpi4"));
    CHECK_STATUS(tern_model_params_set_board(mp, BAD_UTF8), TERN_ERR_INVALID_UTF8);
    CHECK_OK(tern_model_params_set_board(mp, "auto"));
    CHECK_OK(tern_model_params_set_threads(mp, 2));

    /* Loading: NULLs, bad UTF-8, a missing file, corrupt files. `out` is NULL after. */
    TernModel *m = (TernModel *)0x10;
    CHECK_STATUS(tern_model_load(argv[1], mp, NULL), TERN_ERR_NULL_POINTER);
    CHECK_STATUS(tern_model_load(NULL, mp, &m), TERN_ERR_NULL_POINTER);
    CHECK(m == NULL);
    CHECK_ERROR_MENTIONS("`path` is NULL");
    m = (TernModel *)0x10;
    CHECK_STATUS(tern_model_load(BAD_UTF8, mp, &m), TERN_ERR_INVALID_UTF8);
    CHECK_ERROR_MENTIONS("`path` is not valid UTF-8");
    CHECK(m == NULL);
    CHECK_STATUS(tern_model_load("/nonexistent/model.gguf", mp, &m), TERN_ERR_IO);
    CHECK_ERROR_MENTIONS("/nonexistent/model.gguf");
    CHECK_STATUS(tern_model_load(dir, mp, &m), TERN_ERR_IO); /* a directory */
    CHECK(write_bytes(garbage, "this is not a GGUF file at all, just text", 41));
    CHECK_STATUS(tern_model_load(garbage, mp, &m), TERN_ERR_MODEL);
    CHECK_ERROR_MENTIONS("not a GGUF file");
    CHECK(write_bytes(empty, "", 0));
    CHECK_STATUS(tern_model_load(empty, mp, &m), TERN_ERR_MODEL);
    CHECK(copy_prefix(argv[1], truncated, 1 << 20));
    CHECK_STATUS(tern_model_load(truncated, mp, &m), TERN_ERR_MODEL);
    CHECK_ERROR_MENTIONS("truncated");
    CHECK(m == NULL);
    /* Parameters of the wrong kind. */
    TernSessionParams *sp = NULL;
    CHECK_OK(tern_session_params_new(&sp));
    CHECK_STATUS(tern_model_load(argv[1], (TernModelParams *)sp, &m), TERN_ERR_INVALID_HANDLE);
    CHECK_ERROR_MENTIONS("session parameters handle, not a model parameters handle");

    CHECK_OK(tern_model_load(argv[1], mp, &m));
    CHECK(m != NULL);
    CHECK_OK(tern_model_params_free(mp));
    CHECK_STATUS(tern_model_params_free(mp), TERN_ERR_INVALID_HANDLE);
    CHECK_STATUS(tern_model_params_set_threads(mp, 1), TERN_ERR_INVALID_HANDLE);
    CHECK_OK(tern_model_params_free(NULL));

    /* Session parameters: each setter checks its value, and keeps the old one on failure. */
    CHECK_STATUS(tern_session_params_new(NULL), TERN_ERR_NULL_POINTER);
    CHECK_STATUS(tern_session_params_set_window(sp, 0), TERN_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tern_session_params_set_evict_chunk(sp, 0), TERN_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tern_session_params_set_kv_type(sp, 7), TERN_ERR_INVALID_ARGUMENT);
    CHECK_ERROR_MENTIONS("kv_type 7");
    CHECK_STATUS(tern_session_params_set_top_p(sp, 1.5f), TERN_ERR_INVALID_ARGUMENT);
    CHECK_ERROR_MENTIONS("top_p");
    CHECK_STATUS(tern_session_params_set_min_p(sp, -0.5f), TERN_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tern_session_params_set_temperature(sp, 1.0f / 0.0f), TERN_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tern_session_params_set_repeat_penalty(sp, 0.0f), TERN_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tern_session_params_set_max_tokens(sp, 0), TERN_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tern_session_params_set_system_prompt(sp, BAD_UTF8), TERN_ERR_INVALID_UTF8);
    CHECK_STATUS(tern_session_params_add_stop(sp, NULL), TERN_ERR_NULL_POINTER);
    CHECK_STATUS(tern_session_params_add_stop(sp, ""), TERN_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tern_session_params_set_seed(NULL, 1), TERN_ERR_NULL_POINTER);
    CHECK_STATUS(tern_session_params_set_seed((TernSessionParams *)m, 1), TERN_ERR_INVALID_HANDLE);
    CHECK_ERROR_MENTIONS("is a model handle");
    CHECK_STATUS(tern_set_log_callback(NULL, NULL, 9), TERN_ERR_INVALID_ARGUMENT);

    /* Values only the model can judge are checked when the session is made. */
    TernSession *s = (TernSession *)0x10;
    CHECK_OK(tern_session_params_set_sinks(sp, 4));
    CHECK_OK(tern_session_params_set_window(sp, 9000));
    CHECK_STATUS(tern_session_new(m, sp, &s), TERN_ERR_INVALID_ARGUMENT);
    CHECK_ERROR_MENTIONS("context");
    CHECK(s == NULL);
    CHECK_OK(tern_session_params_set_window(sp, 60));
    CHECK_OK(tern_session_params_set_evict_chunk(sp, 61));
    CHECK_STATUS(tern_session_new(m, sp, &s), TERN_ERR_INVALID_ARGUMENT);
    CHECK_ERROR_MENTIONS("evict_chunk");
    CHECK_OK(tern_session_params_set_evict_chunk(sp, 8));
    CHECK_OK(tern_session_params_set_max_tokens(sp, 6));
    CHECK_STATUS(tern_session_new(m, sp, NULL), TERN_ERR_NULL_POINTER);
    CHECK_STATUS(tern_session_new(NULL, sp, &s), TERN_ERR_NULL_POINTER);
    CHECK_STATUS(tern_session_new((TernModel *)sp, sp, &s), TERN_ERR_INVALID_HANDLE);
    CHECK_STATUS(tern_session_new((TernModel *)0xdead0, sp, &s), TERN_ERR_INVALID_HANDLE);
    CHECK_ERROR_MENTIONS("not a Tern model handle");
    CHECK_OK(tern_session_new(m, sp, &s));
    CHECK_OK(tern_session_params_free(sp));

    /* Session calls: NULL and invalid UTF-8 arguments, a bad role. */
    CHECK_STATUS(tern_session_add_message(s, NULL, "hi"), TERN_ERR_NULL_POINTER);
    CHECK_STATUS(tern_session_add_message(s, "user", NULL), TERN_ERR_NULL_POINTER);
    CHECK_STATUS(tern_session_add_message(s, "robot", "hi"), TERN_ERR_INVALID_ARGUMENT);
    CHECK_ERROR_MENTIONS("robot");
    CHECK_STATUS(tern_session_add_message(s, BAD_UTF8, "hi"), TERN_ERR_INVALID_UTF8);
    CHECK_STATUS(tern_session_add_message(s, "user", BAD_UTF8), TERN_ERR_INVALID_UTF8);
    CHECK_ERROR_MENTIONS("`text` is not valid UTF-8 (invalid byte at offset 3)");
    CHECK_STATUS(tern_session_feed_text(s, NULL, NULL), TERN_ERR_NULL_POINTER);
    CHECK_STATUS(tern_session_feed_text(s, "\xff", NULL), TERN_ERR_INVALID_UTF8);
    CHECK_STATUS(tern_session_chat(s, NULL, NULL, NULL, NULL), TERN_ERR_NULL_POINTER);
    CHECK_STATUS(tern_session_chat(s, "\xed\xa0\x80", NULL, NULL, NULL), TERN_ERR_INVALID_UTF8);
    CHECK_STATUS(tern_session_generate(NULL, NULL, NULL, NULL), TERN_ERR_NULL_POINTER);
    CHECK_STATUS(tern_session_cancel(NULL), TERN_ERR_NULL_POINTER);
    CHECK_STATUS(tern_session_reset(NULL), TERN_ERR_NULL_POINTER);
    CHECK_STATUS(tern_session_save(s, NULL), TERN_ERR_NULL_POINTER);
    CHECK_STATUS(tern_session_save(s, BAD_UTF8), TERN_ERR_INVALID_UTF8);
    TernSession *r = (TernSession *)0x10;
    CHECK_STATUS(tern_session_restore(m, NULL, &r), TERN_ERR_NULL_POINTER);
    CHECK(r == NULL);
    CHECK_STATUS(tern_session_restore(m, "x", NULL), TERN_ERR_NULL_POINTER);
    CHECK_STATUS(tern_session_stats(s, NULL), TERN_ERR_NULL_POINTER);
    TernStats zero = {0};
    CHECK_STATUS(tern_session_stats(s, &zero), TERN_ERR_INVALID_ARGUMENT);
    CHECK_ERROR_MENTIONS("sizeof(TernStats)");
    /* Nothing failed above left the session unusable: nothing was fed. */
    TernStats st = stats_of(s);
    CHECK(st.size == sizeof st && st.tokens == 0);

    /* An app built against an older, shorter TernStats gets only the fields it knows. */
    struct {
        TernStats stats;
        unsigned char canary[8];
    } old;
    memset(&old, 0xAB, sizeof old);
    size_t old_size = offsetof(TernStats, prompt_seconds);
    old.stats.size = old_size;
    CHECK_OK(tern_session_stats(s, &old.stats));
    CHECK(old.stats.size == old_size);
    CHECK(old.stats.tokens == 0 && old.stats.cache_capacity == 4 + 60);
    CHECK(((unsigned char *)&old.stats)[old_size] == 0xAB); /* nothing written past it */

    /* A session runs one call at a time: calls made from its own callback find it busy,
     * except stats, which never wait. */
    Reentry re = {.session = s};
    TernStopReason stop;
    CHECK_OK(tern_session_chat(s, "Count to ten.", reenter, &re, &stop));
    CHECK(stop == TERN_STOP_CALLBACK);
    CHECK(re.inner[0] == TERN_ERR_BUSY);
    CHECK(re.inner[1] == TERN_ERR_BUSY);
    CHECK(re.inner[2] == TERN_OK);

    /* Session files: a good one restores; a missing, foreign or unwritable one is refused. */
    char saved[256], notes[256];
    snprintf(saved, sizeof saved, "%s/s.tern", dir);
    snprintf(notes, sizeof notes, "%s/notes.txt", dir);
    CHECK_OK(tern_session_save(s, saved));
    CHECK_OK(tern_session_restore(m, saved, &r));
    TernStats restored = stats_of(r);
    CHECK(restored.tokens == stats_of(s).tokens && restored.tokens > 0);
    CHECK_OK(tern_session_free(r));
    CHECK_STATUS(tern_session_restore(m, notes, &r), TERN_ERR_IO);
    CHECK(r == NULL);
    CHECK(write_bytes(notes, "TERNSESS but not really", 23));
    CHECK_STATUS(tern_session_restore(m, notes, &r), TERN_ERR_SESSION_FILE);
    CHECK_STATUS(tern_session_restore(m, garbage, &r), TERN_ERR_SESSION_FILE);
    CHECK_ERROR_MENTIONS("not a Tern session file");
    CHECK_STATUS(tern_session_save(s, dir), TERN_ERR_IO); /* a directory */

    /* Closed handles: any use after free is an error, a double free too. */
    CHECK_OK(tern_session_free(s));
    CHECK_STATUS(tern_session_free(s), TERN_ERR_INVALID_HANDLE);
    CHECK_ERROR_MENTIONS("closed session handle");
    CHECK_STATUS(tern_session_chat(s, "hi", NULL, NULL, NULL), TERN_ERR_INVALID_HANDLE);
    CHECK_STATUS(tern_session_generate(s, NULL, NULL, NULL), TERN_ERR_INVALID_HANDLE);
    CHECK_STATUS(tern_session_add_message(s, "user", "hi"), TERN_ERR_INVALID_HANDLE);
    CHECK_STATUS(tern_session_feed_text(s, "hi", NULL), TERN_ERR_INVALID_HANDLE);
    CHECK_STATUS(tern_session_reset(s), TERN_ERR_INVALID_HANDLE);
    CHECK_STATUS(tern_session_save(s, "/tmp/never.tern"), TERN_ERR_INVALID_HANDLE);
    CHECK_STATUS(tern_session_stats(s, &st), TERN_ERR_INVALID_HANDLE);
    CHECK_STATUS(tern_session_cancel(s), TERN_ERR_INVALID_HANDLE);
    CHECK_OK(tern_session_free(NULL));

    /* A session outlives the model handle it was made from. */
    TernSession *s2 = NULL;
    CHECK_OK(tern_session_new(m, NULL, &s2));
    CHECK_OK(tern_model_free(m));
    CHECK_STATUS(tern_model_free(m), TERN_ERR_INVALID_HANDLE);
    CHECK_STATUS(tern_session_new(m, NULL, &r), TERN_ERR_INVALID_HANDLE);
    CHECK_STATUS(tern_session_restore(m, "x", &r), TERN_ERR_INVALID_HANDLE);
    CHECK_OK(tern_session_add_message(s2, "user", "Hi"));
    CHECK_OK(tern_session_free(s2));
    CHECK_OK(tern_model_free(NULL));

    unlink(saved);
    unlink(notes);
    unlink(garbage);
    unlink(truncated);
    unlink(empty);
    rmdir(dir);
    return finish("test_errors");
}
